"""Tests of the corpus pipeline (pinzi.data) on tiny corpora built in tmp_path.

Run with ``.venv/bin/pytest tests/test_data.py``. Nothing here reads /work/shared or the network.
"""

from __future__ import annotations

import csv
import errno
import gzip
import json
import os
import random
import tracemalloc
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pinzi import data
from pinzi.corpus import DATASET_FILE, FORMAT, load_prepared, open_prepared
from pinzi.data import DataError, normalise, prepare, split_sentences
from pinzi.errors import OutputError
from pinzi.io import LOCK_FILE
from pinzi.lexicon import Lexicon
from pinzi.pinyin import SYLLABLES

NEWS = ["今天北京天气很好。", "我们一起去银行取钱吧！", "他说：“明天见。”", "会议研究了其他事项。",
        "人工智能正在改变世界。", "长江是中国最长的河流。", "学生们在操场上跑步。"]


def run(inputs, out, **kw) -> dict:
    kw.setdefault("num_workers", 1)
    kw.setdefault("progress", False)
    return prepare([str(p) for p in inputs], out, **kw)


def rows(out: Path) -> dict[str, list[dict]]:
    """Each split's lines as {"text", "pinyin"}, pinyin one syllable per char ("" for none)."""
    result = {}
    for name, split in open_prepared(out).items():
        syllables = [SYLLABLES[c - 1] if c else "" for c in split.pinyin.tolist()]
        bounds = split.offsets.tolist()
        result[name] = [{"text": text, "pinyin": syllables[a:b]} for text, a, b
                        in zip(split.texts(), bounds[:-1], bounds[1:], strict=True)]
    return result


def all_files(out: Path) -> dict[str, bytes]:
    """The output files (the lock file, which holds the writer's process id, is not output)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


def write_gz(path: Path, text: str) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(text)
    return path


# ---- text helpers -------------------------------------------------------------------------------
def test_normalise_maps_full_width_keeps_chinese_punctuation_and_drops_invisibles():
    kept = "，。！？：；（）“”《》、…—"
    assert normalise("ＡＢＣ　１２３％" + kept) == "ABC 123%" + kept
    assert normalise(" 零\u200b宽\ufeff字\x01符\t\t空  格 ") == "零宽字符 空 格"
    assert normalise("已经干净的句子。") == "已经干净的句子。"


def test_split_sentences_keeps_closing_quotes_and_packs_long_sentences_from_clauses():
    pieces = split_sentences("他说：“走吧！”我们走了。好", 128)
    assert pieces == (["他说：“走吧！”", "我们走了。", "好"], 0)
    long = "，".join(["这是一个比较长的分句"] * 10) + "。"
    pieces, cuts = split_sentences(long, 24)
    assert cuts == 0 and "".join(pieces) == long
    assert all(len(p) <= 24 for p in pieces) and all(p.endswith(("，", "。")) for p in pieces)
    pieces, cuts = split_sentences("字" * 50, 20)
    assert cuts == 2 and [len(p) for p in pieces] == [20, 20, 10]


@pytest.mark.parametrize("name, split", [
    ("train.txt.gz", "train"), ("d-dev.txt.gz", "valid"), ("val.tsv", "valid"),
    ("msr_test.txt", "test"), ("test2020.tsv.gz", "test"), ("validation", "valid"),
    ("trial.txt.gz", None), ("pd199801.txt.gz", None), ("latest.txt", None), ("devices.txt", None),
])
def test_split_is_read_from_name_components(name, split):
    assert data._split_of(name) == split


# ---- end to end ---------------------------------------------------------------------------------
def test_prepare_reads_every_format_and_writes_an_aligned_dataset(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("\n".join(NEWS[:3]) + "\n", encoding="utf-8")
    write_gz(folder / "sub" / "b-dev.txt.gz", NEWS[3] + "\n" + NEWS[0] + "\n")  # NEWS[0]: dup
    (folder / "c.jsonl").write_text(json.dumps({"text": NEWS[4], "id": 1}, ensure_ascii=False)
                                    + "\n", encoding="utf-8")
    (folder / "d_test.tsv").write_text(f'label\ttext\n1\t"{NEWS[5]}\n', encoding="utf-8")
    with open(folder / "e.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["text", "label"], [f"{NEWS[6]}\n第二行，带逗号", 0]])
    out = tmp_path / "out"
    stats = run([folder], out)

    got = rows(out)
    assert set(got) == {"train", "valid", "test"}
    texts = {split: [r["text"] for r in got[split]] for split in got}
    assert texts["valid"] == [NEWS[3]]  # from b-dev; its copy of NEWS[0] is a duplicate
    assert texts["test"] == ['"' + NEWS[5]]  # TSV has no quoting: the quote is text
    assert texts["train"] == NEWS[:3] + [NEWS[4], NEWS[6], "第二行，带逗号"]
    for row in got["train"]:
        assert len(row["pinyin"]) == len(row["text"])
        for ch, syllable in zip(row["text"], row["pinyin"], strict=True):
            assert (syllable != "") == ("\u4e00" <= ch <= "\u9fff"), (ch, syllable)
    assert got["train"][1]["pinyin"][5:7] == ["yin", "hang"]  # context-aware annotation
    info = json.loads((out / DATASET_FILE).read_text(encoding="utf-8"))
    assert info["format"] == FORMAT and {s: info["splits"][s]["lines"] for s in texts} == \
        {s: len(texts[s]) for s in texts}
    assert sorted(p.name for p in (out / "train").iterdir()) == \
        ["chars.bin", "offsets.bin", "pinyin.bin"]
    assert stats["dropped"]["duplicate"] == 1
    assert stats["lines"] == {"read": 11}  # input lines; they hold 9 sentences, 8 are kept
    assert stats["sentences"] == {"found": 9, "kept": 8, "train": 6, "valid": 1, "test": 1}
    assert stats["chars"]["kept"] == sum(len(t) for split in texts.values() for t in split)
    assert [s["split"] for s in stats["inputs"]] == [None, None, "test", None, "valid"]
    assert json.loads((out / "stats.json").read_text(encoding="utf-8")) == stats


def test_chars_tsv_counts_kept_characters_then_lists_the_rest_of_the_lexicon(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("中国人，中国。\n中国人，中国。\n𠀀中国Ａ\n", encoding="utf-8")
    stats = run([corpus], tmp_path / "out")
    lines = (tmp_path / "out" / "chars.tsv").read_text(encoding="utf-8").splitlines()
    counts = [(ch, int(n)) for ch, n in (line.split("\t") for line in lines)]
    assert counts[:7] == [("中", 3), ("国", 3), ("A", 1), ("。", 1), ("人", 1), ("，", 1),
                          ("𠀀", 1)]  # the duplicate line is not counted
    lexicon = Lexicon.default()
    assert {ch for ch, _ in counts} == {ch for ch, n in counts if n} | set(lexicon.chars)
    zeros = [ch for ch, n in counts if n == 0]
    assert zeros == sorted(zeros) and counts[7:] == [(ch, 0) for ch in zeros]
    assert stats["vocab_size"] == 7
    assert ["𠀀", 1] in stats["outside_lexicon"]["top_hanzi"]


def test_bad_input_is_skipped_counted_and_warned_about(tmp_path):
    good = "好的句子在这里。\n再来一句。\n".encode()
    (tmp_path / "utf8.txt").write_bytes(b"\xff\xfe\xe4\xb8\n" + good)  # line 1: bad UTF-8
    (tmp_path / "binary.txt").write_bytes(b"PK\x03\x04\x00\x00" + bytes(range(256)))
    (tmp_path / "empty.txt").write_bytes(b"")
    long_line = "长" * 400_000  # 1.2 MB
    (tmp_path / "long.txt").write_bytes(f"{long_line}\n长行之后。\n".encode())
    (tmp_path / "rows.tsv").write_text("text\tlabel\n短行也行。\t1\n\n", encoding="utf-8")
    (tmp_path / "j.jsonl").write_text('{"text": "正常的一行。"}\n{broken\n[1, 2]\n{"text": 3}\n'
                                      '{"body": "字段不对。"}\n', encoding="utf-8")
    whole = gzip.compress(("截断的压缩文件。\n" * 2000).encode())
    (tmp_path / "cut.txt.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "noise.txt").write_text("\n   \n!!!\nok 好\n", encoding="utf-8")
    with pytest.warns(UserWarning) as caught:
        stats = run(sorted(tmp_path.iterdir()), tmp_path / "out")
    messages = " ".join(str(w.message) for w in caught)
    for name in ("utf8.txt", "binary.txt", "empty.txt", "long.txt", "j.jsonl", "cut.txt.gz"):
        assert name in messages
    assert stats["dropped"].pop("duplicate") > 100  # the truncated file's repeated line
    assert stats["dropped"] == {"invalid_utf8": 1, "binary_file": 1, "empty_file": 1,
                                "too_long": 1, "bad_json": 1,
                                "missing_field": 3, "corrupt_file": 1, "empty": 3,
                                "too_few_hanzi": 2}
    texts = [r["text"] for split in rows(tmp_path / "out").values() for r in split]
    assert {"好的句子在这里。", "再来一句。", "正常的一行。", "短行也行。", "截断的压缩文件。",
            "长行之后。"} == set(texts)
    by_path = {Path(s["path"]).name: s for s in stats["inputs"]}
    assert by_path["long.txt"]["lines_read"] == 2 and by_path["utf8.txt"]["sentences_kept"] == 2


def test_output_is_byte_identical_across_runs_and_worker_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CHUNK_LINES", 100)  # many chunks, so workers finish out of order
    rng = random.Random(0)
    lines = ["".join(rng.choice("天地人你我他中国大小山水日月") for _ in range(rng.randint(2, 40)))
             + "。" for _ in range(1500)]
    write_gz(tmp_path / "in.txt.gz", "\n".join(lines) + "\n")
    first = run([tmp_path / "in.txt.gz"], tmp_path / "a", valid_fraction=0.1, test_fraction=0.1)
    run([tmp_path / "in.txt.gz"], tmp_path / "b", valid_fraction=0.1, test_fraction=0.1,
        num_workers=2)
    a, b = all_files(tmp_path / "a"), all_files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) == 12
    for name in a:
        if name != "stats.json":
            assert a[name] == b[name], name
    stats_a, stats_b = (json.loads(x["stats.json"]) for x in (a, b))
    assert stats_a.pop("run")["num_workers"] == 1 and stats_b.pop("run")["num_workers"] == 2
    assert stats_a == stats_b and first["sentences"]["valid"] > 0 and first["sentences"]["test"] > 0
    run([tmp_path / "in.txt.gz"], tmp_path / "a", valid_fraction=0.1, test_fraction=0.1)
    assert all_files(tmp_path / "a").keys() == a.keys()  # a re-run replaces the old output


def test_split_depends_only_on_seed_and_line(tmp_path):
    lines = [f"第{i}个测试句子。" for i in range(2000)]
    (tmp_path / "x.txt").write_text("\n".join(lines), encoding="utf-8")
    shuffled = lines[:]
    random.Random(1).shuffle(shuffled)
    (tmp_path / "y.txt").write_text("\n".join(shuffled), encoding="utf-8")

    def assignment(name: str, seed: int) -> dict[str, str]:
        run([tmp_path / name], tmp_path / f"{name}{seed}", seed=seed, valid_fraction=0.2,
            test_fraction=0.1)
        return {r["text"]: s for s, rs in rows(tmp_path / f"{name}{seed}").items() for r in rs}

    x = assignment("x.txt", 1)
    assert x == assignment("y.txt", 1) != assignment("x.txt", 2)
    shares = {s: list(x.values()).count(s) / len(x) for s in ("train", "valid", "test")}
    assert shares == pytest.approx({"train": 0.7, "valid": 0.2, "test": 0.1}, abs=0.04)


def test_shards_are_disjoint_and_cover_everything(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"句子编号{i}在此。\n" for i in range(600)) * 2, encoding="utf-8")
    run([corpus], tmp_path / "all")
    whole = {r["text"] for rs in rows(tmp_path / "all").values() for r in rs}
    parts = []
    for index in range(3):
        stats = run([corpus], tmp_path / f"s{index}", num_shards=3, shard_index=index)
        assert stats["shard"] == {"num_shards": 3, "shard_index": index}
        parts.append({r["text"] for rs in rows(tmp_path / f"s{index}").values() for r in rs})
    assert all(len(p) > 100 for p in parts) and sum(map(len, parts)) == len(whole) == 600
    assert set().union(*parts) == whole


def test_traditional_is_converted_before_deduplication(tmp_path):
    corpus = tmp_path / "t.txt"
    corpus.write_text("漢字轉換很簡單。\n汉字转换很简单。\n", encoding="utf-8")
    stats = run([corpus], tmp_path / "out", to_simplified=True)
    assert [r["text"] for r in rows(tmp_path / "out")["train"]] == ["汉字转换很简单。"]
    assert stats["dropped"]["duplicate"] == 1


def test_length_and_hanzi_filters(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("一二三四五六七八九十，甲乙丙丁戊己庚辛壬癸，子丑寅卯辰巳午未申酉。\n单\nA1。\n",
                      encoding="utf-8")
    stats = run([corpus], tmp_path / "out", max_chars=12, min_hanzi=2)
    assert [r["text"] for r in rows(tmp_path / "out")["train"]] == [
        "一二三四五六七八九十，", "甲乙丙丁戊己庚辛壬癸，", "子丑寅卯辰巳午未申酉。"]
    assert stats["dropped"]["too_few_hanzi"] == 2 and stats["sentences"]["found"] == 5


@pytest.fixture
def offline(monkeypatch):
    """No hub access, even for a name that looks like a hub dataset (flags are read at import)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def test_hugging_face_dataset_path_is_streamed_with_its_splits(tmp_path, offline):
    hub = tmp_path / "my_dataset" / "data"
    hub.mkdir(parents=True)
    pq.write_table(pa.table({"content": NEWS[:4] + [None]}), hub / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"content": NEWS[4:]}), hub / "test-00000-of-00001.parquet")
    with pytest.warns(UserWarning, match="missing_field=1"):
        stats = run([tmp_path / "my_dataset"], tmp_path / "out", text_field="content")
    got = {s: [r["text"] for r in rs] for s, rs in rows(tmp_path / "out").items()}
    assert got == {"train": NEWS[:4], "valid": [], "test": NEWS[4:]}
    assert stats["inputs"][0]["format"] == "hf" and stats["dropped"] == {"missing_field": 1}
    run([tmp_path / "my_dataset"], tmp_path / "one", text_field="content", hf_split="test")
    assert [r["text"] for r in rows(tmp_path / "one")["test"]] == NEWS[4:]


def test_missing_inputs_and_bad_settings_raise_clear_errors(tmp_path, offline):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        run([tmp_path / "nope.txt"], tmp_path / "out")
    for name in ("a/b/c", "./x", "typo.jsonl.gz"):  # look like paths: never sent to the hub
        with pytest.raises(FileNotFoundError, match="input not found"):
            run([name], tmp_path / "out")
    (tmp_path / "ok.txt").write_text("这一行没问题。\n", encoding="utf-8")
    with pytest.raises(DataError, match="no_such_dataset_for_pinzi_tests"):
        run([tmp_path / "ok.txt", "no_such_dataset_for_pinzi_tests"], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # failed before any work, nothing half-written
    with pytest.raises(DataError):
        run([], tmp_path / "out", valid_fraction=0.7, test_fraction=0.5)
    with pytest.raises(DataError):
        run([], tmp_path / "out", num_shards=2, shard_index=2)


def test_a_failing_run_leaves_no_partial_output(tmp_path, monkeypatch):
    (tmp_path / "ok.txt").write_text("这一行没问题。\n", encoding="utf-8")
    run([tmp_path / "ok.txt"], tmp_path / "out")
    before = all_files(tmp_path / "out")

    def broken(*args):
        raise RuntimeError("worker failed")

    monkeypatch.setattr(data, "_process_chunk", broken)
    with pytest.raises(RuntimeError, match="worker failed"):
        run([tmp_path / "ok.txt"], tmp_path / "out")
    assert all_files(tmp_path / "out") == before  # the earlier output is untouched


def test_input_with_nothing_to_keep_is_an_error_that_writes_nothing(tmp_path, capsys):
    (tmp_path / "e.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"no sentence to keep .*1 line\(s\) read; dropped: "
                                        r"empty=1\): nothing was written"):
        run([tmp_path / "e.txt"], tmp_path / "out", progress=True)
    assert capsys.readouterr().out == ""  # the progress bar goes to stderr
    assert all_files(tmp_path / "out") == {}
    (tmp_path / "none.txt").write_bytes(b"")
    with pytest.raises(DataError, match="0 line"):
        run([tmp_path / "none.txt"], tmp_path / "out")


def test_byte_order_marks_are_dropped_in_every_format(tmp_path):
    bom = "\ufeff"
    (tmp_path / "a.txt").write_text(bom + "第一行的文本。\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(bom + '{"text": "JSON的第一行。"}\n', encoding="utf-8")
    (tmp_path / "c.tsv").write_text(bom + "text\tlabel\nTSV的第一行。\t1\n", encoding="utf-8")
    (tmp_path / "d.csv").write_text(bom + "text,label\nCSV的第一行。,1\n", encoding="utf-8")
    write_gz(tmp_path / "e.txt.gz", bom + "压缩的第一行。\n")
    stats = run(sorted(tmp_path.iterdir()), tmp_path / "out")
    assert [r["text"] for r in rows(tmp_path / "out")["train"]] == [
        "第一行的文本。", "JSON的第一行。", "TSV的第一行。", "CSV的第一行。", "压缩的第一行。"]
    assert stats["dropped"] == {}


def test_prepared_syllables_and_tokens_agree_with_the_texts(tmp_path):
    from pinzi.tokenizer import PinziTokenizer

    (tmp_path / "t.txt").write_text("\n".join(NEWS) + "\n", encoding="utf-8")
    run([tmp_path / "t.txt"], tmp_path / "out")
    train = load_prepared(tmp_path / "out")["train"]
    tokenizer = PinziTokenizer.from_counts(tmp_path / "out" / "chars.tsv", min_count=1)
    corpus = train.tokenized(tokenizer)
    assert tokenizer.decode_chars(corpus.chars.tolist()) == "".join(train.texts())
    hanzi = np.array([ch in "".join(NEWS) and "\u4e00" <= ch <= "\u9fff"
                      for ch in "".join(train.texts())])
    assert np.array_equal(corpus.syllables > 0, hanzi)
    assert np.array_equal(corpus.offsets, train.offsets)


def test_reading_stays_a_bounded_window_ahead_of_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CHUNK_LINES", 10)
    (tmp_path / "c.txt").write_text("".join(f"第{i}行的内容。\n" for i in range(500)),
                                    encoding="utf-8")
    read, lead = [], []
    chunks, add = data._chunks, data._Collector.add

    def counting_chunks(*args):
        for chunk in chunks(*args):
            read.append(chunk)
            yield chunk

    def recording_add(self, index, result):
        lead.append(len(read) - len(lead))
        add(self, index, result)

    monkeypatch.setattr(data, "_chunks", counting_chunks)
    monkeypatch.setattr(data._Collector, "add", recording_add)
    run([tmp_path / "c.txt"], tmp_path / "out")
    assert len(read) == 50 and max(lead) <= 3  # never the whole corpus in flight


# ---- faults: missing fields, unreadable input, a bad --out, long lines --------------------------
def test_a_source_without_the_text_column_or_field_is_an_error_naming_what_it_has(tmp_path,
                                                                                  offline):
    (tmp_path / "a.tsv").write_text("label\tsentence\n1\t没有文本列。\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("id,body\n1,没有文本列。\n", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text('{"body": "字段不对。", "id": 1}\n[1]\n', encoding="utf-8")
    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    pq.write_table(pa.table({"content": NEWS[:2]}), hub / "train-00000-of-00001.parquet")
    for name, message in [
        ("a.tsv", r"a.tsv: the header has no column 'text' \(its columns: label, sentence\); "
                  r"choose one with --text-column"),
        ("b.csv", r"no column 'text' \(its columns: id, body\)"),
        ("c.jsonl", r"c.jsonl: no record has the field 'text' \(its fields: body, id\); "
                    r"choose one with --text-field"),
        ("hub", r"no record has the field 'text' \(its fields: content\)"),
    ]:
        with pytest.raises(DataError, match=message):
            run([tmp_path / name], tmp_path / "out")
        assert all_files(tmp_path / "out") == {}
    assert run([tmp_path / "a.tsv"], tmp_path / "out", text_column="sentence")["sentences"][
        "kept"] == 1


def test_unreadable_files_and_folders_are_skipped_counted_and_warned_about(tmp_path,
                                                                           monkeypatch):
    # Permissions do not stop root, so the failures are injected where the OS would raise them.
    folder = tmp_path / "corpus"
    (folder / "closed").mkdir(parents=True)
    (folder / "a.txt").write_text("第一个文件的句子。\n", encoding="utf-8")
    (folder / "b.txt").write_text("不能读的文件。\n", encoding="utf-8")
    (folder / "closed" / "c.txt").write_text("关着的文件夹。\n", encoding="utf-8")
    real_open, real_scandir = open, os.scandir

    def refusing(real, name):
        def call(path=".", *args, **kwargs):
            if isinstance(path, (str, Path)) and Path(path).name == name:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path, *args, **kwargs)
        return call

    monkeypatch.setattr(data, "open", refusing(real_open, "b.txt"), raising=False)
    monkeypatch.setattr(os, "scandir", refusing(real_scandir, "closed"))
    with pytest.warns(UserWarning) as caught:
        stats = run([folder], tmp_path / "out")
    messages = [str(w.message) for w in caught]
    assert any("b.txt" in m and "unreadable=1" in m for m in messages)
    assert any("closed" in m and "unreadable=1" in m for m in messages)
    assert stats["dropped"] == {"unreadable": 2}
    assert [r["text"] for r in rows(tmp_path / "out")["train"]] == ["第一个文件的句子。"]


def test_out_naming_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "a.txt").write_text("第一个文件的句子。\n", encoding="utf-8")
    (tmp_path / "taken").write_text("a file\n", encoding="utf-8")
    with pytest.raises(OutputError, match="taken is a file, not a folder"):
        run([tmp_path / "a.txt"], tmp_path / "taken")
    assert (tmp_path / "taken").read_text(encoding="utf-8") == "a file\n"


def test_a_line_of_many_megabytes_is_skipped_without_being_held_whole(tmp_path):
    (tmp_path / "long.txt").write_bytes(b"x" * (24 << 20) + "\n后面的句子。\n".encode())
    stat = {"lines_read": 0, "bytes_read": 0, "skipped": Counter()}
    source = data._Source("long.txt", "txt", path=tmp_path / "long.txt")
    tracemalloc.start()
    try:
        lines = list(data._raw_lines(source, stat))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert lines == ["后面的句子。\n"] and stat["skipped"] == {"too_long": 1}
    assert peak < 8 * data.MAX_LINE_BYTES  # a few pieces of the line, never its 24 MB
