"""Shared fixtures: a 20-sentence corpus, prepared once, and a tiny converter trained on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Small models gain nothing from intra-op threads, and on a busy machine two threads that
# wait for each other make every forward pass many times slower.
torch.set_num_threads(1)

SENTENCES = [
    "我爱北京天安门", "今天天气很好", "我们去公园玩吧", "中国人民银行发布了新的政策",
    "他在银行工作", "你好世界", "学习使我快乐", "明天会更好", "北京是中国的首都",
    "我想去上海旅游", "这本书很有意思", "春天来了花开了", "请问洗手间在哪里", "我喜欢吃苹果",
    "火车站怎么走", "他们正在开会", "经济发展很快", "孩子们在操场上跑步", "晚上一起吃饭吧",
    "祝你生日快乐",
]

# Settings under which the tiny model learns SENTENCES completely within a few seconds.
TINY_SETTINGS = dict(max_steps=250, eval_every=50, save_every=50, batch_tokens=512,
                     learning_rate=3e-3, warmup_steps=10, dropout=0.0, all_pinyin=0.8,
                     log_every=10, preset="tiny")


def write_tsv(path: Path, rows, header: str = "label\ttext") -> Path:
    """A labelled table: the header line, then one TAB-joined line per row."""
    path.write_text(header + "\n" + "".join("\t".join(row) + "\n" for row in rows),
                    encoding="utf-8")
    return path


def random_pinzi_base(out: Path, texts) -> Path:
    """A tiny random pinzi encoder folder over the characters of ``texts``, as `pinzi
    pretrain` writes one: a classifier's base."""
    from pinzi.model import PinziConfig, PinziForPinyin
    from pinzi.tokenizer import PinziTokenizer

    tokenizer = PinziTokenizer(sorted({c for text in texts for c in text}))
    config = PinziConfig.from_preset("tiny", vocab_size=tokenizer.vocab_size, dropout=0.0,
                                     char_offset=tokenizer.char_offset, n_chars=tokenizer.n_chars)
    torch.manual_seed(0)
    PinziForPinyin(config).save_pretrained(out)
    tokenizer.save(out)
    return out


# The classification test modules define TRAIN and DEV rows (label, text); these two fixtures
# give each module its rows as labelled tables, and classifier bases over their characters.
@pytest.fixture(scope="module")
def files(tmp_path_factory, request) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("labelled")
    return {"train": write_tsv(root / "train.tsv", request.module.TRAIN),
            "dev": write_tsv(root / "dev.tsv", request.module.DEV)}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, request) -> Path:
    return random_pinzi_base(tmp_path_factory.mktemp("pinzi-base"),
                             [text for _, text in request.module.TRAIN + request.module.DEV])


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, request) -> Path:
    """A tiny BERT encoder + BertTokenizer vocab.txt over the module's characters, loaded by
    path like any hub encoder."""
    from transformers import BertConfig, BertModel, BertTokenizer

    out = tmp_path_factory.mktemp("bert-base")
    chars = sorted({c for _, text in request.module.TRAIN + request.module.DEV for c in text})
    (out / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                              *chars]) + "\n", encoding="utf-8")
    BertTokenizer(str(out / "vocab.txt")).save_pretrained(out)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=5 + len(chars), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=64)).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """SENTENCES prepared by the real pipeline, with valid = train (the goal is to learn them)."""
    import shutil

    from pinzi.corpus import CHARS_FILE, SPLITS, CorpusWriter, load_prepared
    from pinzi.data import prepare

    root = tmp_path_factory.mktemp("corpus")
    (root / "train.txt").write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    prepare([str(root / "train.txt")], root / "prepared", num_workers=1, progress=False)
    train = load_prepared(root / "prepared")["train"]
    out = root / "learn"
    with CorpusWriter(out) as writer:
        for split in SPLITS:
            writer.add(split, train.rows())
    shutil.copy(root / "prepared" / CHARS_FILE, out / CHARS_FILE)
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_corpus, tmp_path_factory) -> Path:
    """A tiny converter trained on SENTENCES (about ten seconds)."""
    from pinzi.pretrain import pretrain

    out = tmp_path_factory.mktemp("tiny-model")
    summary = pretrain(tiny_corpus, out, settings=dict(TINY_SETTINGS), progress=False)
    assert summary["best_char_acc"] == 1.0
    return out


# A few steps with a high learning rate: enough to move every adapter weight. One batch a
# step, where fine-tuning's defaults accumulate several.
QUICK = dict(max_steps=12, eval_every=6, save_every=6, batch_tokens=512, warmup_steps=2,
             learning_rate=1e-2, log_every=3, grad_accum=1)


@pytest.fixture(scope="session")
def lora_run(tiny_model, tiny_corpus, tmp_path_factory):
    """A LoRA adapter of the tiny model (its folder) and the fine-tuning report."""
    from pinzi.finetune import finetune

    out = tmp_path_factory.mktemp("lora")
    report = finetune(tiny_model, tiny_corpus, out, lora=True,
                      settings=dict(QUICK, rank=4, alpha=8), general_test=[], eval_limit=8,
                      progress=False)
    return out, report
