"""Copy a trained converter into the package (src/pinzi/resources/model/) with float16 weights.

    python scripts/ship_model.py RUN_DIR

Half precision halves the download; the converter loads the weights back as float32.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from pinzi.converter import shipped_model_path
from pinzi.model import PinziForPinyin, load_pretrained

SHIPPED_FILES = ("vocab.json", "ngram.npz")


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
    size = sum(f.stat().st_size for f in target.iterdir()) / 1e6
    print(f"shipped {run_dir} -> {target} ({size:.1f} MB)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
