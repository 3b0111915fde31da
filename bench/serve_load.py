"""Load benchmark of `pinzi serve`: many input-method clients typing at once on loopback.

Starts ``pinzi serve --model M --workers W`` on a free loopback port, then runs ``--clients``
concurrent clients (default 50) for ``--seconds`` (default 10, at most 120), with aiohttp (the
``bench`` extra). Each client types sentences keystroke by keystroke: every prefix of a
sentence's pinyin is one ``POST /v1/candidates`` with the previous sentence as context, sent
as soon as the last answer came back, or ``--typing-ms`` after it (a person's pause between
keys: 150 ms is 400 keys a minute, a fast typist). Prints requests/s, latency percentiles and
the error count, then stops the server (SIGTERM).

    .venv/bin/python bench/serve_load.py                          # the shipped model, flat out
    .venv/bin/python bench/serve_load.py --typing-ms 150          # 50 people typing fast
    .venv/bin/python bench/serve_load.py --typing-ms 150 --workers 2   # one process per core
    .venv/bin/python bench/serve_load.py --typing-ms 150 --p99-target 100   # exit 1 if missed
    .venv/bin/python bench/serve_load.py --model runs/x/model --backend torch --clients 8
    .venv/bin/python bench/serve_load.py --in-process 2000       # the conversions alone
    .venv/bin/python bench/serve_load.py --clients 0 --worst-case 20 --hold 2000   # hostile

``--worst-case N`` adds N clients sending the costliest keystroke the limits allow, flat out;
``--hold N`` adds N connections that send part of a request and never finish it (reopened as
the server closes them). While they run, /healthz is probed on a fresh connection every
100 ms, as a load balancer would: its latency and failures are what they must not spoil.

Client and server share the machine's cores, so the figures are a floor; compare backends and
settings within one machine. ``--out FILE`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import aiohttp
from pypinyin import lazy_pinyin

MAX_SECONDS = 120
SENTENCES = [
    "我爱北京天安门", "今天天气很好", "我们去公园玩吧", "请问洗手间在哪里", "明天早上八点开会",
    "这个周末你有空吗", "我想订一张去上海的火车票", "谢谢你的帮助", "他在银行工作",
    "晚上一起吃饭吧", "经济发展很快", "祝你生日快乐", "这本书很有意思", "火车站怎么走",
    "孩子们在操场上跑步", "我喜欢吃苹果",
]


# The costliest keystroke within the server's limits: 256 letters, every fuzzy pair, k 20,
# 256 characters of context (195 ms of conversion when it ran on the event loop).
WORST_CASE = {"pinyin": "n" * 256, "k": 20, "fuzzy": ["all"], "context": "我" * 256}
PARTIAL_REQUEST = b"POST /v1/candidates HTTP/1.1\r\nHost: pinzi\r\nContent-Length: 99\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str | None, backend: str, workers: int, port: int) -> subprocess.Popen:
    # --log-level warning: no access log, which would cost the server CPU
    command = [sys.executable, "-m", "pinzi", "serve", "--port", str(port), "--backend", backend,
               "--workers", str(workers), "--log-level", "warning"]
    if model:
        command += ["--model", model]
    return subprocess.Popen(command)


def wait_ready(url: str, server: subprocess.Popen, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                return json.load(answer)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.25)
    raise SystemExit(f"the server did not answer /healthz within {timeout:.0f} s")


def keystrokes(rng: random.Random):
    """Endless (pinyin buffer, context) pairs: sentences typed one key at a time."""
    typed = [("".join(lazy_pinyin(s)), s) for s in SENTENCES]
    context = ""
    while True:
        pinyin, hanzi = rng.choice(typed)
        for end in range(1, len(pinyin) + 1):
            yield pinyin[:end], context
        context = hanzi


async def client(http: aiohttp.ClientSession, url: str, stop: float, seed: int, typing_s: float,
                 latencies: list[float], errors: list[str]) -> None:
    rng = random.Random(seed)
    for pinyin, context in keystrokes(rng):
        if typing_s:  # jittered, so that the clients do not type in lockstep
            await asyncio.sleep(typing_s * rng.uniform(0.5, 1.5))
        if time.monotonic() >= stop:
            return
        started = time.perf_counter()
        try:
            body = {"pinyin": pinyin, "context": context, "k": 5}
            async with http.post(url, json=body) as answer:
                await answer.read()
                if answer.status == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors.append(f"HTTP {answer.status}")
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            errors.append(type(error).__name__)


async def load(url: str, clients: int, seconds: float, typing_s: float = 0.0) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    # aiohttp rather than httpx: the load generator shares the server's cores, and httpx spent
    # 4.2 ms of CPU per request (more than the server), aiohttp 0.3 ms.
    connector = aiohttp.TCPConnector(limit=clients)
    cpu = time.process_time()
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as http:
        started = time.monotonic()
        stop = started + seconds
        await asyncio.gather(*(client(http, f"{url}/v1/candidates", stop, seed, typing_s,
                                      latencies, errors) for seed in range(clients)))
        elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu
    return {"clients": clients, "typing_ms": round(1000 * typing_s),
            "seconds": round(elapsed, 2), "requests": len(latencies),
            "requests_per_s": round(len(latencies) / elapsed, 1), **percentiles(latencies),
            "errors": len(errors), "error_kinds": sorted(set(errors)),
            # the load generator's own CPU: it shares the server's cores
            "client_cpu_ms_per_request": round(1000 * cpu / max(1, len(latencies)), 2)}


def percentiles(latencies: list[float], prefix: str = "") -> dict:
    """p50, p90, p99 and max of ``latencies`` (seconds) in ms, named ``{prefix}p50_ms``..."""
    ranked = sorted(latencies) or [0.0]

    def at(p: float) -> float:
        return round(1000 * ranked[min(len(ranked) - 1, int(p * len(ranked)))], 1)

    return {f"{prefix}{name}_ms": at(p)
            for name, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))}


async def hostile(url: str, seconds: float, worst_case: int, hold: int) -> dict:
    """``worst_case`` clients of WORST_CASE keystrokes and ``hold`` connections that never
    finish a request, while /healthz is probed; what each got."""
    stop = time.monotonic() + seconds
    host, port = url.removeprefix("http://").split(":")
    answers: Counter[str] = Counter()
    probes: list[float] = []

    async def keystrokes(http: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop:
            try:
                async with http.post(f"{url}/v1/candidates", json=WORST_CASE) as answer:
                    await answer.read()
                    answers[f"worst case: HTTP {answer.status}"] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                answers[f"worst case: {type(error).__name__}"] += 1

    async def holder() -> None:
        while time.monotonic() < stop:
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
            except OSError as error:
                answers[f"held: {type(error).__name__}"] += 1
                await asyncio.sleep(0.1)
                continue
            writer.write(PARTIAL_REQUEST)
            try:  # what the server answers before it closes the connection
                status = (await asyncio.wait_for(reader.read(), stop - time.monotonic()))[9:12]
                answers[f"held: closed by the server, {status.decode() or 'no answer'}"] += 1
            except (OSError, asyncio.TimeoutError):
                pass
            finally:
                writer.close()

    async def probe() -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:  # a fresh connection each time, as a load balancer's probe
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http, \
                        http.get(f"{url}/healthz") as answer:
                    await answer.read()
                    if answer.status == 200:
                        probes.append(time.perf_counter() - started)
                    else:
                        answers[f"healthz: HTTP {answer.status}"] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                answers[f"healthz: {type(error).__name__}"] += 1
            await asyncio.sleep(0.1)

    connector = aiohttp.TCPConnector(limit=max(1, worst_case))
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as http:
        await asyncio.gather(probe(), *(keystrokes(http) for _ in range(worst_case)),
                             *(holder() for _ in range(hold)))
    return {"worst_case_clients": worst_case, "held_connections": hold,
            "healthz_probes": len(probes), **percentiles(probes, "healthz_"),
            "answers": dict(sorted(answers.items()))}


def in_process(model: str | None, backend: str, keys: int) -> dict:
    """What the server's conversions cost without HTTP: ``keys`` keystrokes of the clients'
    stream through :meth:`Converter.candidates` in this process, one at a time, a page of 9
    as the web page asks (whole conversions and the starts of the buffer), and the same with
    whole conversions only (what the starts cost)."""
    from tune_decoding import RowCounter  # beside this file

    from pinzi import Converter

    converter = Converter.from_pretrained(model, backend=backend)
    converter.scorer = counter = RowCounter(converter.scorer)
    stream = keystrokes(random.Random(0))
    typed = [next(stream) for _ in range(keys)]
    report: dict = {"keystrokes": keys}
    for name, partial in (("", True), ("_whole_only", False)):
        for pinyin, context in typed[:20]:  # warm-up: lazy caches
            converter.candidates(pinyin, k=9, context=context, partial=partial)
        counter.rows = 0
        started = time.perf_counter()
        for pinyin, context in typed:
            converter.candidates(pinyin, k=9, context=context, partial=partial)
        elapsed = time.perf_counter() - started
        report[f"ms_per_keystroke{name}"] = round(1000 * elapsed / keys, 2)
    report["readings_per_keystroke"] = round(counter.rows / keys, 2)
    return report


def write_json(path: Path | None, report: dict) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder [default: the shipped model]")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0, help=f"at most {MAX_SECONDS}")
    parser.add_argument("--typing-ms", type=float, default=0.0,
                        help="mean pause between a client's keystrokes (0: none)")
    parser.add_argument("--worst-case", type=int, default=0, metavar="N",
                        help="also N clients sending the costliest keystroke, flat out")
    parser.add_argument("--hold", type=int, default=0, metavar="N",
                        help="also N connections that never finish a request")
    parser.add_argument("--in-process", type=int, default=0, metavar="KEYS",
                        help="instead, time KEYS keystrokes of the same stream in this process, "
                             "without a server: the conversions' own cost")
    parser.add_argument("--p99-target", type=float, metavar="MS",
                        help="exit with status 1 when p99 is over MS or any request failed")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    seconds = min(max(args.seconds, 1.0), MAX_SECONDS)
    if args.in_process > 0:
        report = in_process(args.model, args.backend, args.in_process)
        print(f"in process: {report['ms_per_keystroke']} ms per keystroke (a page of 9), "
              f"{report['ms_per_keystroke_whole_only']} with whole conversions only; "
              f"{report['readings_per_keystroke']} readings decoded per keystroke")
        write_json(args.out, report)
        return

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(args.model, args.backend, max(1, args.workers), port)
    async def run_all() -> dict:
        typists = load(url, args.clients, seconds, max(0.0, args.typing_ms) / 1000)
        if not (args.worst_case or args.hold):
            return await typists
        figures = await asyncio.gather(typists, hostile(url, seconds, args.worst_case, args.hold))
        return {**figures[0], **figures[1]}

    try:
        health = wait_ready(url, server)
        report = {"model": args.model or "shipped", "backend": health["backend"],
                  "workers": max(1, args.workers), **asyncio.run(run_all())}
    finally:
        server.terminate()  # SIGTERM: uvicorn's graceful shutdown
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"{report['backend']}, {report['workers']} worker(s): {report['clients']} clients "
          f"typing every {report['typing_ms']} ms, {report['seconds']} s: "
          f"{report['requests_per_s']} requests/s, p50 {report['p50_ms']} ms, "
          f"p99 {report['p99_ms']} ms, errors {report['errors']}; the clients' CPU "
          f"{report['client_cpu_ms_per_request']} ms a request")
    if "healthz_probes" in report:
        print(f"under {args.worst_case} worst-case clients and {args.hold} held connections: "
              f"/healthz p50 {report['healthz_p50_ms']} ms, p99 {report['healthz_p99_ms']} ms, "
              f"max {report['healthz_max_ms']} ms; {report['answers']}")
    write_json(args.out, report)
    if args.p99_target is not None and (report["p99_ms"] > args.p99_target or report["errors"]):
        sys.exit(f"missed the target: p99 {report['p99_ms']} ms (target {args.p99_target:g}), "
                 f"{report['errors']} errors")


if __name__ == "__main__":
    main()
