"""Tests of the prepared-dataset format (pinzi.corpus): writing, reading, checking, tokenizing.

Run with ``.venv/bin/pytest tests/test_corpus.py``. Everything is built in tmp_path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pinzi.corpus import (
    CHARS_FILE,
    DATASET_FILE,
    FORMAT,
    CorpusWriter,
    Rows,
    TokenizedCorpus,
    load_prepared,
)
from pinzi.errors import TrainingError
from pinzi.pinyin import SYLLABLES
from pinzi.readings import annotate
from pinzi.tokenizer import PAD_ID, UNK_ID, PinziTokenizer

TEXTS = ["我爱北京天安门。", "今天天气很好，𠀀A！", "他在银行工作", "ok 好", "行"]


def write(out: Path, splits: dict[str, list[str]], syllables=None) -> Path:
    """A prepared dataset of ``splits`` (annotated with pypinyin unless given for train)."""
    with CorpusWriter(out, list(splits)) as writer:
        for split, texts in splits.items():
            flat = [s for t in texts for s in annotate(t)]
            if split == "train" and syllables is not None:
                flat = syllables
            writer.append(split, texts, flat)
    (out / CHARS_FILE).write_text("我\t1\n", encoding="utf-8")
    return out


def old_from_table(texts: list[str], pinyin: list[list[str]],
                   tokenizer: PinziTokenizer) -> TokenizedCorpus:
    """What TokenizedCorpus.from_table gave for the old Arrow format (the reference)."""
    pa = pytest.importorskip("pyarrow")
    pc = pytest.importorskip("pyarrow.compute")
    table = pa.table({"text": texts, "pinyin": pinyin})
    chars, syllables, lengths = [], [], []
    for batch in table.to_batches(max_chunksize=2):  # several batches, as a big corpus has
        text = batch.column("text")
        codepoints = np.frombuffer("".join(text.to_pylist()).encode("utf-32-le"), np.uint32)
        index = pc.index_in(batch.column("pinyin").flatten(),
                            value_set=pa.array(SYLLABLES)).fill_null(-1).to_numpy()
        chars.append(tokenizer.encode_codepoints(codepoints))
        syllables.append(np.where(index >= 0, index + tokenizer.syllable_offset, 0))
        lengths.append(pc.utf8_length(text).to_numpy(zero_copy_only=False))
    lengths_all = np.concatenate(lengths)
    offsets = np.zeros(len(lengths_all) + 1, np.int64)
    np.cumsum(lengths_all, out=offsets[1:])
    return TokenizedCorpus(np.concatenate(chars).astype(np.int32),
                           np.concatenate(syllables).astype(np.int32), offsets)


# ---- writing and reading back -------------------------------------------------------------------
def test_texts_and_syllables_round_trip(tmp_path):
    out = write(tmp_path / "d", {"train": TEXTS, "valid": TEXTS[:2], "test": []})
    splits = load_prepared(out)
    assert {name: len(s) for name, s in splits.items()} == {"train": 5, "valid": 2, "test": 0}
    assert splits["train"].texts() == TEXTS and splits["test"].texts() == []
    train = splits["train"]
    got = [SYLLABLES[c - 1] if c else "" for c in train.pinyin.tolist()]
    assert got == [s for t in TEXTS for s in annotate(t)]
    assert got[:4] == ["wo", "ai", "bei", "jing"] and "hang" in got  # 银行: context-aware
    assert train.offsets.tolist() == [0, *np.cumsum([len(t) for t in TEXTS]).tolist()]
    info = json.loads((out / DATASET_FILE).read_text(encoding="utf-8"))
    assert info["format"] == FORMAT
    assert info["splits"]["train"] == {"lines": 5, "chars": sum(map(len, TEXTS))}
    for name, dtype in info["dtypes"].items():  # raw little-endian arrays of the stated sizes
        size = (train.path / f"{name}.bin").stat().st_size
        count = len(TEXTS) + 1 if name == "offsets" else sum(map(len, TEXTS))
        assert size == count * np.dtype(dtype).itemsize
    assert np.fromfile(train.path / "chars.bin", "<u4")[0] == ord("我")


def test_unknown_and_empty_syllables_are_stored_as_none(tmp_path):
    out = write(tmp_path / "d", {"train": ["中国人"], "valid": []}, syllables=["zhong", "", "xyz"])
    assert load_prepared(out)["train"].pinyin.tolist() == [SYLLABLES.index("zhong") + 1, 0, 0]
    with pytest.raises(ValueError, match="one per character"):
        Rows.encode(["中国"], ["zhong"])


def test_rows_select_and_line():
    rows = Rows.encode(["一二", "三", "四五六"], ["yi", "er", "san", "si", "wu", "liu"])
    assert [rows.line(i) for i in range(3)] == ["一二", "三", "四五六"]
    kept = rows.select(np.array([True, False, True]))
    assert len(kept) == 2 and kept.line(1) == "四五六"
    assert kept.pinyin.tolist() == [SYLLABLES.index(s) + 1 for s in ("yi", "er", "si", "wu", "liu")]


def test_same_rows_give_byte_identical_files(tmp_path):
    a = write(tmp_path / "a", {"train": TEXTS, "valid": TEXTS})
    with CorpusWriter(tmp_path / "b", ["train", "valid"]) as writer:
        for text in TEXTS:  # other chunking, same rows
            writer.append("train", [text], annotate(text))
        writer.add("valid", Rows.encode(TEXTS, [s for t in TEXTS for s in annotate(t)]))
    (tmp_path / "b" / CHARS_FILE).write_text("我\t1\n", encoding="utf-8")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*")
                           if p.is_file())
    for name in files:
        assert (a / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_a_failed_write_leaves_no_dataset(tmp_path):
    with pytest.raises(RuntimeError), CorpusWriter(tmp_path / "d") as writer:
        writer.append("train", TEXTS[:1], annotate(TEXTS[0]))
        raise RuntimeError("interrupted")
    (tmp_path / "d" / CHARS_FILE).write_text("我\t1\n", encoding="utf-8")
    with pytest.raises(TrainingError, match="no dataset.json"):
        load_prepared(tmp_path / "d")


# ---- tokenizing ---------------------------------------------------------------------------------
def test_tokenized_matches_the_old_arrow_path_exactly(tmp_path):
    texts = TEXTS * 3 + ["", "北京"]
    pinyin = [annotate(t) for t in texts]
    pinyin[1][0] = "nope"  # not a syllable: 0, both ways
    out = write(tmp_path / "d", {"train": texts, "valid": []}, [s for p in pinyin for s in p])
    tokenizer = PinziTokenizer(list("我北京天好行银在他"))
    new = load_prepared(out)["train"].tokenized(tokenizer)
    old = old_from_table(texts, pinyin, tokenizer)
    for name in ("chars", "syllables", "offsets"):
        got, want = getattr(new, name), getattr(old, name)
        assert got.dtype == want.dtype and np.array_equal(got, want), name
    assert len(new) == len(texts) and np.array_equal(new.lengths, [len(t) for t in texts])
    assert UNK_ID in new.chars and tokenizer.char_id("我") == new.chars[0]
    # in small chunks too
    chunked = load_prepared(out)["train"].tokenized(tokenizer, chunk=3)
    assert np.array_equal(chunked.chars, new.chars)
    assert np.array_equal(chunked.syllables, new.syllables)


def test_gather_pads_and_cuts(tmp_path):
    out = write(tmp_path / "d", {"train": ["我爱北京", "好"], "valid": []})
    tokenizer = PinziTokenizer(list("我爱北京好"))
    corpus = load_prepared(out)["train"].tokenized(tokenizer)
    chars, syllables, lengths = corpus.gather(np.array([1, 0]), max_length=3)
    assert lengths.tolist() == [1, 3] and chars.shape == syllables.shape == (2, 3)
    assert chars[0].tolist() == [tokenizer.char_id("好"), PAD_ID, PAD_ID]
    assert syllables[1].tolist() == [tokenizer.syllable_id(s) for s in ("wo", "ai", "bei")]


# ---- damaged, incomplete and old folders --------------------------------------------------------
def edit_info(out: Path, **changes) -> None:
    info = json.loads((out / DATASET_FILE).read_text(encoding="utf-8"))
    info.update(changes)
    (out / DATASET_FILE).write_text(json.dumps(info), encoding="utf-8")


def damage(out: Path, how: str) -> None:
    train = out / "train"
    if how == "no chars.tsv":
        (out / CHARS_FILE).unlink()
    elif how == "no dataset.json":
        (out / DATASET_FILE).unlink()
    elif how == "old format":  # what the datasets-based pinzi wrote
        (out / DATASET_FILE).unlink()
        shutil.rmtree(train)
        train.mkdir()
        (train / "data-00000-of-00001.arrow").write_bytes(b"ARROW1")
        (train / "state.json").write_text("{}", encoding="utf-8")
        (out / "dataset_dict.json").write_text('{"splits": ["train"]}', encoding="utf-8")
    elif how == "bad json":
        (out / DATASET_FILE).write_text("{not json", encoding="utf-8")
    elif how == "format 2":
        edit_info(out, format="pinzi-corpus-2")
    elif how == "other syllables":
        edit_info(out, syllables="0123456789abcdef")
    elif how == "no valid split":
        edit_info(out, splits={"train": {"lines": 2, "chars": 5}})
    elif how == "missing file":
        (train / "pinyin.bin").unlink()
    elif how == "truncated":
        (train / "chars.bin").write_bytes((train / "chars.bin").read_bytes()[:-4])
    elif how == "bad offsets":
        np.array([0, 2, 4], "<i8").tofile(train / "offsets.bin")
    elif how == "empty train":
        edit_info(out, splits={"train": {"lines": 0, "chars": 0},
                               "valid": {"lines": 1, "chars": 1}})
        for name in ("chars", "pinyin"):
            (train / f"{name}.bin").write_bytes(b"")
        np.zeros(1, "<i8").tofile(train / "offsets.bin")


@pytest.mark.parametrize("how, message", [
    ("no chars.tsv", r"not a prepared dataset \(no chars.tsv\): run `pinzi data prepare"),
    ("no dataset.json", r"incomplete .*no dataset.json.*pinzi data prepare"),
    ("old format", r"older pinzi \(the `datasets` Arrow format.*`pinzi data prepare.* again"),
    ("bad json", r"dataset.json is damaged"),
    ("format 2", r"format 'pinzi-corpus-2'.*reads 'pinzi-corpus-1'"),
    ("other syllables", r"another syllable inventory"),
    ("no valid split", r"no 'valid' split"),
    ("missing file", r"lacks pinyin.bin"),
    ("truncated", r"chars.bin holds 16 bytes where dataset.json says 20"),
    ("bad offsets", r"offsets.bin is damaged"),
    ("empty train", r"the train split is empty"),
])
def test_unusable_folders_are_clear_training_errors(tmp_path, how, message):
    out = write(tmp_path / "d", {"train": ["我爱", "北京天"], "valid": ["好"]})
    load_prepared(out)  # fine before the damage
    damage(out, how)
    with pytest.raises(TrainingError, match=message):
        load_prepared(out)


def test_a_missing_folder_is_not_a_prepared_dataset(tmp_path):
    with pytest.raises(TrainingError, match="not a prepared dataset"):
        load_prepared(tmp_path / "nowhere")
