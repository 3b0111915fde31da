"""Training on several processes: two CPU processes under `accelerate launch` run the one loop
for real, the processes agree, and the result is what one process gets from the same batches.

`accelerate launch --cpu --num_processes 2` starts ONE process (its --cpu takes the simple
launcher); two CPU processes take the torchrun launcher (--multi_gpu) with ACCELERATE_USE_CPU=1,
which is what docs/training.md documents and this test runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

# Each process trains a tiny converter, then writes the weights it ends with: they must be the
# same everywhere. Two steps of two batches each: the same batches whatever the world size.
SCRIPT = """
import sys
from pathlib import Path

import torch
from accelerate import PartialState
from safetensors.torch import save_file

from pinzi.corpus import CHARS_FILE, load_prepared
from pinzi.denoise import NoiseConfig, PinyinDenoisingTask, TokenTables
from pinzi.lexicon import Lexicon
from pinzi.model import ModelSettings, PinziForPinyin
from pinzi.tokenizer import PinziTokenizer
from pinzi.train import TrainConfig, train

data, out, accumulate = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
splits = load_prepared(data)
tokenizer = PinziTokenizer.from_counts(data / CHARS_FILE)
torch.manual_seed(0)
model = PinziForPinyin(ModelSettings(preset="tiny", dropout=0.0).config(tokenizer))
task = PinyinDenoisingTask(splits["train"].tokenized(tokenizer),
                           splits["valid"].tokenized(tokenizer), tokenizer,
                           TokenTables(tokenizer, Lexicon.default()), NoiseConfig(),
                           batch_tokens=32, seed=1)
cfg = TrainConfig(max_steps=2, eval_every=1, save_every=1, learning_rate=3e-3, warmup_steps=1,
                  batch_tokens=32, grad_accum=accumulate, log_every=1)
train(model, task, cfg, out, progress=False)
state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
save_file(state, str(out / f"rank-{PartialState().process_index}.safetensors"))
"""


@pytest.mark.slow
def test_two_processes_train_together(tiny_corpus, tmp_path):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    assert accelerate, "accelerate is a dependency: its launcher must be installed"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    two = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend",
                          "no", str(script), str(tiny_corpus), str(tmp_path / "two"), "1"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, str(script), str(tiny_corpus), str(tmp_path / "one"),
                          "2"], capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]

    rank0 = load_file(str(tmp_path / "two" / "rank-0.safetensors"))
    rank1 = load_file(str(tmp_path / "two" / "rank-1.safetensors"))
    single = load_file(str(tmp_path / "one" / "rank-0.safetensors"))
    first = load_file(str(tmp_path / "two" / "checkpoints" / "step-00000001"
                          / "model.safetensors"))
    for name, tensor in rank0.items():
        assert torch.equal(tensor, rank1[name]), f"the processes disagree on {name}"
        # Two processes of one batch each = one process accumulating the same two batches.
        torch.testing.assert_close(tensor, single[name], atol=1e-5, rtol=1e-4)
    assert any(not torch.equal(rank0[n], first[n]) for n in rank0)  # the second step trained
    history = (tmp_path / "two" / "history.jsonl").read_text().splitlines()
    assert sum('"loss"' in row for row in history) == 2  # one process logs, once a step
