"""The lean install: `pip install pinzi` is what conversion needs, the rest is in extras.

No network and no new environment: the packages of the default install (pyproject.toml's
``dependencies`` and what they require, read from the installed metadata) are the only ones a
subprocess may import, every other import failing as if it were not installed. The README's
conversion commands must then work, and the training and serving commands must name the
``pip install "pinzi[...]"`` that gives them what they need. (scripts/lean_install.py does the
same from a built wheel in a fresh virtual environment.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

from pinzi.cli import EXTRA_OF_MODULE

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
HEAVY = {"torch", "transformers", "accelerate", "peft", "datasets", "tensorboard", "matplotlib",
         "scikit-learn", "fastapi", "uvicorn", "keras", "onnx"}


def _name(requirement: Requirement) -> str:
    return re.sub(r"[-_.]+", "-", requirement.name).lower()


def requirements(extras: tuple[str, ...] = ()) -> list[Requirement]:
    """pinzi's own requirements with ``extras``, its self-references (pinzi[train]) expanded."""
    found = [Requirement(r) for r in PROJECT["dependencies"]]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in map(Requirement, PROJECT["optional-dependencies"][extra]):
            if _name(requirement) == "pinzi":
                pending += requirement.extras
            else:
                found.append(requirement)
    return found


@cache
def provided() -> dict[str, list[str]]:
    """Top-level module -> the installed distributions that provide it (slow: read once)."""
    return packages_distributions()


@cache
def closure(extras: tuple[str, ...] = ()) -> frozenset[str]:
    """The installed distributions that ``pip install "pinzi[extras]"`` brings, by name."""
    names: set[str] = set()
    pending = [(r, "") for r in requirements(extras)]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = _name(requirement)
        if name in names:
            continue
        names.add(name)
        try:
            needs = distribution(name).requires or []
        except PackageNotFoundError:
            continue  # an optional part this platform does not install
        for wanted in ("", *requirement.extras):
            pending += [(Requirement(r), wanted) for r in needs]
    return frozenset(names)


def not_installed(extras: tuple[str, ...] = ()) -> list[str]:
    """The top-level modules of this environment that ``pinzi[extras]`` does not bring."""
    allowed = closure(extras)
    return sorted({module for module, dists in provided().items()
                   if module != "pinzi"
                   and not any(_name(Requirement(d)) in allowed for d in dists)})


def run_without_the_rest(code: str, cwd: Path, extras: tuple[str, ...] = ()) -> dict:
    """Run ``code`` in a Python where only pinzi[extras]'s packages import; its JSON output."""
    blocker = f"""
import importlib.abc, sys
BLOCKED = set({not_installed(extras)!r})

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
"""
    done = subprocess.run([sys.executable, "-c", blocker + code], capture_output=True,
                          text=True, cwd=cwd, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_default_install_leaves_out_training_and_serving():
    default = {_name(r) for r in requirements()}
    assert not default & HEAVY
    assert {"numpy", "onnxruntime", "pypinyin", "typer", "rich", "filelock", "opencc"} <= default
    assert {"torch", "transformers", "accelerate", "peft", "datasets", "tensorboard",
            "matplotlib", "scikit-learn"} <= {_name(r) for r in requirements(("train",))}
    assert {"fastapi", "uvicorn"} <= {_name(r) for r in requirements(("serve",))}
    assert {"keras", "torch"} <= {_name(r) for r in requirements(("keras",))}
    assert {_name(r) for r in requirements(("all",))} >= HEAVY
    dev = {_name(r) for r in requirements(("dev",))}
    assert HEAVY | {"pytest", "ruff", "httpx", "sacrebleu", "jieba"} <= dev
    assert not closure() & HEAVY  # nor does anything the default install pulls in


def test_the_cli_names_the_extra_that_installs_each_optional_module():
    default = closure()
    for module, extra in EXTRA_OF_MODULE.items():
        dists = {_name(Requirement(d)) for d in provided()[module]}
        assert dists & closure((extra,)), (module, extra)
        assert not dists & default, f"{module} comes with the default install"


LEAN_COMMANDS = """
import json, sys
from typer.testing import CliRunner
from pinzi.cli import app

runs = {}
for name, args, stdin in [
        ("version", ["--version"], None),
        ("help", ["--help"], None),
        ("convert", ["convert", "woaibeijingtiananmen"], None),
        ("stdin", ["convert"], "nihao\\nwo ai bei jing\\n"),
        ("traditional", ["convert", "woaibeijing", "--traditional"], None),
        ("pinyin", ["pinyin", "重庆银行"], None),
        ("eval", ["eval", sys.argv[1], "--backend", "onnx", "--form", "all"], None),
        ("pretrain", ["pretrain", "--data", "d", "--out", "o"], None),
        ("prepare", ["data", "prepare", sys.argv[1], "--out", "o"], None),
        ("classify", ["classify", "predict", "-m", "m", "text"], None),
        ("export", ["export", "--out", "o"], None),
        ("serve", ["serve"], None)]:
    result = CliRunner().invoke(app, args, input=stdin)
    runs[name] = [result.exit_code, result.stdout, result.stderr]
runs["loaded"] = sorted(m for m in ("torch", "transformers", "fastapi") if m in sys.modules)
print(json.dumps(runs))
"""


def test_conversion_works_with_the_default_install_alone(tmp_path):
    gold = tmp_path / "gold.txt"
    gold.write_text("我爱北京天安门。今天天气很好\n", encoding="utf-8")
    code = LEAN_COMMANDS.replace("sys.argv[1]", repr(str(gold)))
    runs = run_without_the_rest(code, tmp_path)
    assert runs.pop("loaded") == []
    for name in ("version", "help", "convert", "stdin", "eval", "traditional", "pinyin",
                 "prepare"):
        assert runs[name][0] == 0, (name, runs[name])
    assert runs["convert"][1] == "我爱北京天安门\n"
    assert runs["traditional"][1] == "我愛北京\n" and runs["pinyin"][1] == "chóng qìng yín háng\n"
    assert runs["stdin"][1] == "你好\n我爱北京\n"
    assert runs["eval"][1].count("100.00%") >= 6  # spaced and continuous are all right
    assert json.loads(runs["prepare"][1])["sentences"]["kept"] == 2  # local files: no extra
    for name, extra in [("pretrain", "train"), ("classify", "train"),
                        ("export", "train"), ("serve", "serve")]:
        code, _, stderr = runs[name]
        assert code == 2 and f'pip install "pinzi[{extra}]"' in stderr, (name, runs[name])
        assert "Traceback" not in stderr


def test_serving_needs_only_the_serve_extra(tmp_path):
    code = """
import json, sys
from pinzi.serve import ServeConfig, build_app
build_app(ServeConfig())
print(json.dumps(sorted(m for m in ("torch", "transformers") if m in sys.modules)))
"""
    assert run_without_the_rest(code, tmp_path, ("serve",)) == []
