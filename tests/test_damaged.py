"""Damaged model folders and mistaken ones, through the command line: a copy of the shipped model
with one file damaged, a classifier or an adapter where a converter is expected, and names
that must never go to the Hugging Face hub, or not wait for it when it cannot be reached."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
from huggingface_hub import constants
from typer.testing import CliRunner

from pinzi.cli import app
from pinzi.converter import Converter
from pinzi.decoding_config import DecodingConfig
from pinzi.errors import ModelLoadError
from pinzi.export import export_onnx
from pinzi.hub import hub_reachable, model_config, resolve_model, shipped_model_path
from pinzi.model import PinziConfig, PinziForClassification, PinziForPinyin
from pinzi.ngram import CharNgram
from pinzi.tokenizer import PinziTokenizer
from pinzi.words import WORDS_FILE

runner = CliRunner()
SHIPPED = shipped_model_path()


def damaged_copy(tmp_path: Path, name: str, damage: Callable[[Path], None]) -> Path:
    """The shipped folder, its files linked, with ``name`` a real copy that ``damage`` edits."""
    folder = tmp_path / "model"
    folder.mkdir()
    for path in SHIPPED.iterdir():
        (folder / path.name).symlink_to(path)
    (folder / name).unlink()
    (folder / name).write_bytes((SHIPPED / name).read_bytes())
    damage(folder / name)
    return folder


def edit_json(**changes) -> Callable[[Path], None]:
    return lambda path: path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def npz_with(**changes) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        with np.load(path) as data:
            tables = {**data, **changes}
        with open(path, "wb") as f:
            np.savez(f, **tables)
    return damage


DAMAGES = {
    "config.json, negative num_layers": ("config.json", edit_json(num_layers=-3),
                                         "num_layers must be a whole number"),
    "config.json, absurd num_layers": ("config.json", edit_json(num_layers=10**6),
                                       "num_layers 1000000 is over"),
    "config.json, not an object": ("config.json", lambda p: p.write_text("[]"),
                                   "config.json is not a JSON object"),
    "vocab.json, chars of the wrong type": ("vocab.json", edit_json(chars=5),
                                            "vocab.json: its chars are not a list"),
    "ngram.npz, truncated": ("ngram.npz", truncate, "ngram.npz is not an .npz archive"),
    "ngram.npz, empty": ("ngram.npz", lambda p: p.write_bytes(b""), "ngram.npz is not an"),
    "ngram.npz, wrong shape": ("ngram.npz", npz_with(unigram=np.zeros((3, 3), np.float32)),
                               "ngram.npz cannot be used: unigram is not a one-dimensional"),
    "words.tsv.gz, truncated": ("words.tsv.gz", truncate, "words.tsv.gz: Compressed file"),
    "words.tsv.gz, no syllable": ("words.tsv.gz", lambda p: p.write_bytes(
        gzip.compress("北京\t-3\tbei'jingx\n".encode())), "'jingx', which is no syllable"),
    "decoding_config.json, no beam": ("decoding_config.json", edit_json(beam=0),
                                      "decoding_config.json: beam, readings"),
    "decoding_config.json, a fraction": ("decoding_config.json", edit_json(readings=2.5),
                                         "must be whole numbers"),
    "model.onnx, truncated": ("model.onnx", truncate, "model.onnx cannot be loaded"),
}


@pytest.mark.parametrize("case", DAMAGES)
def test_convert_with_a_damaged_file_says_the_folder_is_damaged(tmp_path, case):
    name, damage, problem = DAMAGES[case]
    folder = damaged_copy(tmp_path, name, damage)
    result = runner.invoke(app, ["convert", "--model", str(folder), "nihao"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert re.search(f"error: model folder {re.escape(str(folder))} is damaged: .*"
                     f"{re.escape(problem)}", result.stderr), result.stderr


@pytest.mark.parametrize(("name", "damage", "problem"), [
    ("model.safetensors", truncate, "model.safetensors cannot be loaded"),
    ("config.json", edit_json(num_layers=2), "model.safetensors does not hold the model"),
    ("config.json", edit_json(num_layers=6), "encoder.blocks.4.attn.out.bias is missing"),
])
def test_damaged_weights_on_the_torch_backend(tmp_path, name, damage, problem):
    folder = damaged_copy(tmp_path, name, damage)
    (tmp_path / "gold.txt").write_text("你好\n", encoding="utf-8")
    result = runner.invoke(app, ["eval", "--model", str(folder), "--backend", "torch",
                                 str(tmp_path / "gold.txt")])
    assert result.exit_code == 2, result.output
    assert f"model folder {folder} is damaged: " in result.stderr and problem in result.stderr


@pytest.fixture
def classifier_folder(tmp_path) -> Path:
    tokenizer = PinziTokenizer(list("好坏"))
    config = PinziConfig.from_preset("tiny", vocab_size=tokenizer.vocab_size, num_labels=2,
                                     char_offset=tokenizer.char_offset, n_chars=tokenizer.n_chars)
    folder = tmp_path / "classifier"
    PinziForClassification(config).save_pretrained(folder)
    tokenizer.save(folder)
    return folder


def test_a_classifier_is_refused_by_convert_and_eval(classifier_folder, tmp_path):
    (tmp_path / "gold.txt").write_text("你好\n", encoding="utf-8")
    for command in (["convert", "--model", str(classifier_folder), "nihao"],
                    ["eval", "--model", str(classifier_folder), str(tmp_path / "gold.txt")],
                    ["eval", "--backend", "torch", "--model", str(classifier_folder),
                     str(tmp_path / "gold.txt")]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, command
        assert f"{classifier_folder} is a classifier, not a converter" in result.stderr


def test_a_folder_of_no_model_or_of_another_kind_says_so(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    for folder, problem in (("runs", "is not a model folder (no config.json in it)"),
                            ("bert", "is not a pinzi converter (its config.json has model_type "
                                     "'bert')")):
        result = runner.invoke(app, ["convert", "-m", str(tmp_path / folder), "nihao"])
        assert result.exit_code == 2
        assert result.stderr == f"error: {tmp_path / folder} {problem}\n"


def test_an_adapter_given_as_the_model_says_merge_it_first(tmp_path):
    adapter = tmp_path / "adapter"  # what `pinzi finetune --lora` leaves: no config.json
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    for command in (["export", "--model", str(adapter), "--out", str(tmp_path / "out")],
                    ["convert", "--model", str(adapter), "nihao"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, command
        assert f"{adapter} is a LoRA adapter, not a model: merge it first (`pinzi merge`)" \
            in result.stderr
    assert not (tmp_path / "out").exists()


def test_export_checks_the_files_it_copies_and_copies_them_all(tmp_path):
    folder = damaged_copy(tmp_path, "words.tsv.gz", truncate)
    result = runner.invoke(app, ["export", "--model", str(folder), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and f"model folder {folder} is damaged: words.tsv.gz" \
        in result.stderr
    assert not (tmp_path / "x").exists()

    tokenizer = PinziTokenizer(list("你好中国"))
    source, out = tmp_path / "tiny", tmp_path / "exported"
    PinziForPinyin(PinziConfig.from_preset(
        "tiny", vocab_size=tokenizer.vocab_size, char_offset=tokenizer.char_offset,
        n_chars=tokenizer.n_chars)).save_pretrained(source)
    tokenizer.save(source)
    (source / WORDS_FILE).write_bytes(gzip.compress("你好\t-2\tni'hao\n".encode()))
    CharNgram.build(np.array([5, 6, 7, 8]), np.array([0, 4]), char_offset=5, n_chars=4,
                    min_count=1).save(source)
    DecodingConfig(word_weight=1.0).save(source)
    export_onnx(source, out)
    copied = {p.name for p in source.iterdir()} - {"model.safetensors"}  # the graph instead
    assert {p.name for p in out.iterdir()} == copied | {"model.onnx"}
    converter = Converter.from_pretrained(out)
    assert converter.scorer.name == "onnx" and converter.words is not None
    assert converter.decoding.word_weight == 1.0 and converter.ngram is not None


# ---- the hub ------------------------------------------------------------------------------------
@pytest.fixture
def asked(monkeypatch, tmp_path) -> list[str]:
    """What asked the hub (nothing should); the hub's cache is empty."""
    calls: list[str] = []
    monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda: calls.append("session"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    return calls


@pytest.mark.parametrize("typo", ["runs/tyop", "./tyop", "~/no/such/model", "tyop.json",
                                  "a/b/c"])
def test_a_mistyped_path_never_goes_to_the_hub(tmp_path, monkeypatch, asked, typo):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # runs/tyop: an owner/name id in form, but runs/ is here
    for name in ("snapshot_download", "hf_hub_download"):
        monkeypatch.setattr(huggingface_hub, name, lambda *a, name=name, **k: asked.append(name))
    for load in (resolve_model, model_config):
        with pytest.raises(ModelLoadError, match=f"^no model folder {re.escape(repr(typo))}$"):
            load(typo)
    for command in (["convert", "-m", typo, "nihao"], ["classify", "predict", "-m", typo, "x"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, command
        assert result.stderr == f"error: no model folder {typo!r}\n", command
    assert asked == []


def test_a_hub_id_offline_is_one_clear_error_from_the_cache(monkeypatch, asked):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert not hub_reachable()
    for load in (resolve_model, model_config):
        with pytest.raises(ModelLoadError, match="no model folder 'someone/model' here, and it "
                                                 "is not in the Hugging Face cache"):
            load("someone/model")
    for command in (["convert", "-m", "someone/model", "nihao"],
                    ["classify", "predict", "-m", "someone/model", "x"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2 and "not in the Hugging Face cache" in result.stderr
    assert asked == []  # offline: not even a probe


def test_an_unreachable_hub_is_not_retried(monkeypatch, tmp_path):
    class Unreachable:
        def head(self, url, timeout):
            assert timeout <= 5
            raise OSError("network is unreachable")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.utils, "get_session", Unreachable)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    asked = []

    def cache_only(repo_id, *args, local_files_only=False, **kwargs):
        asked.append(local_files_only)
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", cache_only)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cache_only)
    for load in (resolve_model, model_config):
        with pytest.raises(ModelLoadError, match="the hub cannot be reached"):
            load("someone/model")
    assert asked == [True, True]  # the cache alone: no download, none of its five retries


def test_a_hub_id_in_the_cache_loads_offline(monkeypatch, asked, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    snapshot = tmp_path / "hub-cache" / "models--someone--model" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for path in SHIPPED.iterdir():
        (snapshot / path.name).symlink_to(path)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    assert resolve_model("someone/model") == snapshot
    folder, config = model_config("someone/model")
    assert Path(folder) == snapshot and config["model_type"] == "pinzi"
    result = runner.invoke(app, ["convert", "-m", "someone/model", "nihao"])
    assert result.exit_code == 0 and result.stdout == "你好\n"
    assert asked == []
