"""The one training loop (pinzi.train) on a toy task: early stopping, the time limit,
gradient accumulation, the learning-rate schedule, the best model and the run folder."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from pinzi.train import TrainConfig, lr_factor, train

X = torch.linspace(-1, 1, 16)[:, None]
Y = 2 * X + 1


class Line(nn.Module):
    """y = w x + b, trained by mean squared error."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fit = nn.Linear(1, 1)

    def forward(self, x, y, attention_mask):
        return SimpleNamespace(loss=F.mse_loss(self.fit(x), y))


class LineTask:
    """Batches of ``size`` points in order; the validation figure is scripted when given."""

    metric = "score"

    def __init__(self, size: int, scores: list[float] | None = None):
        self.size, self.scores, self.evaluations = size, scores, 0

    def batches(self, epoch: int) -> list[np.ndarray]:
        return [np.arange(i, i + self.size) for i in range(0, len(X), self.size)]

    def make_batch(self, rows, key) -> dict[str, torch.Tensor]:
        return {"x": X[rows], "y": Y[rows], "attention_mask": torch.ones(len(rows), 1)}

    def evaluate(self, model) -> dict[str, float]:
        loss = float(F.mse_loss(model.fit(X), Y))
        score = self.scores[self.evaluations] if self.scores else -loss
        self.evaluations += 1
        return {"loss": loss, "score": score}

    def save(self, model, directory: Path) -> None:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(directory / "model.safetensors"))


def run(tmp_path: Path, task: LineTask, **settings) -> tuple[dict, Line]:
    model = Line()
    cfg = TrainConfig(**{"learning_rate": 0.05, "warmup_steps": 1, "eval_every": 1,
                         "save_every": 1, "log_every": 1, "grad_clip": 0, **settings})
    return train(model, task, cfg, tmp_path, progress=False), model


def test_patience_stops_after_evaluations_without_improvement(tmp_path):
    summary, _ = run(tmp_path, LineTask(4, scores=[0.5, 0.7, 0.6, 0.7, 0.65, 0.9]), max_steps=10,
                     patience=3)
    assert summary["stop"] == "early_stopping" and summary["steps"] == 5
    assert summary["best_score"] == 0.7


def test_no_patience_runs_every_step(tmp_path):
    summary, _ = run(tmp_path, LineTask(4, scores=[0.5] * 6), max_steps=6, patience=0)
    assert summary["stop"] == "max_steps" and summary["steps"] == 6


def test_max_minutes_stops_with_a_checkpoint_and_the_best_model(tmp_path):
    summary, model = run(tmp_path, LineTask(4), max_steps=1000, max_minutes=1e-9)
    assert summary["stop"] == "max_minutes" and summary["steps"] == 1
    latest = (tmp_path / "checkpoints" / "latest").read_text().strip()
    assert latest == "step-00000001"
    best = load_file(str(tmp_path / "model.safetensors"))  # published into the run folder
    assert torch.equal(best["fit.weight"], model.fit.weight.detach())


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    _, accumulated = run(tmp_path / "a", LineTask(4), max_steps=3, grad_accum=2)
    _, big = run(tmp_path / "b", LineTask(8), max_steps=3, grad_accum=1)
    _, small = run(tmp_path / "c", LineTask(4), max_steps=3, grad_accum=1)
    torch.testing.assert_close(accumulated.fit.weight, big.fit.weight)
    assert not torch.allclose(small.fit.weight, big.fit.weight)  # the test can tell them apart


def test_the_run_folder_keeps_the_best_model_and_the_history(tmp_path):
    summary, _ = run(tmp_path, LineTask(4), max_steps=40, keep_checkpoints=2, learning_rate=0.2)
    rows = [json.loads(r) for r in (tmp_path / "history.jsonl").read_text().splitlines()]
    valid = [r["valid_loss"] for r in rows if "valid_loss" in r]
    assert valid[-1] < valid[0] / 10 and summary["best_score"] == pytest.approx(-min(valid))
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == \
        ["step-00000039", "step-00000040"]
    assert summary["tokens"] == 40 * 4
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_learning_rate_warms_up_then_decays():
    cfg = TrainConfig(warmup_steps=10, max_steps=110)
    factors = np.array([lr_factor(s, cfg) for s in range(110)])
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert np.all(np.diff(factors[10:]) <= 1e-12) and factors[-1] == pytest.approx(0.1, abs=0.01)


def test_a_warmup_under_one_is_a_share_of_the_steps():
    assert TrainConfig(warmup_steps=0.1, max_steps=1000).warmup == 100
    assert TrainConfig(warmup_steps=0.1, max_steps=5).warmup == 1
    assert TrainConfig(warmup_steps=30, max_steps=1000).warmup == 30
