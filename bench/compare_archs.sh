#!/usr/bin/env bash
# The Transformer against the seed material's lstm-attention model: each trained from scratch on
# the same prepared text with the same recipe for the same wall time (one after the other, on an
# otherwise idle machine), then scored on the test sets with the network alone (no n-gram, no
# words, no reading prior) and with the full decoder of the shipped model (its decoding
# settings, the run's own trigram tables, the shipped word list). Prints the tables of
# bench/accuracy.py; `/usr/bin/time` gives each run's CPU time.
#
#     bash bench/compare_archs.sh [DATA_DIR] [MINUTES] [LIMIT]
#
# DATA_DIR: a `pinzi data prepare` folder (default work/general3, the stage-3 text); MINUTES of
# training per model (default 12); LIMIT clauses per test set (default 500).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-work/general3}
MINUTES=${2:-12}
LIMIT=${3:-500}
OUT=work/compare
SHIPPED=src/pinzi/resources/model
SETS=pku,cctv,cmrc_dev,kdconv,thu2020,weibo,zhihu
mkdir -p "$OUT"

for arch in transformer lstm-attention; do
  run="$OUT/$arch"
  /usr/bin/time -f "$arch: %e s wall, %U s user, %S s system, %M KB peak" \
    .venv/bin/pinzi pretrain --data "$DATA" --out "$run" --preset small --arch "$arch" \
    --config configs/default.yaml --set train.max_minutes="$MINUTES" \
    --set train.eval_every=100 --set train.save_every=100 --overwrite \
    2> >(tail -n 3 >&2) > "$run.summary.json"
  # The network alone: no n-gram tables, no word list, no reading prior.
  rm -rf "$run-alone" "$run-full"
  mkdir -p "$run-alone" "$run-full"
  cp "$run"/{config.json,model.safetensors,vocab.json,tokenizer_config.json} "$run-alone/"
  .venv/bin/python - "$run-alone" <<'EOF'
import sys
from pinzi.decoding_config import DecodingConfig
DecodingConfig(lm_weight=0, reading_prior=0, word_weight=0, word_fitting=0).save(sys.argv[1])
EOF
  # The full decoder: the run's trigram tables, the shipped word list and decoding settings.
  cp "$run"/{config.json,model.safetensors,vocab.json,tokenizer_config.json,ngram.npz} \
    "$run-full/"
  cp "$SHIPPED"/{words.tsv.gz,decoding_config.json} "$run-full/"
  for variant in alone full; do
    .venv/bin/python bench/accuracy.py --model "$run-$variant" --peers none --sets "$SETS" \
      --forms spaced --limit "$LIMIT" --out "$OUT/$arch-$variant.md"
  done
done
