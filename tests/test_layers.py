"""The package's layers import only downward, and no module grows past its size.

foundations < core < inference < training < recipes < surface: a module may import a module of
its own layer or of a layer below, never above. Imports inside functions are kept for heavy
third-party libraries (torch, transformers, peft, ...), so that ``pinzi convert`` starts without
them; a pinzi module imported inside a function is allowed only where :data:`LAZY` says why.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pinzi"
LAYERS = {
    "foundations": ["errors", "hub", "io", "plots", "text"],
    "core": ["pinyin", "readings", "shuangpin", "lexicon", "tokenizer", "model", "ngram", "lora",
             "metrics", "hf", "words"],
    "inference": ["backends", "decode", "decoding_config", "partial", "predict", "learning",
                  "converter", "evaluate", "classifier"],
    "training": ["settings", "train", "corpus", "data", "denoise", "classify_task"],
    "recipes": ["pretrain", "finetune", "classify", "keras_classify"],
    "surface": ["console", "cli", "cli_train", "cli_ime", "guard", "schemas", "serve", "export",
                "__init__", "__main__"],
}
RANK = {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}
# The commands import what each needs when it runs: `pinzi convert` never loads the training
# stack, and `pinzi --help` loads none of the models.
LAZY_IMPORTERS = {"cli", "cli_train", "cli_ime"}
# (importer, imported) -> why the import is inside a function.
LAZY = {
    ("__init__", "converter"): "`import pinzi` stays instant; Converter loads on first use",
    ("converter", "model"): "torch only on the PyTorch backend: convert starts without it",
    ("converter", "lora"): "peft and torch only with an adapter",
    ("serve", "classifier"): "torch only with --classifier",
}
MAX_LINES = 500


def modules() -> list[Path]:
    return sorted(PACKAGE.glob("*.py"))


def pinzi_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported pinzi module, inside a function?) of every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef,
                                                              ast.AsyncFunctionDef))
              for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "pinzi":  # from pinzi import __version__, cli_train
                names = [a.name for a in node.names if a.name in RANK]
            elif node.module.startswith("pinzi."):
                names = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("pinzi.")]
        found += [(name, id(node) in nested) for name in names]
    return found


def test_every_module_has_a_layer():
    assert {p.stem for p in modules()} == set(RANK)


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.stem)
def test_imports_go_only_downward(path):
    for imported, lazy in pinzi_imports(path):
        assert RANK[imported] <= RANK[path.stem], f"{path.stem} imports {imported} from above"
        if lazy and path.stem not in LAZY_IMPORTERS:
            assert (path.stem, imported) in LAZY, \
                f"{path.stem} imports {imported} inside a function: import it at the top"


def test_no_import_cycles():
    graph = {p.stem: {m for m, _ in pinzi_imports(p)} for p in modules()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, "import cycle: " + " -> ".join([*path, module])
        if module in done:
            return
        for imported in graph[module]:
            visit(imported, [*path, module])
        done.add(module)

    for module in graph:
        visit(module, [])


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.stem)
def test_modules_stay_small(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_LINES


def test_convert_starts_without_torch():
    code = ("import sys; from pinzi.cli import app; import pinzi.converter; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'accelerate') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"
