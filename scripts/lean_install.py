"""The lean install from the built wheel: the README's conversion commands in a fresh
environment that holds pinzi's default dependencies and nothing else (no PyTorch), offline.

    .venv/bin/python scripts/lean_install.py

Builds the wheel from a copy of the working tree (no build isolation, so no network), makes a
virtual environment without the system's site-packages, links into it, file by file, the
installed distributions that the default dependencies require (read from their metadata, as
tests/test_install.py does), installs the wheel with ``--no-deps --no-index``, checks with
``pip check`` that the wheel's requirements are met, then runs the commands. Prints the time of
each step and the size of the environment; exits 1 when a check fails. It takes tens of seconds
(the wheel holds the 26 MB shipped model), hence a script and not a test of the suite.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib.metadata import distribution
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_install import closure  # noqa: E402  (the test's reading of pyproject.toml)

COPIED = ("pyproject.toml", "README.md", "LICENSE", "src")


@contextmanager
def timed(what: str):
    start = time.perf_counter()
    yield
    print(f"{what}: {time.perf_counter() - start:.1f} s", file=sys.stderr)


def run(*args: str | Path, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=600)


def build_wheel(work: Path) -> Path:
    """The wheel of the working tree, built from a copy (the build leaves files behind)."""
    source = work / "source"
    source.mkdir()
    for name in COPIED:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, source / name)
    done = run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
               "-w", work / "dist", source, cwd=work)
    if done.returncode:
        sys.exit(f"building the wheel failed:\n{done.stderr}")
    return next((work / "dist").glob("pinzi-*.whl"))


def link_distributions(names: frozenset[str], site: Path) -> int:
    """Link every file of the distributions ``names`` into ``site``; their size in bytes."""
    size = 0
    for name in sorted(names):
        dist = distribution(name)
        for file in dist.files or ():
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue  # console scripts live in bin/; byte code is made anew
            target, link = Path(dist.locate_file(file)), site / file
            if not target.is_file() or link.exists():
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
            size += target.stat().st_size
    return size


def check(name: str, ok: bool, done: subprocess.CompletedProcess) -> bool:
    print(f"{'ok  ' if ok else 'FAIL'} {name}", file=sys.stderr)
    if not ok:
        print(f"  status {done.returncode}\n  stdout: {done.stdout!r}\n  stderr: {done.stderr!r}",
              file=sys.stderr)
    return ok


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="pinzi-lean-") as tmp:
        work = Path(tmp)
        with timed("build the wheel"):
            wheel = build_wheel(work)
        with timed("make the environment and link the default dependencies"):
            env = work / "venv"
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", env], check=True)
            python = env / "bin" / "python"
            site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                            cwd=work).stdout.strip())
            names = closure()
            size = link_distributions(names, site)
        with timed("pip install --no-deps --no-index the wheel"):
            done = run(sys.executable, "-m", "pip", "--python", python, "install", "-q",
                       "--no-deps", "--no-index", wheel, cwd=work)
            if done.returncode:
                sys.exit(f"installing the wheel failed:\n{done.stderr}")
        pinzi_size = sum(p.stat().st_size for p in (site / "pinzi").rglob("*") if p.is_file())
        print(f"environment: {len(names)} distributions, {size / 2**20:.0f} MiB, and pinzi "
              f"{pinzi_size / 2**20:.0f} MiB", file=sys.stderr)

        gold = work / "gold.txt"
        gold.write_text("我爱北京天安门。今天天气很好\n", encoding="utf-8")
        pinzi = env / "bin" / "pinzi"
        results = []
        with timed("the commands"):
            done = run(sys.executable, "-m", "pip", "--python", python, "check", cwd=work)
            results.append(check("pip check", done.returncode == 0, done))
            done = run(python, "-c", "import torch", cwd=work)
            results.append(check("no torch", done.returncode == 1, done))
            done = run(pinzi, "--version", cwd=work)
            results.append(check("pinzi --version", done.stdout.startswith("pinzi "), done))
            done = run(pinzi, "convert", "woaibeijingtiananmen", cwd=work)
            results.append(check("pinzi convert", done.stdout == "我爱北京天安门\n", done))
            done = run(pinzi, "convert", "xi'an", "--nbest", "3", cwd=work)
            results.append(check("pinzi convert --nbest 3",
                                 done.stdout.split("\t")[0] == "西安", done))
            done = run(pinzi, "convert", cwd=work, stdin="nihao\nwo ai bei jing\n")
            results.append(check("pinzi convert < lines", done.stdout == "你好\n我爱北京\n", done))
            done = run(pinzi, "eval", gold, "--form", "all", cwd=work)
            results.append(check("pinzi eval", done.returncode == 0 and "100.00%" in done.stdout,
                                 done))
            for command, extra in ((["pretrain", "--data", "d", "--out", "o"], "train"),
                                   (["serve"], "serve")):
                done = run(pinzi, *command, cwd=work)
                results.append(check(f"pinzi {command[0]} names pinzi[{extra}]",
                                     done.returncode == 2
                                     and f'pip install "pinzi[{extra}]"' in done.stderr, done))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
