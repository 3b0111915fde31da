"""Copy a trained converter into the package (src/pinzi/resources/model/) with float16 weights,
and export it beside them as an int8 ONNX graph for the onnxruntime backend.

    python scripts/ship_model.py RUN_DIR

Half precision halves the download; the PyTorch backend loads the weights back as float32.
The int8 graph (5 MB) is what `pinzi convert` runs by default: several times faster than
PyTorch on a CPU, with the same accuracy on validation text (see docs/model_card.md).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from pinzi.decoding_config import DECODING_FILE
from pinzi.export import export_onnx
from pinzi.hub import shipped_model_path
from pinzi.model import PinziForPinyin, load_pretrained
from pinzi.tokenizer import TOKENIZER_CONFIG_FILE

SHIPPED_FILES = ("vocab.json", TOKENIZER_CONFIG_FILE, "ngram.npz", DECODING_FILE)


def main(run_dir: str) -> None:
    model, _ = load_pretrained(PinziForPinyin, run_dir)
    target = Path("src/pinzi/resources/model")
    if not target.parent.exists():
        target = shipped_model_path()
    shutil.rmtree(target, ignore_errors=True)
    model.to(torch.float16).save_pretrained(target)
    for name in SHIPPED_FILES:
        if (Path(run_dir) / name).exists():
            shutil.copy(Path(run_dir) / name, target / name)
    export_onnx(target, target, quantize="int8")
    size = sum(f.stat().st_size for f in target.iterdir()) / 1e6
    print(f"shipped {run_dir} -> {target} ({size:.1f} MB)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
