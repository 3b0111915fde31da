"""Domain fine-tuning: LoRA adapters (train, save, load, disable, merge), full fine-tuning, CLI."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import warnings

import pytest
import torch
from conftest import QUICK, SENTENCES
from safetensors.torch import load_file
from typer.testing import CliRunner

from pinzi.cli import app
from pinzi.converter import SIDE_FILES, Converter
from pinzi.errors import DataError, ModelLoadError, SettingsError, TrainingError
from pinzi.evaluate import read_clauses, split_clauses
from pinzi.finetune import (
    DEFAULT_EVAL_LIMIT,
    DEFAULT_GENERAL_TEST,
    DEFAULTS,
    SECTIONS,
    finetune,
    merge,
)
from pinzi.lora import (
    ADAPTER_BASE,
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    LoraSettings,
    apply_lora,
    load_adapter,
    set_adapter_enabled,
)
from pinzi.model import PinziConfig, PinziForPinyin, load_pretrained
from pinzi.settings import resolve
from pinzi.tokenizer import PinziTokenizer
from pinzi.train import TrainConfig

runner = CliRunner()


def _ids(tokenizer: PinziTokenizer) -> torch.Tensor:
    text = [tokenizer.encode_text(SENTENCES[0]), tokenizer.encode_text(SENTENCES[3][:7])]
    return torch.tensor(text)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_lora_trains_only_the_adapter(lora_run, tiny_model):
    out, report = lora_run
    for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG, ADAPTER_BASE, "report.json", "report.md"):
        assert (out / name).is_file(), name
    assert not (out / "model.safetensors").exists()  # the adapter is saved alone
    base = load_file(str(tiny_model / "model.safetensors"))
    latest = (out / "checkpoints" / "latest").read_text().strip()
    trained = load_file(str(out / "checkpoints" / latest / "model.safetensors"))
    frozen = {k.replace(".base_layer.", "."): v for k, v in trained.items() if ".lora_" not in k}
    assert frozen.keys() == base.keys()
    for name, tensor in base.items():
        assert torch.equal(frozen[name], tensor), f"{name} changed"
    lora_b = [v for k, v in trained.items() if ".lora_B." in k]
    assert len(lora_b) == 8 and all(v.abs().sum() > 0 for v in lora_b)  # 4 targets x 2 blocks
    assert 0 < report["trainable_parameters"] < 0.05 * report["total_parameters"]
    saved = load_file(str(out / ADAPTER_WEIGHTS))
    assert sum(v.numel() for v in saved.values()) == report["trainable_parameters"]


def test_outputs_change_only_through_the_adapter(lora_run, tiny_model):
    out, _ = lora_run
    base, tokenizer = load_pretrained(PinziForPinyin, str(tiny_model))
    ids = _ids(tokenizer)
    expected = _logits(base, ids)
    adapted, _ = load_pretrained(PinziForPinyin, str(tiny_model))
    load_adapter(adapted, out)
    assert not torch.equal(_logits(adapted, ids), expected)
    set_adapter_enabled(adapted, False)
    assert torch.equal(_logits(adapted, ids), expected)
    set_adapter_enabled(adapted, True)
    assert not torch.equal(_logits(adapted, ids), expected)


def test_merge_gives_the_logits_of_base_plus_adapter(lora_run, tiny_model, tmp_path):
    out, _ = lora_run
    adapted, tokenizer = load_pretrained(PinziForPinyin, str(tiny_model))
    load_adapter(adapted, out)
    merge(tiny_model, out, tmp_path / "merged")
    for name in ("config.json", "model.safetensors", "vocab.json", "ngram.npz"):
        assert (tmp_path / "merged" / name).is_file(), name
    assert (tmp_path / "merged" / "ngram.npz").read_bytes() == \
        (tiny_model / "ngram.npz").read_bytes()
    merged, _ = load_pretrained(PinziForPinyin, str(tmp_path / "merged"))
    assert not any(".lora_" in k or "base_layer" in k for k in merged.state_dict())
    ids = _ids(tokenizer)
    torch.testing.assert_close(_logits(merged, ids), _logits(adapted, ids))
    via_adapter = Converter.from_pretrained(tiny_model, adapter=out)
    assert Converter.from_pretrained(tmp_path / "merged").convert("nihaoshijie") == \
        via_adapter.convert("nihaoshijie")


def test_merge_writes_readable_files_with_every_side_file_and_never_into_a_full_folder(
        lora_run, tiny_model, tmp_path):
    out, _ = lora_run
    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    (base / "words.tsv.gz").write_bytes(gzip.compress("北京\t-2.0\tbei'jing\n".encode()))
    previous = os.umask(0o022)
    try:
        merge(base, out, tmp_path / "merged")
    finally:
        os.umask(previous)
    merged = tmp_path / "merged"
    for name in SIDE_FILES:  # what conversion reads goes along
        if (base / name).is_file():
            assert (merged / name).read_bytes() == (base / name).read_bytes(), name
    assert (merged / "words.tsv.gz").is_file()
    for path in merged.iterdir():  # a service account can read the merged model
        assert path.stat().st_mode & 0o777 == 0o644, path.name
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(ModelLoadError, match="not an empty folder"):
        merge(base, out, tmp_path / "full")
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"


def test_adapter_on_the_wrong_base_is_a_clear_error(lora_run, tiny_model, tmp_path):
    out, _ = lora_run
    model, tokenizer = load_pretrained(PinziForPinyin, str(tiny_model))
    # Same shapes, another vocabulary: the characters in another order.
    shuffled = tmp_path / "other-vocab"
    model.save_pretrained(shuffled)
    PinziTokenizer(tokenizer.chars[::-1]).save(shuffled)
    other, _ = load_pretrained(PinziForPinyin, str(shuffled))
    with pytest.raises(ModelLoadError, match="vocabulary"):
        load_adapter(other, out)
    # Another architecture.
    config = PinziConfig.from_preset("tiny", vocab_size=tokenizer.vocab_size, hidden_size=32,
                                     char_offset=tokenizer.char_offset, n_chars=tokenizer.n_chars)
    with pytest.raises(ModelLoadError, match="hidden_size 32 instead of 64"):
        load_adapter(PinziForPinyin(config), out, tokenizer=tokenizer)
    # Same vocabulary and shapes, other weights: loads, with a warning.
    torch.manual_seed(1)
    retrained = PinziForPinyin(model.config)
    with pytest.warns(UserWarning, match="other weights"):
        load_adapter(retrained, out, tokenizer=tokenizer)
    with pytest.raises(ModelLoadError, match="not a pinzi LoRA adapter"):
        load_adapter(model, tiny_model)
    with pytest.raises(ModelLoadError, match="no adapter folder"):
        load_adapter(model, tmp_path / "nope")


def test_lora_needs_named_linear_layers():
    config = PinziConfig.from_preset("tiny", vocab_size=60, char_offset=5, n_chars=40,
                                     arch="lstm-attention")
    with pytest.raises(SettingsError, match="match no Linear layer"):
        apply_lora(PinziForPinyin(config), LoraSettings())
    model = apply_lora(PinziForPinyin(PinziConfig.from_preset("tiny", vocab_size=60,
                                                              char_offset=5, n_chars=40)),
                       LoraSettings(targets="qkv"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".attn.qkv.lora_" in n for n in trainable)


def test_lora_run_repeats_and_resumes_exactly(tiny_model, tiny_corpus, tmp_path):
    settings = dict(QUICK, max_steps=8, eval_every=4, save_every=4, log_every=1)

    class Killed(Exception):
        pass

    def kill_at_6(step, loss):
        if step == 6:
            raise Killed

    def losses(run):
        rows = [json.loads(r) for r in (run / "history.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if "loss" in r]

    run = dict(lora=True, settings=settings, eval_limit=0, progress=False)
    finetune(tiny_model, tiny_corpus, tmp_path / "whole", **run)
    with pytest.raises(Killed):
        finetune(tiny_model, tiny_corpus, tmp_path / "broken", on_step=kill_at_6, **run)
    report = finetune(tiny_model, tiny_corpus, tmp_path / "broken", resume=True, **run)
    assert losses(tmp_path / "broken") == losses(tmp_path / "whole")
    assert len(losses(tmp_path / "whole")) == 8
    assert report["tests"] == [] and not (tmp_path / "broken" / "report.png").exists()
    assert "no evaluation" in (tmp_path / "broken" / "report.md").read_text()


def test_full_finetune_writes_the_report(tiny_model, tiny_corpus, tmp_path):
    general = tmp_path / "general.txt"
    general.write_text("\n".join(SENTENCES[::-1]) + "\n", encoding="utf-8")
    out = tmp_path / "full"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        report = finetune(tiny_model, tiny_corpus, out, lora=False,
                          settings=dict(QUICK, max_steps=6, learning_rate=3e-4),
                          general_test=general, eval_limit=10, progress=False)
    assert report["trainable_parameters"] == report["total_parameters"]
    assert [(r["kind"], r["name"]) for r in report["tests"]] == \
        [("domain", "test split"), ("general", f"{tmp_path.name}/general.txt")]
    for row in report["tests"]:  # the tiny model knows these sentences, before and after
        assert row["clauses"] == 10 and row["before"]["char_acc"] == 1.0
        assert row["after"]["char_acc"] >= 0.9
    assert json.loads((out / "report.json").read_text()) == report
    table = (out / "report.md").read_text()
    assert "| domain: test split | 10 |" in table and "CER change" in table
    assert (out / "report.png").stat().st_size > 1000
    # A normal model folder, with the base's n-gram model rather than the domain's counts.
    assert (out / "ngram.npz").read_bytes() == (tiny_model / "ngram.npz").read_bytes()
    assert Converter.from_pretrained(out).convert("woaibeijingtiananmen") == "我爱北京天安门"


def test_the_shipped_general_test_is_everyday_hanzi_that_evaluates_whole():
    lines = DEFAULT_GENERAL_TEST.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 300 and len(set(lines)) == len(lines) and all(lines)
    clauses = read_clauses(DEFAULT_GENERAL_TEST)
    # every clause is all hanzi that pypinyin reads: none is dropped from the evaluation
    assert len(clauses) == sum(len(split_clauses(line)) for line in lines)
    assert len(clauses) >= DEFAULT_EVAL_LIMIT


def test_finetuning_batches_are_smaller_but_a_step_sees_as_many_tokens():
    train = resolve(SECTIONS, DEFAULTS)["train"]
    assert train.batch_tokens * train.grad_accum == TrainConfig().batch_tokens
    assert train.batch_tokens < TrainConfig().batch_tokens  # the peak memory scales with it


def test_finetune_bad_inputs_are_clear_errors(tiny_model, tiny_corpus, tmp_path):
    with pytest.raises(TrainingError, match="not a prepared dataset"):
        finetune(tiny_model, tmp_path, tmp_path / "a", lora=True, progress=False)
    with pytest.raises(ModelLoadError, match="nope"):
        finetune(tmp_path / "nope", tiny_corpus, tmp_path / "b", lora=True, general_test=[],
                 progress=False)
    with pytest.raises(DataError, match="no such test file"):
        finetune(tiny_model, tiny_corpus, tmp_path / "c", lora=True,
                 domain_test=tmp_path / "missing.txt", progress=False)


# ---- CLI ----------------------------------------------------------------------------------------
def test_cli_finetune_convert_and_merge(lora_run, tiny_model, tiny_corpus, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, [
        "finetune", "--base", str(tiny_model), "--data", str(tiny_corpus), "--out", str(out),
        "--lora", "--rank", "2", "--alpha", "4", "--targets", "qkv,mlp.2", "--max-steps", "4",
        "--set", "eval_every=2", "--set", "batch_tokens=512", "--set", "grad_accum=1",
        "--eval-limit", "5", "--domain-test", str(tiny_corpus.parent / "train.txt")])
    assert result.exit_code == 0, result.output
    assert f"| domain: {tiny_corpus.parent.name}/train.txt | 5 |" in result.stdout
    assert "| general: resources/general_test.txt | 5 |" in result.stdout  # shipped by default
    config = json.loads((out / ADAPTER_CONFIG).read_text())
    assert config["r"] == 2 and sorted(config["target_modules"]) == ["mlp.2", "qkv"]
    assert json.loads((out / "report.json").read_text())["training"]["steps"] == 4
    again = runner.invoke(app, ["finetune", "--base", str(tiny_model), "--data",
                                str(tiny_corpus), "--out", str(out), "--lora", "--max-steps", "4",
                                "--eval-limit", "0"])
    assert again.exit_code == 2 and "already holds a training run" in again.output

    adapter, _ = lora_run
    result = runner.invoke(app, ["convert", "woaibeijing", "-m", str(tiny_model),
                                 "--adapter", str(adapter)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "我爱北京\n"
    merged = tmp_path / "merged"
    result = runner.invoke(app, ["merge", "--base", str(tiny_model), "--adapter", str(adapter),
                                 "--out", str(merged)])
    assert result.exit_code == 0, result.output
    assert (merged / "model.safetensors").is_file()


def test_cli_errors_exit_2(lora_run, tiny_model, tiny_corpus, tmp_path):
    adapter, _ = lora_run
    cases = [
        (["finetune", "--base", str(tmp_path / "nope"), "--data", str(tiny_corpus),
          "--out", str(tmp_path / "o1")], "nope"),
        (["finetune", "--base", str(tiny_model), "--data", str(tmp_path / "nodata"),
          "--out", str(tmp_path / "o2")], "not a prepared dataset"),
        (["convert", "nihao", "-m", str(tiny_model), "--adapter", str(tmp_path / "none")],
         "no adapter folder"),
        (["merge", "--base", str(tiny_model), "--adapter", str(tiny_model),
          "--out", str(tmp_path / "o3")], "not a pinzi LoRA adapter"),
        (["finetune", "--base", str(tiny_model), "--data", str(tiny_corpus), "--out",
          str(tmp_path / "o5"), "--lora", "--targets", "qkv,q_proj"], "q_proj match no Linear"),
        (["finetune", "--base", str(tiny_model), "--data", str(tiny_corpus), "--out",
          str(tmp_path / "o6"), "--set", "learning_rat=1"], "did you mean 'train.learning_rate'"),
    ]
    model, tokenizer = load_pretrained(PinziForPinyin, str(tiny_model))
    wrong = tmp_path / "wrong-base"
    model.save_pretrained(wrong)
    PinziTokenizer(tokenizer.chars[::-1]).save(wrong)
    cases.append((["convert", "nihao", "-m", str(wrong), "--adapter", str(adapter)],
                  "vocabulary"))
    cases.append((["merge", "--base", str(wrong), "--adapter", str(adapter),
                   "--out", str(tmp_path / "o4")], "vocabulary"))
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
        assert message in " ".join(result.stderr.split()), (args, result.stderr)
