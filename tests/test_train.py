"""The training engine and the pinyin-denoising objective, on tiny models and data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_SETTINGS

from pinzi.denoise import train_converter
from pinzi.model import PinziConfig, PinziForPinyin, load_pretrained
from pinzi.train import TrainConfig, TrainingError, lr_factor, read_config_file


def test_tiny_model_learns_the_corpus(tiny_model):
    history = [json.loads(r) for r in (tiny_model / "history.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in history if "loss" in r]
    assert losses[-1] < losses[0] / 5
    assert max(r["valid_char_acc"] for r in history if "valid_char_acc" in r) == 1.0
    for name in ("config.json", "model.safetensors", "vocab.json", "curves.png"):
        assert (tiny_model / name).exists(), name
    assert list((tiny_model / "tensorboard").iterdir())


def test_save_then_load_gives_identical_outputs(tiny_model, tmp_path):
    model, tokenizer = load_pretrained(PinziForPinyin, str(tiny_model))
    ids = torch.tensor([tokenizer.encode_text("北京天安门")])
    model.save_pretrained(tmp_path)
    tokenizer.save(tmp_path)
    again, _ = load_pretrained(PinziForPinyin, str(tmp_path))
    assert torch.equal(model(ids).logits, again(ids).logits)


def test_restricted_loss_is_cross_entropy_over_the_candidates():
    torch.manual_seed(0)
    config = PinziConfig.from_preset("tiny", vocab_size=60, char_offset=5, n_chars=40)
    model = PinziForPinyin(config).eval()
    input_ids = torch.randint(5, 60, (2, 6))
    labels = torch.full((2, 6), -100)
    labels[0, 1], labels[1, 4], labels[1, 5] = 3, 17, 39
    mask = torch.zeros(3, 40, dtype=torch.bool)
    mask[0, [3, 4, 9]] = mask[1, [17, 2]] = mask[2, [39, 0, 1, 5]] = True
    loss = model(input_ids, labels=labels, candidate_mask=mask).loss
    logits = model(input_ids).logits[labels != -100]
    expected = torch.stack([
        F.cross_entropy(row[m][None], torch.tensor([int(m[:t].sum())]))
        for row, m, t in zip(logits, mask, labels[labels != -100], strict=True)
    ]).mean()
    torch.testing.assert_close(loss, expected)


def test_resume_after_interruption_reproduces_the_losses(tiny_corpus, tmp_path):
    settings = dict(TINY_SETTINGS, max_steps=30, save_every=10, eval_every=10, log_every=1,
                    dropout=0.1)
    whole = tmp_path / "whole"
    train_converter(tiny_corpus, whole, preset="tiny", settings=dict(settings), progress=False)

    class Killed(Exception):
        pass

    def kill_at_17(step, loss):
        if step == 17:
            raise Killed

    broken = tmp_path / "broken"
    with pytest.raises(Killed):
        train_converter(tiny_corpus, broken, preset="tiny", settings=dict(settings),
                        progress=False, on_step=kill_at_17)
    train_converter(tiny_corpus, broken, preset="tiny", settings=dict(settings), resume=True,
                    progress=False)

    def losses(run):
        rows = [json.loads(r) for r in (run / "history.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if "loss" in r]

    assert losses(broken) == losses(whole)
    assert len(losses(whole)) == 30


def test_lstm_architecture_trains(tiny_corpus, tmp_path):
    settings = dict(TINY_SETTINGS, max_steps=20, eval_every=20, arch="lstm-attention")
    summary = train_converter(tiny_corpus, tmp_path, preset="tiny", settings=settings,
                              progress=False)
    model, _ = load_pretrained(PinziForPinyin, str(tmp_path))
    assert model.config.arch == "lstm-attention"
    assert summary["steps"] == 20


@pytest.mark.parametrize(("settings", "message"), [
    ({"learning_rat": 0.1}, "did you mean 'learning_rate'"),
    ({"max_steps": "many"}, "max_steps"),
    ({"hidden_sise": 10}, "did you mean 'hidden_size'"),
    ({"hidden_size": 30, "num_heads": 4}, "not divisible"),
    ({"arch": "rnn"}, "unknown arch"),
])
def test_bad_settings_are_clear_errors(tiny_corpus, tmp_path, settings, message):
    with pytest.raises(TrainingError, match=message):
        train_converter(tiny_corpus, tmp_path, preset="tiny", settings=settings, progress=False)


def test_missing_or_foreign_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(TrainingError, match="not a prepared dataset"):
        train_converter(tmp_path, tmp_path / "out", preset="tiny", progress=False)
    (tmp_path / "chars.tsv").write_text("中\t1\n")
    with pytest.raises(TrainingError, match="damaged or incomplete"):
        train_converter(tmp_path, tmp_path / "out", preset="tiny", progress=False)


def test_resume_without_checkpoint_is_a_clear_error(tiny_corpus, tmp_path):
    with pytest.raises(TrainingError, match="no checkpoint"):
        train_converter(tiny_corpus, tmp_path, preset="tiny", resume=True, progress=False)


def test_config_files(tmp_path):
    (tmp_path / "a.yaml").write_text("train:\n  learning_rate: 0.01\nmax_steps: 5\n")
    (tmp_path / "b.toml").write_text("[noise]\nall_pinyin = 0.2\n")
    assert read_config_file(tmp_path / "a.yaml") == {"learning_rate": 0.01, "max_steps": 5}
    assert read_config_file(tmp_path / "b.toml") == {"all_pinyin": 0.2}
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(TrainingError, match="not valid"):
        read_config_file(tmp_path / "bad.yaml")


def test_learning_rate_warms_up_then_decays():
    cfg = TrainConfig(warmup_steps=10, max_steps=110)
    factors = np.array([lr_factor(s, cfg) for s in range(110)])
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert np.all(np.diff(factors[10:]) <= 1e-12) and factors[-1] == pytest.approx(0.1, abs=0.01)
