"""The one training loop of pinzi: pretraining, domain fine-tuning and classification all run here.

It is built on `accelerate`, so the same code runs on this CPU, one GPU, or many GPUs and
machines (``accelerate launch -m pinzi.cli pretrain ...`` or ``torchrun``). A *task* supplies the
data and the metrics (see :class:`Task`); the loop supplies AdamW with weight decay, warmup then
cosine decay, gradient accumulation and clipping, periodic validation, early stopping, the best
model, atomic checkpoints with exact resume, a rich progress bar, TensorBoard logs and a PNG of
the curves.

Run folder layout::

    OUT/                      the best model (config.json, model.safetensors, vocab.json)
    OUT/checkpoints/step-N/   resumable state; OUT/checkpoints/latest names the newest good one
    OUT/history.jsonl         one JSON row per log or eval
    OUT/tensorboard/          TensorBoard event files
    OUT/curves.png            loss and metric curves, drawn at the end

One process writes a run folder at a time (:func:`pinzi.io.exclusive`); a full disk, a damaged
checkpoint or an interruption ends a run with a message that says what was kept.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import math
import os
import pickle
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import get_int_from_env, set_seed
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from pinzi.errors import OutputError, TrainingError
from pinzi.io import exclusive, write_atomic, write_dir_atomic
from pinzi.plots import plot_history


@dataclass
class TrainConfig:
    """The ``train`` section of every training job's settings."""

    learning_rate: float = 1e-3  # the peak, reached after the warmup
    weight_decay: float = 0.01
    warmup_steps: float = 200  # steps of linear warmup; under 1: a share of max_steps
    max_steps: int = 2000
    max_minutes: float = 0.0  # stop (and keep the best model) after this wall time; 0 = no limit
    batch_tokens: int = 8192  # tokens per batch (padded), per process
    grad_accum: int = 1
    grad_clip: float = 1.0
    eval_every: int = 250
    save_every: int = 250
    keep_checkpoints: int = 2
    patience: int = 0  # evaluations without improvement before stopping; 0 = never stop early
    log_every: int = 10
    seed: int = 1234
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on a GPU with it

    @property
    def warmup(self) -> int:
        """The warmup in steps (at least 1)."""
        steps = self.warmup_steps * self.max_steps if self.warmup_steps < 1 else self.warmup_steps
        return max(1, int(steps))


class Task(Protocol):
    """What a training job must provide to :func:`train`."""

    metric: str  # name of the validation metric to maximise (e.g. "char_acc")

    def batches(self, epoch: int) -> list[Any]:
        """The epoch's batch descriptions in order; a pure function of (seed, epoch)."""

    def make_batch(self, description: Any, key: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """Materialise one batch; any randomness comes from ``key`` alone (exact resume)."""

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation figures, including ``loss`` and ``self.metric``."""

    def save(self, model: nn.Module, directory: Path) -> None:
        """Write a loadable model (weights, config, vocabulary) into ``directory``."""


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_index: int = 0  # next batch of `epoch` to consume
    tokens: int = 0
    best_metric: float = -math.inf
    evals_without_improvement: int = 0


# ---- optimisation -------------------------------------------------------------------------------
def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and embeddings (the usual GPT/BERT recipe)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and "embed" not in name else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.98), eps=1e-8)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to 1, then cosine decay to 10% at max_steps."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.max_steps - cfg.warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


_STEP_NAME = re.compile(r"step-\d{8}")


class Checkpoints:
    """``checkpoints/step-N/`` folders plus a ``latest`` pointer that is replaced atomically,
    so a crash while writing step N leaves step N-1 as the checkpoint to resume from."""

    def __init__(self, root: Path, keep: int):
        self.root, self.keep = root, max(1, keep)

    def latest(self) -> Path | None:
        """The folder ``latest`` names, else the newest ``step-N`` folder (the pointer may be
        lost, or name a folder gone). The pointer holds a bare ``step-N`` name, so whatever it
        says, the checkpoint is one of this run's."""
        pointer = self.root / "latest"
        name = pointer.read_text().strip() if pointer.is_file() else ""
        if _STEP_NAME.fullmatch(name) and (self.root / name).is_dir():
            return self.root / name
        return self.steps()[-1] if self.steps() else None

    def steps(self) -> list[Path]:
        return sorted(p for p in self.root.glob("step-*")
                      if _STEP_NAME.fullmatch(p.name) and p.is_dir())

    def save(self, step: int, fill: Callable[[Path], None]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_dir_atomic(self.root / f"step-{step:08d}", fill)
        write_atomic(self.root / "latest", f"step-{step:08d}\n".encode())
        for old in self.steps()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, state: TrainState) -> None:
    # Serialised in memory, written by Python: a full disk is then an OSError (ENOSPC) like
    # any other write, not a safetensors or torch error of its own.
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    (directory / "model.safetensors").write_bytes(save(weights))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    extra = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng}, extra)
    (directory / "optimizer.pt").write_bytes(extra.getvalue())
    (directory / "state.json").write_text(json.dumps(dataclasses.asdict(state)))


# What reading a truncated, foreign or mismatched checkpoint file raises.
_DAMAGED = (OSError, EOFError, ValueError, RuntimeError, KeyError, IndexError, TypeError,
            AttributeError, pickle.UnpicklingError, SafetensorError)


def load_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler) -> TrainState:
    try:
        model.load_state_dict(load((directory / "model.safetensors").read_bytes()))
        # weights_only: tensors and plain containers only, never arbitrary pickled objects
        extra = torch.load(directory / "optimizer.pt", weights_only=True)
        state = TrainState(**json.loads((directory / "state.json").read_text()))
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        torch.set_rng_state(extra["rng"]["cpu"])
        if "cuda" in extra["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(extra["rng"]["cuda"])
    except _DAMAGED as err:
        reason = str(err).splitlines()[0] if str(err) else ""
        raise TrainingError(f"checkpoint {directory} is damaged ({type(err).__name__}: "
                            f"{reason}): remove it to resume from the one before, or start "
                            "again with --overwrite") from err
    return state


# ---- the run folder -----------------------------------------------------------------------------
@contextmanager
def run_folder(out: str | Path, *, resume: bool, overwrite: bool = False) -> Iterator[Path]:
    """Hold the run folder ``out`` for a run that starts here (a training job's whole body).

    A second process is refused (:func:`pinzi.io.exclusive`). A fresh start over an earlier
    run is refused too, unless ``overwrite``, which clears that run first (its checkpoints
    would be mistaken for this one's); ``resume`` continues it. A full disk becomes a
    :class:`TrainingError` that says what is kept.
    """
    out = Path(out)
    with _held(out) as held, _disk_full_is_clear(out):
        earlier = held is not None and (
            (out / "history.jsonl").exists() or (out / "best").exists()
            or Checkpoints(out / "checkpoints", 1).latest() is not None)
        if earlier and not resume and not overwrite:
            raise OutputError(f"{out} already holds a training run: continue it with --resume, "
                              "replace it with --overwrite, or choose another --out")
        if earlier and not resume:
            _clear_run(out)
        yield out


def _held(out: Path):
    """The folder's lock (yielding it), taken by the process that writes the folder: rank 0 as
    the launchers set it (an Accelerator made this early would fix its settings too soon)."""
    rank = get_int_from_env(["RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMI_RANK"], 0)
    return exclusive(out) if rank == 0 else nullcontext(None)


def _clear_run(out: Path) -> None:
    """Remove an earlier run: its published model (named as in ``best``) and its own entries."""
    best = out / "best"
    published = [out / item.name for item in best.iterdir()] if best.is_dir() else []
    own = ("history.jsonl", "best", "checkpoints", "tensorboard", "curves.png")
    for path in [*published, *(out / name for name in own)]:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@contextmanager
def _disk_full_is_clear(out: Path) -> Iterator[None]:
    try:
        yield
    except (OSError, SafetensorError) as err:  # safetensors (Rust) says the OS error in words
        full = (errno.ENOSPC, errno.EDQUOT)
        if getattr(err, "errno", None) not in full \
                and not any(os.strerror(code) in str(err) for code in full):
            raise
        latest = Checkpoints(out / "checkpoints", 1).latest()
        kept = (f"the last good checkpoint ({latest}) is untouched: free space and run again "
                "with --resume" if latest else "no checkpoint yet: free space and run again")
        where = getattr(err, "filename", None) or out
        raise TrainingError(f"the disk is full (writing {where}); {kept}") from err


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's stop, ``kill``) ends the run as Ctrl-C does: with a message."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    main = threading.current_thread() is threading.main_thread()  # the one signals reach
    previous = signal.signal(signal.SIGTERM, interrupt) if main else None
    try:
        yield
    finally:
        if main:  # previous None: a handler not set from Python
            signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)


@contextmanager
def _interruption_said(out: Path, checkpoints: Checkpoints, state: TrainState,
                       is_main: bool) -> Iterator[None]:
    """On Ctrl-C (or SIGTERM), say where the last checkpoint and the best model are."""
    try:
        yield
    except KeyboardInterrupt:
        if is_main:
            latest = checkpoints.latest()
            kept = (f"the last checkpoint is {latest} (continue with --resume)" if latest
                    else "no checkpoint was saved yet")
            best = (f"the best model so far is in {out / 'best'}" if (out / "best").is_dir()
                    else "no best model yet")
            Console(stderr=True).print(f"interrupted at step {state.step}: {kept}; {best}",
                                       highlight=False, soft_wrap=True)
        raise


# ---- the loop -----------------------------------------------------------------------------------
def _mixed_precision(requested: str) -> str:
    if requested != "auto":
        return requested
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _endless_batches(task: Task, state: TrainState, rank: int, world: int) -> Iterator[tuple]:
    """(epoch, index, description) from the resume position on; each process takes its share."""
    while True:
        batches = task.batches(state.epoch)
        if len(batches) < world:  # some process would wait for a batch forever
            raise TrainingError(f"an epoch has {len(batches)} batch(es), fewer than the {world} "
                                "processes: use a smaller batch_tokens or fewer processes")
        for index in range(state.batch_index, len(batches)):
            if index % world == rank:
                yield state.epoch, index, batches[index]
        state.epoch, state.batch_index = state.epoch + 1, 0


def train(model: nn.Module, task: Task, cfg: TrainConfig, out_dir: str | Path, *,
          resume: bool = False, progress: bool = True,
          on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train ``model`` on ``task``; returns a summary (steps, best metric, timings).

    ``on_step(step, loss)`` is called after every optimiser step (tests use it to interrupt).
    Ctrl-C and SIGTERM stop it with a message on what is kept (then KeyboardInterrupt).
    """
    out = Path(out_dir)
    with _held(out), _disk_full_is_clear(out), _sigterm_as_interrupt():
        return _train(model, task, cfg, out, resume, progress, on_step)


def _train(model, task, cfg, out, resume, progress, on_step) -> dict[str, Any]:
    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg.mixed_precision),
                              gradient_accumulation_steps=cfg.grad_accum)
    set_seed(cfg.seed)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    model, optimizer = accelerator.prepare(model, optimizer)
    checkpoints = Checkpoints(out / "checkpoints", cfg.keep_checkpoints)
    history_path = out / "history.jsonl"

    state = TrainState()
    if resume:
        latest = checkpoints.latest()
        if latest is None:
            raise TrainingError(f"--resume: no checkpoint in {checkpoints.root}")
        state = load_checkpoint(latest, accelerator.unwrap_model(model), optimizer, scheduler)
        _truncate_history(history_path, state.step)
    elif history_path.exists():
        history_path.unlink()

    is_main = accelerator.is_main_process
    writer = _tensorboard(out) if is_main else None
    bar = _progress_bar(cfg.max_steps, enabled=progress and is_main)
    stream = _endless_batches(task, state, accelerator.process_index, accelerator.num_processes)
    started, window_tokens, window_start, stop_reason = time.time(), 0, time.time(), "max_steps"
    model.train()
    with _interruption_said(out, checkpoints, state, is_main), bar:
        bar_task = bar.add_task("training", total=cfg.max_steps, completed=state.step,
                                loss=math.nan, speed=0.0)
        while state.step < cfg.max_steps:
            loss_sum, step_tokens = 0.0, 0
            for _ in range(cfg.grad_accum):
                epoch, index, description = next(stream)
                batch = {k: v.to(accelerator.device)
                         for k, v in task.make_batch(description, (cfg.seed, epoch, index)).items()}
                with accelerator.accumulate(model):
                    loss = model(**batch).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.grad_clip > 0:
                        accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                loss_sum += loss.item()
                step_tokens += int(batch["attention_mask"].sum()) * accelerator.num_processes
                # Round up to whole rounds of the world so every process resumes in step.
                world = accelerator.num_processes
                state.batch_index = (index // world + 1) * world
            scheduler.step()
            state.step += 1
            loss_value = loss_sum / cfg.grad_accum
            state.tokens += step_tokens
            window_tokens += step_tokens
            if on_step is not None:
                on_step(state.step, loss_value)
            if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
                speed = window_tokens / max(1e-9, time.time() - window_start)
                row = {"step": state.step, "loss": loss_value, "lr": scheduler.get_last_lr()[0],
                       "tokens_per_s": speed}
                _log(history_path, writer, row, is_main)
                bar.update(bar_task, loss=loss_value, speed=speed)
                window_tokens, window_start = 0, time.time()
            bar.update(bar_task, completed=state.step)
            evaluate_now = state.step % cfg.eval_every == 0 or state.step == cfg.max_steps
            if evaluate_now and _evaluate_and_keep_best(model, task, state, accelerator, out,
                                                        history_path, writer, cfg):
                stop_reason = "early_stopping"
            timed_out = cfg.max_minutes > 0 and time.time() - started > 60 * cfg.max_minutes
            save_now = state.step % cfg.save_every == 0 or stop_reason != "max_steps" or timed_out
            if save_now and is_main:
                _save_checkpoint(checkpoints, state, accelerator, model, optimizer, scheduler)
            if stop_reason != "max_steps":
                break
            if timed_out:
                stop_reason = "max_minutes"
                break
    if state.best_metric == -math.inf:  # never evaluated: keep the final weights
        _evaluate_and_keep_best(model, task, state, accelerator, out, history_path, writer, cfg)
    if is_main:
        _publish_best(out)
        if writer is not None:
            writer.close()
        plot_history(history_path, out / "curves.png", task.metric)
    return {"steps": state.step, "best_" + task.metric: state.best_metric, "stop": stop_reason,
            "minutes": (time.time() - started) / 60, "tokens": state.tokens}


def _evaluate_and_keep_best(model, task, state, accelerator, out, history_path, writer,
                            cfg) -> bool:
    """Validate, keep the best model in OUT/best; True when early stopping says stop."""
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    with torch.no_grad():
        figures = task.evaluate(unwrapped)
    unwrapped.train()
    row = {"step": state.step, **{f"valid_{k}": v for k, v in figures.items()}}
    _log(history_path, writer, row, accelerator.is_main_process)
    if figures[task.metric] > state.best_metric:
        state.best_metric, state.evals_without_improvement = figures[task.metric], 0
        if accelerator.is_main_process:
            write_dir_atomic(out / "best", lambda d: task.save(unwrapped, d))
    else:
        state.evals_without_improvement += 1
    return cfg.patience > 0 and state.evals_without_improvement >= cfg.patience


def _save_checkpoint(checkpoints, state, accelerator, model, optimizer, scheduler) -> None:
    unwrapped = accelerator.unwrap_model(model)
    checkpoints.save(state.step,
                     lambda d: save_checkpoint(d, unwrapped, optimizer, scheduler, state))


def _publish_best(out: Path) -> None:
    """Copy the best model's files to the run folder itself, so ``--model OUT`` just works."""
    best = out / "best"
    for item in best.iterdir():
        write_atomic(out / item.name, item.read_bytes())


def _truncate_history(path: Path, step: int) -> None:
    """After a resume, cut the rows logged after the checkpoint (they will be logged again),
    from the first one on, or from a row torn by the interruption. The file is cut in place,
    which needs no free space."""
    if not path.exists():
        return
    keep = 0
    with open(path, "rb") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                break
            if not line.endswith(b"\n") or not isinstance(row, dict) \
                    or not row.get("step", step + 1) <= step:
                break
            keep += len(line)
    os.truncate(path, keep)


def _log(path: Path, writer, row: dict, is_main: bool) -> None:
    if not is_main:
        return
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    if writer is not None:
        for key, value in row.items():
            if key != "step":
                writer.add_scalar(key, value, row["step"])


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _progress_bar(total: int, enabled: bool):
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"),
                    TextColumn("{task.fields[speed]:,.0f} tok/s"), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), disable=not enabled,
                    console=Console(stderr=True))  # stdout is for results
