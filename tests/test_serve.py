"""pinzi.serve through FastAPI's TestClient, pinzi.export (ONNX, int8), and `pinzi serve`/`export`.

Routes, limits (413/422 with their message), malformed bodies, the API key, CORS; the ONNX
graph converts exactly as PyTorch does; `pinzi serve` answers and stops cleanly on SIGTERM.
Hostile clients: costly keystrokes never hold up the event loop (503 past the queue), and
connections that never finish a request are closed (real sockets against uvicorn).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from conftest import SENTENCES
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pypinyin import lazy_pinyin
from typer.testing import CliRunner

from pinzi.cli import app as cli
from pinzi.converter import Converter
from pinzi.errors import ModelLoadError, PinziError, SettingsError
from pinzi.export import export_onnx
from pinzi.guard import GuardedHttp
from pinzi.model import PinziConfig, PinziForPinyin
from pinzi.serve import (
    WORKER_CONFIG,
    Limits,
    ServeConfig,
    build_app,
    create_app,
    worker_app,
)
from pinzi.text import to_traditional
from pinzi.tokenizer import PinziTokenizer

PINYIN = ["".join(lazy_pinyin(s)) for s in SENTENCES]


@pytest.fixture(scope="module")
def converter(tiny_model):
    return Converter.from_pretrained(tiny_model, backend="torch")


@pytest.fixture(scope="module")
def client(converter):
    with TestClient(create_app(converter), raise_server_exceptions=False) as client:
        yield client  # inside `with`: the lifespan (warm-up) runs as under uvicorn


# ---- routes -------------------------------------------------------------------------------------
def test_candidates_ranks_the_trained_sentence(client):
    answer = client.post("/v1/candidates", json={"pinyin": "woaibeijing", "k": 3})
    assert answer.status_code == 200
    body = answer.json()
    assert body["pinyin"] == "woaibeijing"
    assert body["candidates"][0] == {**body["candidates"][0], "hanzi": "我爱北京",
                                     "consumed": len("woaibeijing")}
    assert body["offset"] == 0 and body["more"] is True
    # Then the words the buffer starts with: the most it covers first, each length best first.
    rest = [(-c["consumed"], -c["score"]) for c in body["candidates"][1:]]
    assert len(rest) == 2 and rest == sorted(rest)


def test_candidates_options_reach_the_converter(client):
    def best(**body):
        return client.post("/v1/candidates", json=body).json()["candidates"][0]

    assert best(pinyin="zongguo")["hanzi"] != "中国"
    assert best(pinyin="zongguo", fuzzy=["z=zh"])["hanzi"] == "中国"
    assert best(pinyin="zongguo", fuzzy=["all"])["hanzi"] == "中国"
    assert best(pinyin="nihao,", punct=True)["hanzi"] == "你好，"
    assert best(pinyin="yinhang", context="他在")["score"] != best(pinyin="yinhang")["score"]


def test_convert_batch(client):
    answer = client.post("/v1/convert", json={"pinyin": ["woaibeijingtiananmen", "nihao", ""]})
    assert answer.status_code == 200
    assert answer.json() == {"hanzi": ["我爱北京天安门", "你好", ""]}


def test_health_page_and_docs(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["backend"] == "torch"
    assert health["classifier"] is False and health["limits"]["max_chars"] == 256
    page = client.get("/")
    assert page.status_code == 200 and 'id="candidates"' in page.text
    assert "fetch(" in client.get("/static/app.js").text
    assert client.get("/static/style.css").status_code == 200
    for docs in ("/docs", "/redoc"):
        answer = client.get(docs)
        assert answer.status_code == 200 and "cdn" not in answer.text.lower()  # works offline
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert schema["CandidatesRequest"]["properties"]["pinyin"]["maxLength"] == 256
    assert "/v1/classify" not in client.get("/openapi.json").json()["paths"]


class FakeClassifier:
    def predict(self, texts: list[str]) -> list[SimpleNamespace]:
        return [SimpleNamespace(label="long" if len(t) > 4 else "short", prob=0.75)
                for t in texts]


def test_control_characters_never_come_back(client):
    def best(**body):
        return client.post("/v1/candidates", json=body).json()["candidates"][0]["hanzi"]

    assert best(pinyin="\u0000nihao\u0000") == "你好"
    assert best(pinyin="ni\u200bhao\u202e") == "你好"  # zero-width space, bidi override
    assert best(pinyin="yinhang", context="他\u0000在") == best(pinyin="yinhang", context="他在")
    answer = client.post("/v1/convert", json={"pinyin": ["\u0007ni\u0000hao\u001b"]})
    assert answer.json() == {"hanzi": ["你好"]}


def test_classify_only_with_a_classifier(client, converter):
    without = client.post("/v1/classify", json={"texts": ["你好"]})
    assert without.status_code == 404 and "no classifier is loaded" in without.json()["detail"]
    with TestClient(create_app(converter, classifier=FakeClassifier())) as with_classifier:
        answer = with_classifier.post("/v1/classify", json={"texts": ["你好", "今天天气很好"]})
        assert answer.json() == {"results": [{"label": "short", "prob": 0.75},
                                             {"label": "long", "prob": 0.75}]}
        assert with_classifier.get("/healthz").json()["classifier"] is True
        too_many = with_classifier.post("/v1/classify", json={"texts": ["a"] * 257})
        assert too_many.status_code == 422 and "texts" in too_many.json()["detail"]


# ---- limits and bad requests --------------------------------------------------------------------
def test_body_over_the_limit_is_413(client):
    big = {"pinyin": ["a"] * 20000}  # ~100 KB
    answer = client.post("/v1/convert", json=big)
    assert answer.status_code == 413
    assert "too large" in answer.json()["detail"] and "65536" in answer.json()["detail"]

    def chunks():  # streamed without Content-Length: counted as it arrives
        for _ in range(100):
            yield b" " * 1024

    answer = client.post("/v1/convert", content=chunks(),
                         headers={"content-type": "application/json"})
    assert answer.status_code == 413 and "too large" in answer.json()["detail"]


@pytest.mark.parametrize(("path", "body", "field", "words"), [
    ("/v1/candidates", {"pinyin": "a" * 257}, "pinyin", "at most 256 characters"),
    ("/v1/candidates", {"pinyin": "a", "context": "中" * 300}, "context", "at most 256"),
    ("/v1/candidates", {"pinyin": "a", "k": 51}, "k", "less than or equal to 50"),
    ("/v1/candidates", {"pinyin": "a", "offset": -1}, "offset", "greater than or equal to 0"),
    ("/v1/predict", {"context": "我", "k": 0}, "k", "greater than or equal to 1"),
    ("/v1/learn", {"pinyin": "a"}, "hanzi", "Field required"),
    ("/v1/candidates", {"pinyin": "a", "k": "many"}, "k", "valid integer"),
    ("/v1/candidates", {"pinyin": 5}, "pinyin", "valid string"),
    ("/v1/candidates", {"pinyin": "a", "fuzzy": ["x=y"]}, "fuzzy.0", "'z=zh'"),
    ("/v1/candidates", {"pinyin": "a", "speed": 1}, "speed", "Extra inputs"),
    ("/v1/candidates", {}, "pinyin", "Field required"),
    ("/v1/convert", {"pinyin": ["a"] * 257}, "pinyin", "at most 256 items"),
    ("/v1/convert", {"pinyin": ["a", "b" * 300]}, "pinyin.1", "at most 256 characters"),
    ("/v1/convert", {"pinyin": "nihao"}, "pinyin", "valid list"),
])
def test_bad_fields_are_422_naming_the_field(client, path, body, field, words):
    answer = client.post(path, json=body)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert detail.startswith(f"{field}: ") and words in detail


@pytest.mark.parametrize(("content", "words"), [
    (b'{"pinyin": ', "malformed JSON"),
    (b"\xff\xfe\x00", "not UTF-8"),
    (b"[1, 2]", "expected a JSON object"),
    (b"null", "expected a JSON object"),
    (b'{"pinyin": "\\ud800"}', "unicode"),  # a lone surrogate cannot be answered in UTF-8
    (b'{"pinyin": "a", "fuzzy": ' + b"[" * 1000 + b"]" * 1000 + b"}", "nested too deeply"),
    (b'{"pinyin": "a", "k": ' + b"9" * 5000 + b"}", "4300 digits"),
])
def test_malformed_bodies_are_422(client, content, words):
    answer = client.post("/v1/candidates", content=content,
                         headers={"content-type": "application/json"})
    assert answer.status_code == 422 and words in answer.json()["detail"]


def test_converter_ceiling_is_422_not_500(converter):
    lenient = create_app(converter, limits=Limits(max_chars=5000))
    answer = TestClient(lenient).post("/v1/candidates", json={"pinyin": "a" * 4097})
    assert answer.status_code == 422 and "exceeds 4096" in answer.json()["detail"]


@settings(max_examples=25, deadline=None)
@given(pinyin=st.text(max_size=60), context=st.text(max_size=10), k=st.integers(-3, 60),
       offset=st.integers(-2, 1100), raw=st.binary(max_size=40))
def test_nothing_a_client_sends_is_a_500(client, pinyin, context, k, offset, raw):
    answer = client.post("/v1/candidates", json={"pinyin": pinyin, "context": context, "k": k,
                                                 "offset": offset})
    assert answer.status_code == (200 if 1 <= k <= 50 and 0 <= offset <= 1000 else 422)
    answer = client.post("/v1/predict", json={"context": context + pinyin, "k": k})
    assert answer.status_code == (200 if 1 <= k <= 50 else 422)
    answer = client.post("/v1/learn", json={"pinyin": pinyin, "hanzi": context})
    assert answer.status_code == 404  # this server learns nothing: it has no --user-dir
    answer = client.post("/v1/convert", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 422


# ---- API key and CORS ---------------------------------------------------------------------------
def test_api_key_guards_the_api_only(converter):
    guarded = TestClient(create_app(converter, api_key="s3cret"))
    body = {"pinyin": "nihao"}
    answer = guarded.post("/v1/candidates", json=body)
    assert answer.status_code == 401 and "API key" in answer.json()["detail"]
    assert answer.headers["www-authenticate"] == "Bearer"
    wrong = guarded.post("/v1/candidates", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = guarded.post("/v1/candidates", json=body, headers={"Authorization": "Bearer s3cret"})
    assert right.status_code == 200
    assert guarded.get("/healthz").status_code == 200 and guarded.get("/").status_code == 200


@pytest.mark.parametrize("key", ["clé", "two words", "tab\tkey", "\u200bkey"])
def test_an_api_key_no_client_can_send_is_refused(converter, key):
    with pytest.raises(SettingsError, match="printable ASCII"):
        create_app(converter, api_key=key)


def test_cors_is_off_unless_configured(client, converter):
    origin = {"Origin": "https://ime.example"}
    preflight = {**origin, "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.get("/healthz", headers=origin).headers
    assert "access-control-allow-origin" not in client.options("/v1/candidates",
                                                               headers=preflight).headers
    open_ = TestClient(create_app(converter, cors_origins=["https://ime.example"]))
    answer = open_.options("/v1/candidates", headers=preflight)
    assert answer.headers["access-control-allow-origin"] == "https://ime.example"
    other = open_.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


# ---- ONNX ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_models(tiny_model, tmp_path_factory):
    float_dir, int8_dir = tmp_path_factory.mktemp("onnx"), tmp_path_factory.mktemp("int8")
    export_onnx(tiny_model, float_dir)
    export_onnx(tiny_model, int8_dir, quantize="int8")
    return float_dir, int8_dir


def test_onnx_converts_exactly_as_torch(converter, onnx_models):
    onnx = Converter.from_pretrained(onnx_models[0])  # auto: the folder has a model.onnx
    assert onnx.scorer.name == "onnx"
    for pinyin in [*PINYIN, "woaibj", "ni3hao3 shijie!", ""]:
        expected = converter.candidates(pinyin, k=3)
        got = onnx.candidates(pinyin, k=3)
        assert [(c.hanzi, c.consumed) for c in got] == \
            [(c.hanzi, c.consumed) for c in expected]
        assert [c.score for c in got] == pytest.approx([c.score for c in expected], abs=1e-4)


def test_int8_runs_and_stays_close(onnx_models):
    float_size = (onnx_models[0] / "model.onnx").stat().st_size
    assert (onnx_models[1] / "model.onnx").stat().st_size < float_size / 2
    int8 = Converter.from_pretrained(onnx_models[1])
    right = sum(int8.convert(p) == s for p, s in zip(PINYIN, SENTENCES, strict=True))
    assert right >= len(SENTENCES) - 2


def test_onnx_backend_serves(onnx_models):
    onnx = Converter.from_pretrained(onnx_models[0], backend="onnx")
    onnx_client = TestClient(create_app(onnx))
    assert onnx_client.get("/healthz").json()["backend"] == "onnx"
    answer = onnx_client.post("/v1/candidates", json={"pinyin": "nihao"})
    assert answer.json()["candidates"][0]["hanzi"] == "你好"


def test_lstm_encoder_exports_too(tmp_path):
    tokenizer = PinziTokenizer(list("我爱北京天安门"))
    config = PinziConfig.from_preset("tiny", arch="lstm-attention", vocab_size=tokenizer.vocab_size,
                                     n_chars=tokenizer.n_chars, char_offset=tokenizer.char_offset)
    PinziForPinyin(config).save_pretrained(tmp_path / "lstm")
    tokenizer.save(tmp_path / "lstm")
    summary = export_onnx(tmp_path / "lstm", tmp_path / "lstm")  # beside the weights
    assert summary["max_abs_diff_float"] < 1e-4
    # the graph runs on any batch size
    assert Converter.from_pretrained(tmp_path / "lstm").convert("woaibeijing")


def test_backend_errors_are_clear(tiny_model, onnx_models, tmp_path):
    with pytest.raises(ModelLoadError, match="pinzi export"):
        Converter.from_pretrained(tiny_model, backend="onnx")
    with pytest.raises(SettingsError, match="adapter needs the torch backend"):
        Converter.from_pretrained(onnx_models[0], backend="onnx", adapter=tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(onnx_models[0], broken)
    (broken / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelLoadError, match="cannot be loaded"):
        Converter.from_pretrained(broken)
    with pytest.raises(SettingsError, match="unknown backend"):
        Converter.from_pretrained(tiny_model, backend="tensorrt")


# ---- the commands -------------------------------------------------------------------------------
def test_export_command(tiny_model, tmp_path):
    result = CliRunner().invoke(cli, ["export", "--model", str(tiny_model), "--out",
                                      str(tmp_path), "--quantize", "int8"])
    assert result.exit_code == 0, result.output
    assert {"model.onnx", "config.json", "vocab.json"} <= {p.name for p in tmp_path.iterdir()}
    result = CliRunner().invoke(cli, ["convert", "woaibeijing", "--model", str(tmp_path)])
    assert result.stdout == "我爱北京\n"  # `pinzi convert` runs the onnx-only folder too
    result = CliRunner().invoke(cli, ["export", "--out", str(tmp_path), "--format", "tflite"])
    assert result.exit_code == 2 and "onnx" in result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a fresh interpreter imports torch: seconds
@pytest.mark.parametrize("workers", [1, 2])
def test_serve_command_answers_and_stops_on_sigterm(tiny_model, workers):
    port = free_port()
    env = {**os.environ, "PINZI_API_KEY": "k"}
    server = subprocess.Popen([sys.executable, "-m", "pinzi", "serve", "--model", str(tiny_model),
                               "--port", str(port), "--workers", str(workers)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120  # importing torch on a busy machine can be slow
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        answer = httpx.post(f"{url}/v1/candidates", json={"pinyin": "nihao"},
                            headers={"Authorization": "Bearer k"})
        assert answer.json()["candidates"][0]["hanzi"] == "你好"
        assert httpx.post(f"{url}/v1/candidates", json={"pinyin": "nihao"}).status_code == 401
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=20)
    # uvicorn finishes the shutdown, then re-raises SIGTERM so the exit status tells why it ended
    assert server.returncode in (0, -signal.SIGTERM), output
    # every worker shuts down gracefully (the supervisor passes SIGTERM on)
    assert output.count("Application shutdown complete") == workers, output
    assert output.count("Finished server process") == workers, output


def test_worker_processes_build_the_app_from_the_environment(tiny_model, monkeypatch):
    config = ServeConfig(model=str(tiny_model), backend="torch", api_key="k")
    monkeypatch.setenv(WORKER_CONFIG, json.dumps(dataclasses.asdict(config)))
    with TestClient(worker_app()) as client:
        assert client.post("/v1/convert", json={"pinyin": ["nihao"]}).status_code == 401
        answer = client.post("/v1/convert", json={"pinyin": ["nihao"]},
                             headers={"Authorization": "Bearer k"})
        assert answer.json() == {"hanzi": ["你好"]}


def test_adapters_are_chosen_per_request(tiny_model, lora_run):
    adapter, _ = lora_run
    app = build_app(ServeConfig(model=str(tiny_model), backend="torch",
                                adapters={"domain": str(adapter)}))
    tuned = Converter.from_pretrained(tiny_model, adapter=adapter)
    base = Converter.from_pretrained(tiny_model, backend="torch")
    body = {"pinyin": "nihaoshijie", "k": 3}

    def expected(converter):
        return [{"hanzi": c.hanzi, "score": round(c.score, 4), "consumed": c.consumed}
                for c in converter.candidates("nihaoshijie", k=3)]

    with TestClient(app) as client:
        assert client.get("/healthz").json()["adapters"] == ["domain"]
        plain = client.post("/v1/candidates", json=body).json()["candidates"]
        chosen = client.post("/v1/candidates", json={**body, "adapter": "domain"}).json()
        assert plain == expected(base) and chosen["candidates"] == expected(tuned)
        assert plain != chosen["candidates"]  # the adapter moved the scores
        converted = client.post("/v1/convert", json={"pinyin": ["nihaoshijie"],
                                                     "adapter": "domain"})
        assert converted.json() == {"hanzi": [tuned.convert("nihaoshijie")]}
        unknown = client.post("/v1/candidates", json={**body, "adapter": "medical"})
        assert unknown.status_code == 422
        assert "'medical'" in unknown.json()["detail"] and "domain" in unknown.json()["detail"]
        assert "domain" in client.get("/openapi.json").text  # /docs lists the adapters


def test_unknown_adapter_without_adapters_is_422(client):
    answer = client.post("/v1/candidates", json={"pinyin": "nihao", "adapter": "x"})
    assert answer.status_code == 422 and "--adapter" in answer.json()["detail"]


@pytest.mark.parametrize("given", ["name=", "a=x --adapter a=y", "x --adapter runs/x"])
def test_serve_adapter_option_is_checked(given, tiny_model):
    args = ["serve", "--model", str(tiny_model)]
    for each in given.split(" --adapter "):
        args += ["--adapter", each]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "NAME=DIR" in result.stderr


def test_serve_command_refuses_a_non_ascii_api_key(tiny_model, monkeypatch):
    monkeypatch.setenv("PINZI_API_KEY", "clé")
    result = CliRunner().invoke(cli, ["serve", "--model", str(tiny_model)])
    assert result.exit_code == 2 and "printable ASCII" in result.stderr


def test_serve_makes_room_for_its_connections(monkeypatch):
    import resource

    from pinzi.cli import _reserve_files

    raised = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", lambda _, limits: raised.append(limits))
    _reserve_files(800)  # fits already
    _reserve_files(2000)
    assert raised == [(2128, 4096)]
    with pytest.raises(PinziError, match="--max-connections 5000 needs 5128 open files"):
        _reserve_files(5000)


def test_serve_command_refuses_a_broken_model_before_starting_workers(tmp_path):
    result = CliRunner().invoke(cli, ["serve", "--model", str(tmp_path), "--workers", "2"])
    assert result.exit_code == 2 and "Traceback" not in result.output  # fail(): usage-style
    assert str(tmp_path) in result.stderr


class SlowScorer:
    """The tiny model's scorer, a third of a second a call: a big model, or a worst-case
    keystroke (256 letters, every fuzzy pair)."""

    def __init__(self, scorer):
        self.scorer, self.name = scorer, scorer.name

    def __call__(self, *arrays):
        time.sleep(0.3)
        return self.scorer(*arrays)


@pytest.fixture(scope="module")
def slow(converter):
    return Converter(SlowScorer(converter.scorer), converter.tokenizer,
                     decoding=converter.decoding, ngram=converter.ngram)


async def gathered(app, *calls):
    """Runs ``calls`` (each a coroutine function of an httpx client) at once against ``app``."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pinzi") as client:
        return await asyncio.gather(*(call(client) for call in calls))


def test_a_costly_keystroke_never_holds_up_the_event_loop(slow):
    done: list[str] = []

    async def keystroke(client):
        await client.post("/v1/candidates", json={"pinyin": "nihao"})
        done.append("keystroke")

    async def probe(client):
        await asyncio.sleep(0.05)  # while the keystroke is being converted
        await client.get("/healthz")
        done.append("healthz")

    asyncio.run(gathered(create_app(slow), keystroke, probe))
    assert done == ["healthz", "keystroke"]


def test_keystrokes_past_the_queue_get_503_at_once(slow):
    app = create_app(slow, limits=Limits(max_queue=1), conversion_threads=1)

    async def keystroke(client):
        return await client.post("/v1/candidates", json={"pinyin": "nihao"})

    answers = asyncio.run(gathered(app, *[keystroke] * 4))
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [200, 200, 503, 503]  # one running, one waiting, two refused
    busy = next(answer for answer in answers if answer.status_code == 503)
    assert "busy" in busy.json()["detail"] and busy.headers["retry-after"] == "1"
    # the queue drains: the next keystroke is served
    assert asyncio.run(gathered(app, keystroke))[0].status_code == 200


def test_a_long_batch_never_holds_up_keystrokes(slow):
    done: list[str] = []

    async def batch(client):
        await client.post("/v1/convert", json={"pinyin": ["nihao"] * 6})  # six slow conversions
        done.append("batch")

    async def keystroke(client):
        await asyncio.sleep(0.05)  # while the batch is being converted
        await client.post("/v1/candidates", json={"pinyin": "nihao"})
        done.append("keystroke")

    asyncio.run(gathered(create_app(slow, conversion_threads=1), batch, keystroke))
    assert done == ["keystroke", "batch"]


# ---- connections, over real sockets --------------------------------------------------------------
class QuickGuard(GuardedHttp):
    request_deadline_s = 0.5  # 10 s in `pinzi serve`; the test should not wait that long


class PatientGuard(GuardedHttp):
    request_deadline_s = 60  # connections stay until the test closes them


@contextmanager
def serving(app, http: type[GuardedHttp] = QuickGuard, **config):
    """``app`` under uvicorn with a GuardedHttp (as `pinzi serve` runs it) on a free loopback
    port, in a thread; yields (host, port)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=http,
                                           log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def read_until_closed(connection: socket.socket) -> bytes:
    """What the server sends until it closes the connection (a timeout fails the test)."""
    connection.settimeout(10)
    received = b""
    while chunk := connection.recv(4096):
        received += chunk
    return received


@pytest.mark.parametrize(("sent", "answer"), [
    (b"", b""),  # connects and says nothing: closed without a word, there is no request
    (b"POST /v1/candidates HTTP/1.1\r\nHost: pinzi\r\nContent-Len", b"HTTP/1.1 408 "),
    (b"POST /v1/candidates HTTP/1.1\r\nHost: pinzi\r\nContent-Type: application/json\r\n"
     b"Content-Length: 40\r\n\r\n{\"pinyin\": ", b"HTTP/1.1 408 "),  # the body never ends
])
def test_a_request_that_never_arrives_whole_is_closed(converter, sent, answer):
    with serving(create_app(converter)) as address, socket.create_connection(address) as slowpoke:
        slowpoke.sendall(sent)
        received = read_until_closed(slowpoke)
        assert received.startswith(answer)
        assert (b"did not arrive within 0.5 s" in received) == bool(answer)
        # the server is fine, and a keep-alive connection that asks in time is served twice
        with httpx.Client(base_url=f"http://{address[0]}:{address[1]}") as client:
            for _ in range(2):
                assert client.post("/v1/candidates", json={"pinyin": "nihao"}).status_code == 200


def test_connections_past_the_limit_are_refused_at_once(converter):
    with serving(create_app(converter), http=PatientGuard, limit_concurrency=3) as address:
        held = [socket.create_connection(address) for _ in range(3)]
        with socket.create_connection(address) as extra:
            answer = read_until_closed(extra)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"too many connections" in answer
        assert b"retry-after: 1" in answer
        for each in held:
            each.close()
        url = f"http://{address[0]}:{address[1]}/healthz"
        deadline = time.monotonic() + 10  # until the server has seen them go
        while httpx.get(url).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(url).status_code == 200


# ---- traditional characters ---------------------------------------------------------------------
def test_traditional_is_a_request_option(client):
    def candidates(**body):
        return client.post("/v1/candidates", json={"k": 3, **body}).json()["candidates"]

    simplified = candidates(pinyin="tiananmen", context="我爱北京")
    # the same conversions, written traditional; a traditional context is read as simplified
    traditional = candidates(pinyin="tiananmen", context="我愛北京", traditional=True)
    assert traditional[0]["hanzi"] == "天安門"
    assert traditional == [{**c, "hanzi": to_traditional(c["hanzi"])} for c in simplified]
    answer = client.post("/v1/convert", json={"pinyin": ["woaibeijing", "zongguo"],
                                              "fuzzy": ["z=zh"], "traditional": True})
    assert answer.json() == {"hanzi": ["我愛北京", "中國"]}
    assert client.post("/v1/convert", json={"pinyin": ["x"], "traditional": "maybe"}
                       ).status_code == 422


def test_serve_traditional_is_the_servers_default(tiny_model, monkeypatch):
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app))
    result = CliRunner().invoke(cli, ["serve", "-m", str(tiny_model), "--backend", "torch",
                                      "--traditional"])
    assert result.exit_code == 0, result.output
    with TestClient(served["app"]) as client:
        def convert(**options):
            body = {"pinyin": ["woaibeijing"], **options}
            return client.post("/v1/convert", json=body).json()["hanzi"]

        assert convert() == ["我愛北京"]
        assert convert(traditional=False) == ["我爱北京"]


# ---- pages, prediction, learning ----------------------------------------------------------------
def test_pages_of_candidates_follow_each_other(client):
    def page(**body) -> dict:
        return client.post("/v1/candidates", json={"pinyin": "woaibeijing", **body}).json()

    first, second, both = page(k=4), page(k=4, offset=4), page(k=8)
    assert first["candidates"] + second["candidates"] == both["candidates"]
    assert first["more"] is True and second["offset"] == 4
    assert page(k=50, offset=1000) == {"pinyin": "woaibeijing", "offset": 1000, "more": False,
                                       "candidates": []}


def test_predict_answers_next_words(client):
    answer = client.post("/v1/predict", json={"context": "我爱北京", "k": 3})
    assert answer.status_code == 200
    body = answer.json()
    assert body["context"] == "我爱北京" and len(body["predictions"]) == 3
    assert set(body["predictions"][0]) == {"hanzi", "score"}


def test_without_a_user_dir_nothing_is_learned(client):
    assert client.get("/healthz").json()["learning"] is False
    for answer in (client.post("/v1/learn", json={"pinyin": "yinhang", "hanzi": "音航"}),
                   client.delete("/v1/learn")):
        assert answer.status_code == 404 and "--user-dir" in answer.json()["detail"]


def test_what_the_server_learns_survives_a_restart_until_forgotten(tiny_model, tmp_path):
    def started() -> TestClient:
        converter = Converter.from_pretrained(tiny_model, backend="torch", user_dir=tmp_path)
        return TestClient(create_app(converter))

    def best(client: TestClient) -> str:
        return client.post("/v1/candidates", json={"pinyin": "yinhang"}).json()[
            "candidates"][0]["hanzi"]

    with started() as client:
        assert client.get("/healthz").json()["learning"] is True
        assert best(client) == "银行"
        answer = client.post("/v1/learn", json={"pinyin": "yin hang", "hanzi": "音航"})
        assert answer.status_code == 200 and answer.json() == {"learned": 1}
        refused = client.post("/v1/learn", json={"pinyin": "yinhang", "hanzi": "北京"})
        assert refused.status_code == 422 and "cannot learn" in refused.json()["detail"]
    with started() as client:
        assert best(client) == "音航"
        assert client.delete("/v1/learn").json() == {"forgotten": 1}
        assert best(client) == "银行"


def test_a_damaged_learning_file_stops_the_start_with_its_name(tiny_model, tmp_path):
    (tmp_path / "learned.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(PinziError, match="learned.json is damaged"):
        build_app(ServeConfig(model=str(tiny_model), backend="torch", user_dir=str(tmp_path)))


def test_a_full_disk_is_507_and_the_server_goes_on(tiny_model, tmp_path, monkeypatch):
    converter = Converter.from_pretrained(tiny_model, backend="torch", user_dir=tmp_path)

    def full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("pinzi.learning.write_atomic", full)
    with TestClient(create_app(converter)) as client:
        answer = client.post("/v1/learn", json={"pinyin": "yinhang", "hanzi": "音航"})
        assert answer.status_code == 507 and "No space left" in answer.json()["detail"]
        best = client.post("/v1/candidates", json={"pinyin": "yinhang"}).json()
        assert best["candidates"][0]["hanzi"] == "音航"  # learned in memory all the same


@pytest.fixture(scope="module")
def learning_client(tiny_model, tmp_path_factory):
    converter = Converter.from_pretrained(tiny_model, backend="torch",
                                          user_dir=tmp_path_factory.mktemp("learning"))
    with TestClient(create_app(converter), raise_server_exceptions=False) as client:
        yield client


@settings(max_examples=40, deadline=None)
@given(pinyin=st.text(max_size=40), hanzi=st.text(max_size=40))
def test_no_pick_a_client_sends_is_a_500(learning_client, pinyin, hanzi):
    answer = learning_client.post("/v1/learn", json={"pinyin": pinyin, "hanzi": hanzi})
    assert answer.status_code in (200, 422), answer.text
