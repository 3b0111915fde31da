"""The one training loop (pinzi.train) on a toy task: early stopping, the time limit,
gradient accumulation, the learning-rate schedule, the best model and the run folder."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from pinzi.errors import TrainingError
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


# ---- faults: a full disk, damaged checkpoints, interruptions ------------------------------------
def steps_logged(out: Path) -> list[int]:
    lines = (out / "history.jsonl").read_text().splitlines()
    return [json.loads(r)["step"] for r in lines if "loss" in json.loads(r)]


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob("*") if p.name.endswith((".tmp", ".old")))


def resume_run(out: Path, task=None, **settings) -> tuple[dict, list[int]]:
    """Resume the run in ``out``; returns the summary and the steps this call trained."""
    steps: list[int] = []
    cfg = TrainConfig(**{"learning_rate": 0.05, "warmup_steps": 1, "eval_every": 1,
                         "save_every": 1, "log_every": 1, "grad_clip": 0, **settings})
    summary = train(Line(), task or LineTask(4), cfg, out, resume=True, progress=False,
                    on_step=lambda step, loss: steps.append(step))
    return summary, steps


@pytest.fixture
def disk(monkeypatch):
    """A disk that can be made full: then every file write stops half-way with ENOSPC."""
    state = SimpleNamespace(full=False)
    write_bytes = Path.write_bytes

    def writing(path, data):
        if state.full:
            write_bytes(path, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", writing)
    return state


def test_a_full_disk_stops_the_run_cleanly_and_resume_goes_on_once_there_is_space(tmp_path,
                                                                                  disk):
    def fill_disk_at_3(step, loss):
        disk.full = step == 3 or disk.full

    cfg = TrainConfig(learning_rate=0.05, warmup_steps=1, eval_every=1, save_every=1,
                      log_every=1, grad_clip=0, max_steps=6)
    with pytest.raises(TrainingError, match=r"the disk is full .*the last good checkpoint "
                                            r"\(.*step-00000002\) is untouched: free space and "
                                            r"run again with --resume"):
        train(Line(), LineTask(4), cfg, tmp_path, progress=False, on_step=fill_disk_at_3)
    assert leftovers(tmp_path) == []  # the half-written step-3 folder is gone
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-00000002"
    with pytest.raises(TrainingError, match="the disk is full"):  # still full: the same message
        resume_run(tmp_path, max_steps=6)
    assert leftovers(tmp_path) == []
    disk.full = False
    summary, steps = resume_run(tmp_path, max_steps=6)
    assert steps == [3, 4, 5, 6] and summary["steps"] == 6
    assert steps_logged(tmp_path) == [1, 2, 3, 4, 5, 6]


def test_a_full_disk_while_saving_the_best_model_keeps_the_previous_one(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    task = LineTask(4)
    saves = []

    def save(model, directory):  # safetensors reports a full disk as its own error
        saves.append(directory)
        if len(saves) == 2:
            (directory / "model.safetensors").write_bytes(b"half")
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: '
                                  'StorageFull, message: "No space left on device" })')
        LineTask.save(task, model, directory)

    monkeypatch.setattr(task, "save", save)
    with pytest.raises(TrainingError, match="the disk is full"):
        run(tmp_path, task, max_steps=4)
    assert leftovers(tmp_path) == [] and (tmp_path / "best" / "model.safetensors").is_file()


def checkpoint_of(tmp_path: Path) -> Path:
    run(tmp_path, LineTask(4), max_steps=4)
    return tmp_path / "checkpoints" / "step-00000004"


class Pickled:
    """A class that a weights-only load refuses to build."""


@pytest.mark.parametrize("damage", ["truncated weights", "pickled optimizer",
                                    "another model's optimizer", "bad state"])
def test_a_damaged_checkpoint_is_named_on_resume(tmp_path, damage):
    step = checkpoint_of(tmp_path)
    if damage == "truncated weights":
        weights = step / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-8])
    elif damage == "pickled optimizer":
        torch.save({"optimizer": Pickled()}, step / "optimizer.pt")
    elif damage == "another model's optimizer":
        other = torch.optim.AdamW(nn.Linear(3, 3).parameters())
        extra = torch.load(step / "optimizer.pt", weights_only=True)
        torch.save({**extra, "optimizer": other.state_dict()}, step / "optimizer.pt")
    else:
        (step / "state.json").write_text('{"step": 4, "epoch"')
    with pytest.raises(TrainingError, match=r"checkpoint .*step-00000004 is damaged \(.*\): "
                                            r"remove it to resume from the one before"):
        resume_run(tmp_path, max_steps=6)


def test_resume_takes_the_newest_intact_checkpoint_of_this_run_only(tmp_path):
    checkpoints = checkpoint_of(tmp_path / "run").parent
    shutil.rmtree(checkpoints / "step-00000004")  # `latest` names a folder that is gone
    assert resume_run(tmp_path / "run", max_steps=6)[1] == [4, 5, 6]
    run(tmp_path / "other", LineTask(4), max_steps=2)
    (checkpoints / "latest").write_text("../../other/checkpoints/step-00000002\n")
    assert resume_run(tmp_path / "run", max_steps=8)[1] == [7, 8]  # its own step 6, not 2


def test_a_history_line_torn_by_the_interruption_is_cut_on_resume(tmp_path):
    checkpoint_of(tmp_path)
    with open(tmp_path / "history.jsonl", "a") as history:
        history.write('{"step": 5, "loss": 0.1')  # the process died mid-row
    resume_run(tmp_path, max_steps=6)
    assert steps_logged(tmp_path) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_run_says_where_its_checkpoint_and_best_model_are(tmp_path, capsys,
                                                                         how):
    def stop_at_3(step, loss):
        if step == 3 and how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        elif step == 3:
            raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGTERM)
    cfg = TrainConfig(learning_rate=0.05, warmup_steps=1, eval_every=2, save_every=2,
                      log_every=1, grad_clip=0, max_steps=10)
    with pytest.raises(KeyboardInterrupt):
        train(Line(), LineTask(4), cfg, tmp_path, progress=False, on_step=stop_at_3)
    message = " ".join(capsys.readouterr().err.split())
    assert f"interrupted at step 3: the last checkpoint is {tmp_path}/checkpoints/step-00000002 " \
           f"(continue with --resume); the best model so far is in {tmp_path}/best" in message
    assert signal.getsignal(signal.SIGTERM) == before  # the run's handler is gone with it
