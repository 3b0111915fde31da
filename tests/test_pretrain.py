"""`pinzi pretrain` (pinzi.pretrain): the tiny model, resume, architectures, settings errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_SETTINGS

from pinzi.decoding_config import DECODING_FILE, DecodingConfig
from pinzi.errors import SettingsError, TrainingError
from pinzi.model import PinziForPinyin, load_pretrained
from pinzi.pretrain import pretrain


def test_tiny_model_learns_the_corpus(tiny_model):
    history = [json.loads(r) for r in (tiny_model / "history.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in history if "loss" in r]
    assert losses[-1] < losses[0] / 5
    assert max(r["valid_char_acc"] for r in history if "valid_char_acc" in r) == 1.0
    for name in ("config.json", "model.safetensors", "vocab.json", "ngram.npz", DECODING_FILE,
                 "settings.json", "curves.png"):
        assert (tiny_model / name).exists(), name
    assert list((tiny_model / "tensorboard").iterdir())
    assert DecodingConfig.load(tiny_model) == DecodingConfig()
    settings = json.loads((tiny_model / "settings.json").read_text())
    assert settings["model"]["preset"] == "tiny" and settings["train"]["max_steps"] == 250


def test_save_then_load_gives_identical_outputs(tiny_model, tmp_path):
    model, tokenizer = load_pretrained(PinziForPinyin, str(tiny_model))
    ids = torch.tensor([tokenizer.encode_text("北京天安门")])
    model.save_pretrained(tmp_path)
    tokenizer.save(tmp_path)
    again, _ = load_pretrained(PinziForPinyin, str(tmp_path))
    assert torch.equal(model(ids).logits, again(ids).logits)


def test_resume_after_interruption_reproduces_the_losses(tiny_corpus, tmp_path):
    settings = dict(TINY_SETTINGS, max_steps=30, save_every=10, eval_every=10, log_every=1,
                    dropout=0.1)
    whole = tmp_path / "whole"
    pretrain(tiny_corpus, whole, settings=settings, progress=False)

    class Killed(Exception):
        pass

    def kill_at_17(step, loss):
        if step == 17:
            raise Killed

    broken = tmp_path / "broken"
    with pytest.raises(Killed):
        pretrain(tiny_corpus, broken, settings=settings, progress=False, on_step=kill_at_17)
    pretrain(tiny_corpus, broken, settings=settings, resume=True, progress=False)

    def losses(run):
        rows = [json.loads(r) for r in (run / "history.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if "loss" in r]

    assert losses(broken) == losses(whole)
    assert len(losses(whole)) == 30


def test_lstm_architecture_trains(tiny_corpus, tmp_path):
    settings = dict(TINY_SETTINGS, max_steps=20, eval_every=20, arch="lstm-attention")
    summary = pretrain(tiny_corpus, tmp_path, settings=settings, progress=False)
    model, _ = load_pretrained(PinziForPinyin, str(tmp_path))
    assert model.config.arch == "lstm-attention"
    assert summary["steps"] == 20


def test_training_on_from_a_base_keeps_its_size(tiny_model, tiny_corpus, tmp_path):
    summary = pretrain(tiny_corpus, tmp_path, base=tiny_model, progress=False,
                       settings=dict(max_steps=2, eval_every=2, batch_tokens=512))
    assert summary["steps"] == 2
    assert json.loads((tmp_path / "config.json").read_text())["hidden_size"] == 64
    with pytest.raises(SettingsError, match="cannot change"):
        pretrain(tiny_corpus, tmp_path / "x", base=tiny_model, settings={"hidden_size": 32},
                 progress=False)


@pytest.mark.parametrize(("settings", "message"), [
    ({"learning_rat": 0.1}, "did you mean 'train.learning_rate'"),
    ({"max_steps": "many"}, "max_steps"),
    ({"hidden_sise": 10}, "did you mean 'model.hidden_size'"),
    ({"hidden_size": 30, "num_heads": 4}, "not divisible"),
    ({"arch": "rnn"}, "must be one of transformer, lstm-attention"),
])
def test_bad_settings_are_clear_errors(tiny_corpus, tmp_path, settings, message):
    with pytest.raises(SettingsError, match=message):
        pretrain(tiny_corpus, tmp_path, settings={"preset": "tiny", **settings}, progress=False)


def test_missing_or_foreign_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(TrainingError, match="not a prepared dataset"):
        pretrain(tmp_path, tmp_path / "out", progress=False)


def test_resume_without_checkpoint_is_a_clear_error(tiny_corpus, tmp_path):
    with pytest.raises(TrainingError, match="no checkpoint"):
        pretrain(tiny_corpus, tmp_path, settings={"preset": "tiny"}, resume=True,
                 progress=False)
