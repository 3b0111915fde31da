"""Faults around writing: a second process on the same output folder, a run folder that already
holds a run, the modes of written files, and writes that fail half-way (a full disk is an
injected ENOSPC: no small filesystem is at hand)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from conftest import TINY_SETTINGS
from safetensors.torch import save_file
from test_train import Line, LineTask
from typer.testing import CliRunner

from pinzi import io
from pinzi.cli import app
from pinzi.errors import DataError, OutputError
from pinzi.hub import resolve_model
from pinzi.io import LOCK_FILE, MAX_LINE_BYTES, read_labelled, write_atomic, write_dir_atomic
from pinzi.pretrain import pretrain
from pinzi.train import TrainConfig, train

HOLD = """
import sys
from pinzi.io import exclusive
with exclusive(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes it
"""


@contextmanager
def held_by_another_process(folder: Path) -> Iterator[int]:
    """Another process holds ``folder`` (as a pinzi run writing there would); its pid."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


# ---- one writer per folder ----------------------------------------------------------------------
def test_a_second_data_prepare_on_the_same_out_is_refused_with_a_clear_message(tmp_path):
    (tmp_path / "a.txt").write_text("今天北京天气很好。\n", encoding="utf-8")
    out = tmp_path / "out"
    command = ["data", "prepare", str(tmp_path / "a.txt"), "--out", str(out), "--workers", "1"]
    with held_by_another_process(out) as pid:
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2
        assert f"being written by another pinzi process (process {pid})" in result.output
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written
    result = CliRunner().invoke(app, command)  # the lock ends with the process that held it
    assert result.exit_code == 0, result.output
    assert json.loads((out / "stats.json").read_text(encoding="utf-8"))["sentences"]["kept"] == 1


def test_a_second_training_run_on_the_same_out_is_refused(tmp_path):
    cfg = TrainConfig(max_steps=2, eval_every=1, save_every=1, log_every=1, warmup_steps=1)
    with held_by_another_process(tmp_path) as pid, pytest.raises(
            OutputError, match=f"another pinzi process \\(process {pid}\\)"):
        train(Line(), LineTask(4), cfg, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE]
    assert train(Line(), LineTask(4), cfg, tmp_path, progress=False)["steps"] == 2


# ---- a run folder that holds a run --------------------------------------------------------------
def test_pretrain_refuses_an_earlier_run_unless_resume_or_overwrite(tiny_corpus, tmp_path):
    quick = dict(TINY_SETTINGS, max_steps=3, eval_every=3, save_every=1, keep_checkpoints=5)
    pretrain(tiny_corpus, tmp_path, settings=quick, progress=False)
    (tmp_path / "notes.txt").write_text("mine\n")
    settings = (tmp_path / "settings.json").read_bytes()
    with pytest.raises(OutputError, match="already holds a training run: continue it with "
                                          "--resume, replace it with --overwrite"):
        pretrain(tiny_corpus, tmp_path, settings=dict(quick, seed=7), progress=False)
    assert (tmp_path / "settings.json").read_bytes() == settings  # refused before any write
    summary = pretrain(tiny_corpus, tmp_path, settings=dict(quick, max_steps=2, eval_every=2),
                       overwrite=True, progress=False)
    assert summary["steps"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == \
        ["step-00000001", "step-00000002"]  # none of the earlier run's step-3 is left
    rows = [json.loads(r) for r in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 2
    assert (tmp_path / "notes.txt").read_text() == "mine\n"  # not the run's: kept


def test_an_interrupted_runs_folder_finds_its_best_model(tmp_path):
    best = tmp_path / "run" / "best"
    best.mkdir(parents=True)
    (best / "config.json").write_text("{}")
    assert resolve_model(tmp_path / "run") == best  # the run never published its model
    (tmp_path / "run" / "config.json").write_text("{}")
    assert resolve_model(tmp_path / "run") == tmp_path / "run"


# ---- modes and failed writes --------------------------------------------------------------------
@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def modes(folder: Path) -> set[tuple[str, int]]:
    return {("dir" if p.is_dir() else "file", p.stat().st_mode & 0o777)
            for p in folder.rglob("*")}


@pytest.mark.parametrize("mask, file_mode", [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_get_the_modes_the_umask_gives(tmp_path, mask, file_mode):
    def fill(directory: Path) -> None:  # safetensors itself writes 0600 files
        save_file({"w": torch.zeros(2)}, str(directory / "model.safetensors"))
        (directory / "sub").mkdir()

    with umask(mask):
        write_dir_atomic(tmp_path / "model", fill)
        write_atomic(tmp_path / "model.json", b"{}")
        cfg = TrainConfig(max_steps=2, eval_every=1, save_every=1, log_every=1, warmup_steps=1)
        train(Line(), LineTask(4), cfg, tmp_path / "run", progress=False)
    dir_mode = 0o777 & ~mask
    assert modes(tmp_path / "model") == {("file", file_mode), ("dir", dir_mode)}
    assert (tmp_path / "model.json").stat().st_mode & 0o777 == file_mode
    assert modes(tmp_path / "run") <= {("file", file_mode), ("dir", dir_mode)}
    assert ("file", file_mode) in modes(tmp_path / "run" / "checkpoints")


def test_replacing_a_folder_never_leaves_it_missing(tmp_path, monkeypatch):
    target = tmp_path / "best"
    write_dir_atomic(target, lambda d: (d / "weights").write_text("old"))
    seen = []
    for name in ("replace", "rename"):  # every step of the swap looks at the folder
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda *a, real=real: seen.append(target.is_dir())
                            or real(*a))
    real_rmtree = shutil.rmtree
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: seen.append(target.is_dir())
                        or real_rmtree(*a, **k))
    write_dir_atomic(target, lambda d: (d / "weights").write_text("new"))
    assert (target / "weights").read_text() == "new" and all(seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_a_failed_write_leaves_the_old_file_or_folder_and_no_temporary(tmp_path, monkeypatch):
    write_atomic(tmp_path / "a.json", b"old")
    write_dir_atomic(tmp_path / "best", lambda d: (d / "w").write_text("old"))

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    def half_then_full(directory: Path) -> None:
        (directory / "w").write_text("ne")
        disk_full()

    with pytest.raises(OSError, match="No space"):
        write_dir_atomic(tmp_path / "best", half_then_full)
    monkeypatch.setattr(io.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_atomic(tmp_path / "a.json", b"new")
    assert (tmp_path / "a.json").read_bytes() == b"old"
    assert (tmp_path / "best" / "w").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "best"]


def test_a_labelled_table_line_of_many_megabytes_is_an_error_without_reading_it_whole(tmp_path):
    table = tmp_path / "train.tsv"
    table.write_bytes(b"text\tlabel\n" + b"x" * (24 << 20) + b"\t1\n")
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"train.tsv line 2: longer than 1,048,576 bytes"):
            read_labelled(table)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MAX_LINE_BYTES  # a piece of the line, never its 24 MB
