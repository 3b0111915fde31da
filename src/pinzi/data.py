"""The corpus pipeline: raw Chinese text in, a pinyin-annotated dataset on disk out.

Run it as ``pinzi data prepare INPUT... --out DIR`` or call :func:`prepare`. Each input line
is normalised, split into sentences (long ones into clause pieces), filtered, optionally
converted to simplified characters, deduplicated, assigned to train/valid/test and annotated
with one toneless syllable per character. Lines are streamed in chunks of about 2,000 through
a process pool, so memory stays bounded and every core annotates (pypinyin is the
bottleneck); chunks come back in input order, so the output is byte-identical for the same
inputs and seed. The output format is :mod:`pinzi.corpus`'s.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import time
import warnings
import zlib
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np
from rich import progress as rp
from rich.console import Console

from pinzi.corpus import CHARS_FILE, SPLITS, CorpusWriter, Rows
from pinzi.errors import DataError
from pinzi.hub import looks_local
from pinzi.io import BOM, MAX_LINE_BYTES, exclusive, format_of
from pinzi.lexicon import Lexicon
from pinzi.readings import annotate
from pinzi.text import HAN, normalise, to_simplified

FORMATS = ("txt", "jsonl", "tsv", "csv")  # each may also end in .gz
CHUNK_LINES, CHUNK_CHARS = 2000, 2_000_000  # the unit of work sent to a worker
_SPLIT_NAMES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid",
                "dev": "valid", "test": "test"}

_SENTENCE = re.compile(r"[^。！？!?]*(?:[。！？!?]+[”’」』）)》\"]*|$)")
_CLAUSE = re.compile(r"[^，；、,;]*(?:[，；、,;]+|$)")


@dataclass(frozen=True)
class _Config:
    """What a worker needs to process a chunk (small: it travels with every task)."""

    to_simplified: bool
    min_hanzi: int
    max_chars: int
    valid_fraction: float
    test_fraction: float
    seed: int
    num_shards: int
    shard_index: int


# ---- text: normalise, split, convert ----------------------------------------------------------
def split_sentences(text: str, max_chars: int) -> tuple[list[str], int]:
    """Sentences of ``text``, those over ``max_chars`` re-packed from clauses (hard-cut if a
    clause alone is too long). Returns the pieces and the number of hard cuts."""
    pieces, cuts = [], 0
    for sentence in _SENTENCE.findall(text):
        if len(sentence) <= max_chars:
            pieces.append(sentence)
            continue
        current = ""
        for clause in _CLAUSE.findall(sentence):
            while len(clause) > max_chars:
                pieces += [current, clause[:max_chars]]
                current, clause, cuts = "", clause[max_chars:], cuts + 1
            if len(current) + len(clause) > max_chars:
                pieces.append(current)
                current = ""
            current += clause
        pieces.append(current)
    return [p for p in map(str.strip, pieces) if p], cuts


def _to_simplified(texts: list[str]) -> list[str]:
    # One OpenCC call per chunk: normalised texts hold no newline, so the join is reversible.
    converted = to_simplified("\n".join(texts)).split("\n")
    return converted if len(converted) == len(texts) else [to_simplified(t) for t in texts]


def _split_of(name: str) -> str | None:
    """The split a file or HF split name declares (``dev``/``val`` -> ``valid``), if any."""
    return next((_SPLIT_NAMES[t] for t in re.split(r"[^a-z]+", name.lower())
                 if t in _SPLIT_NAMES), None)


# ---- the worker: one chunk of raw lines -> annotated rows --------------------------------------
def _process_chunk(lines: list[str], hint: str | None, cfg: _Config) -> dict:
    """Normalise, split, filter, hash and annotate one chunk (runs in a pool worker).

    Deduplication needs every chunk seen so far, so it happens in the parent: this returns
    each row's 8-byte hash and split code, and the rows as flat arrays (cheap to pickle).
    """
    dropped: Counter[str] = Counter()
    texts = [normalise(line) for line in lines]
    if cfg.to_simplified:
        texts = _to_simplified(texts)
    enough_han = re.compile(f"(?:[^{HAN}]*[{HAN}]){{{cfg.min_hanzi}}}")
    key = cfg.seed.to_bytes(8, "little", signed=True)
    rows, hashes, splits, cuts, other_shard = [], bytearray(), bytearray(), 0, 0
    for text in texts:
        pieces, n_cuts = split_sentences(text, cfg.max_chars)
        cuts += n_cuts
        dropped["empty"] += not pieces
        for piece in pieces:
            if not enough_han.match(piece):
                dropped["too_few_hanzi"] += 1
                continue
            # One keyed digest gives the dedup key, the shard and the split, so all three are
            # functions of (seed, line) alone: independent of order, sharding and workers.
            digest = hashlib.blake2b(piece.encode(), digest_size=16, key=key).digest()
            if int.from_bytes(digest[8:12], "little") % cfg.num_shards != cfg.shard_index:
                other_shard += 1
                continue
            rows.append(piece)
            hashes += digest[:8]
            splits.append(SPLITS.index(hint) if hint else _hash_split(digest[12:], cfg))
    syllables = (syllable for row in rows for syllable in annotate(row))
    return {"rows": Rows.encode(rows, syllables), "hashes": bytes(hashes),
            "splits": bytes(splits), "chars": Counter("".join(rows)), "dropped": +dropped,
            "pieces": len(rows) + other_shard + dropped["too_few_hanzi"],
            "hard_cuts": cuts, "other_shard": other_shard}


def _hash_split(four_bytes: bytes, cfg: _Config) -> int:
    u = int.from_bytes(four_bytes, "little") / 2**32
    return 1 if u < cfg.valid_fraction else 2 if u < cfg.valid_fraction + cfg.test_fraction else 0


# ---- reading: files, folders, HF datasets -> chunks of raw text ------------------------------
@dataclass
class _Source:
    label: str
    fmt: str  # txt | jsonl | tsv | csv | hf
    hint: str | None = None
    path: Path | None = None
    splits: list[tuple[str | None, Iterable[dict]]] | None = None  # hf: (hint, rows) pairs


def _resolve(inputs: Sequence[str], hf_split: str | None) -> list[_Source]:
    sources: list[_Source] = []
    for name in map(str, inputs):
        path = Path(name)
        if name.startswith("hf:"):
            sources.append(_hf_source(name[3:], hf_split))
        elif path.is_file():  # a named file of unknown type is read as plain text
            sources.append(_Source(name, format_of(path, FORMATS) or "txt",
                                   _split_of(path.name), path))
        elif path.is_dir():
            unlisted: list[OSError] = []  # folders that cannot be listed: read, they count
            walk = os.walk(path, onerror=unlisted.append)  # as unreadable, with a warning
            files = sorted(p for root, _, names in walk for p in map(Path(root).joinpath, names)
                           if p.is_file())
            sources += [_Source(e.filename, "txt", None, Path(e.filename)) for e in unlisted]
            found = [p for p in files if format_of(p, FORMATS)]
            if not found and any(p.suffix in (".parquet", ".arrow") for p in files):
                sources.append(_hf_source(name, hf_split))  # a local Hugging Face dataset folder
            elif len(found) < len(files):
                warnings.warn(f"{name}: ignoring {len(files) - len(found)} file(s) of unknown "
                              f"type, e.g. {next(p for p in files if p not in found)}",
                              stacklevel=3)
            for p in found:  # the file's own name says its split, else the nearest folder's
                parts = [p.name, *reversed(p.relative_to(path).parent.parts)]
                hint = next((s for s in map(_split_of, parts) if s), None)
                sources.append(_Source(str(p), format_of(p, FORMATS), hint, p))
        elif looks_local(name):  # a missing path, not a hub name ("name" or "owner/name")
            raise FileNotFoundError(f"input not found: {name}")
        else:
            sources.append(_hf_source(name, hf_split))
    return sources


def _raw_lines(src: _Source, stat: dict) -> Iterator[str]:
    """Decoded lines of a local file, without a byte-order mark; bad lines and files are
    counted in ``stat`` and skipped."""
    skipped = stat["skipped"]
    try:
        raw = open(src.path, "rb")  # noqa: SIM115 (closed by the with below)
    except OSError:  # no permission, or a folder that cannot be listed
        skipped["unreadable"] += 1
        return
    with raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw) if gzipped else raw
        try:
            head = stream.read(8192)
            if not head or b"\0" in head:
                skipped["binary_file" if head else "empty_file"] += 1
                return
            stream.seek(len(BOM.encode()) if head.startswith(BOM.encode()) else 0)
            while line := stream.readline(MAX_LINE_BYTES + 1):
                stat["lines_read"] += 1
                stat["bytes_read"] = raw.tell()
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    while (rest := stream.readline(MAX_LINE_BYTES)) and rest[-1:] != b"\n":
                        pass  # skip the rest of the line without ever holding it whole
                    skipped["too_long"] += 1
                    continue
                try:
                    yield line.decode("utf-8")
                except UnicodeDecodeError:
                    skipped["invalid_utf8"] += 1
        except (OSError, EOFError, zlib.error):  # a truncated or corrupt .gz: keep what we got
            skipped["corrupt_file"] += 1
        stat["bytes_read"] = raw.tell()


def _records(src: _Source, stat: dict, text_field: str,
             text_column: str) -> Iterator[tuple[str | None, str]]:
    """(split hint, text) pairs of one source, in order; unusable records counted.

    A record without the text field (column) is skipped; a source where none has it is a
    mistake in the command: a :class:`DataError` that names the fields (columns) it has.
    """
    skipped = stat["skipped"]
    if src.fmt in ("txt", "tsv", "csv"):
        lines = _raw_lines(src, stat)
        if src.fmt == "txt":
            yield from ((src.hint, line.rstrip("\r\n")) for line in lines)
            return
        rows = (ln.rstrip("\r\n").split("\t") for ln in lines) if src.fmt == "tsv" \
            else csv.reader(lines)  # which keeps a newline inside quotes
        header = [h.strip() for h in next(rows, [])]  # [] for an empty file, counted as such
        if header and text_column not in header:
            raise DataError(f"{src.label}: the header has no column {text_column!r} (its "
                            f"columns: {', '.join(header)}); choose one with --text-column")
        while header:  # TSV has no quoting (a TAB splits); CSV goes through the csv module
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error:
                skipped["bad_csv"] += 1
                continue
            if len(row) > header.index(text_column):
                yield src.hint, row[header.index(text_column)]
            else:
                skipped["missing_column"] += 1
        return
    found, fields = False, set()
    for split, record in _objects(src, stat):
        value = record.get(text_field) if isinstance(record, dict) else record
        if isinstance(value, str):
            found = True
            yield split, value
            continue
        skipped["missing_field"] += 1
        if not found and isinstance(record, dict):
            fields.update(map(str, record))
    if fields and not found:
        raise DataError(f"{src.label}: no record has the field {text_field!r} (its fields: "
                        f"{', '.join(sorted(fields)[:20])}); choose one with --text-field")


def _objects(src: _Source, stat: dict) -> Iterator[tuple[str | None, object]]:
    """(split hint, record) of a Hugging Face dataset or a JSONL file; bad lines counted.
    A blank line is an empty text; a line that is a JSON string is the text itself."""
    if src.fmt == "hf":
        for split, rows in src.splits:
            for row in rows:
                stat["lines_read"] += 1
                yield split, row
        return
    for line in _raw_lines(src, stat):
        try:
            record = json.loads(line) if line.strip() else ""
        except ValueError:
            stat["skipped"]["bad_json"] += 1
            continue
        yield src.hint, record


def _hf_source(name: str, hf_split: str | None) -> _Source:
    """A Hugging Face dataset, opened for streaming now so that a bad name fails early."""
    import datasets

    try:
        loaded = datasets.load_dataset(name, split=hf_split, streaming=True)
    except Exception as err:  # hub, script or name trouble: all mean "cannot use this input"
        raise DataError(f"{name!r} is neither an existing path nor a loadable Hugging Face "
                        f"dataset ({type(err).__name__}: {err})") from err
    if isinstance(loaded, datasets.IterableDatasetDict):
        return _Source(name, "hf", splits=[(_split_of(s), loaded[s]) for s in sorted(loaded)])
    return _Source(name, "hf", splits=[(_split_of(hf_split or ""), loaded)])


def _chunks(sources: list[_Source], stats: list[dict], read_args: tuple) -> Iterator[tuple]:
    """(source index, split hint, lines) chunks; warns once per source about skipped input."""
    for index, (src, stat) in enumerate(zip(sources, stats, strict=True)):
        lines: list[str] = []
        size, hint = 0, src.hint
        for split, text in _records(src, stat, *read_args):
            if lines and (split != hint or len(lines) >= CHUNK_LINES or size >= CHUNK_CHARS):
                yield index, hint, lines
                lines, size = [], 0
            hint = split
            lines.append(text)
            size += len(text)
            stat["chars_read"] += len(text)
        if lines:
            yield index, hint, lines
        if stat["skipped"]:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(stat["skipped"].items()))
            warnings.warn(f"{src.label}: skipped bad input ({reasons})", stacklevel=4)


# ---- the parent: dedup, the corpus files, vocabulary, stats ----------------------------------
class _Collector:
    """Takes processed chunks in input order: deduplicates, writes, counts characters."""

    def __init__(self, tmp: Path, inputs: list[dict]):
        self.writer = CorpusWriter(tmp, SPLITS)
        self.inputs, self.seen, self.vocab = inputs, set(), Counter()
        self.counts: Counter[str] = Counter()

    def add(self, index: int, result: dict) -> None:
        rows: Rows = result["rows"]
        hashes = np.frombuffer(result["hashes"], dtype="<u8")
        keep = np.zeros(len(hashes), dtype=bool)
        for i, h in enumerate(hashes.tolist()):  # the first occurrence wins, in input order
            if h not in self.seen:
                self.seen.add(h)
                keep[i] = True
        self.vocab.update(result["chars"])
        for i in np.flatnonzero(~keep):  # duplicates are few: un-count them one by one
            self.vocab.subtract(rows.line(int(i)))
        codes = np.frombuffer(result["splits"], dtype=np.uint8)
        for code, split in enumerate(SPLITS):
            mask = keep & (codes == code)
            if mask.any():
                self.writer.add(split, rows.select(mask))
        stat, n_dup = self.inputs[index], int(len(keep) - keep.sum())
        stat["dropped"].update(result["dropped"] + Counter(duplicate=n_dup))
        stat["sentences_kept"] += int(keep.sum())
        self.counts.update({k: result[k] for k in ("pieces", "hard_cuts", "other_shard")})

    def finish(self, tmp: Path) -> dict:
        """Close the splits, write chars.tsv; the stats of what was read, dropped and kept."""
        splits = self.writer.close()["splits"]
        vocab, lexicon = +self.vocab, Lexicon.default()  # +: drop chars seen only in duplicates
        rows = sorted(vocab.items(), key=lambda kv: (-kv[1], kv[0]))
        rows += [(ch, 0) for ch in sorted(set(lexicon.chars) - vocab.keys())]
        with open(tmp / CHARS_FILE, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(f"{ch}\t{n}\n" for ch, n in rows)
        outside = [(ch, n) for ch, n in rows if n and ch not in lexicon]
        is_han = re.compile(f"[{HAN}]").fullmatch
        counts, dropped = dict(self.counts), Counter()
        for stat in self.inputs:
            del stat["bytes_read"]
            dropped.update(stat["skipped"] + stat["dropped"])
            stat["skipped"], stat["dropped"] = dict(+stat["skipped"]), dict(+stat["dropped"])
        return {  # input lines are split into sentences, which are filtered and kept
            "lines": {"read": sum(s["lines_read"] for s in self.inputs)},
            "sentences": {"found": counts.pop("pieces", 0),
                          "kept": sum(s["lines"] for s in splits.values()),
                          **{name: s["lines"] for name, s in splits.items()}},
            "chars": {"read": sum(s["chars_read"] for s in self.inputs),
                      "kept": sum(s["chars"] for s in splits.values()),
                      **{name: s["chars"] for name, s in splits.items()}},
            "inputs": self.inputs, "dropped": dict(sorted(dropped.items())),
            "vocab_size": len(vocab),
            "outside_lexicon": {
                "distinct": len(outside),
                "distinct_hanzi": sum(1 for ch, _ in outside if is_han(ch)),
                "top_hanzi": [[ch, n] for ch, n in outside if is_han(ch)][:50],
                "top_other": [[ch, n] for ch, n in outside if not is_han(ch)][:50]},
            **counts,
        }


def _pool(num_workers: int):
    if num_workers == 1:  # in-process: no start-up cost, and easy to debug
        return ThreadPool(1)
    # spawn, not fork: the parent may already run threads (datasets streaming, tokenizers).
    return multiprocessing.get_context("spawn").Pool(num_workers)


def _progress(enabled: bool):
    return rp.Progress(rp.TextColumn("preparing"), rp.BarColumn(), rp.DownloadColumn(),
                       rp.TransferSpeedColumn(), rp.TextColumn("{task.fields[lines]:,} lines"),
                       rp.TimeElapsedColumn(), disable=not enabled, console=Console(stderr=True))


def prepare(inputs: Sequence[str], out: str | Path, *, text_field: str = "text",
            text_column: str = "text", hf_split: str | None = None, to_simplified: bool = False,
            min_hanzi: int = 2, max_chars: int = 128, valid_fraction: float = 0.01,
            test_fraction: float = 0.01, seed: int = 1234, num_shards: int = 1,
            shard_index: int = 0, num_workers: int | None = None,
            progress: bool = True) -> dict:
    """Prepare a pinyin-annotated train/valid/test corpus from raw Chinese text.

    INPUT is a text file (.txt: a line per line; .jsonl: field TEXT_FIELD; .tsv, unquoted, and
    .csv: column TEXT_COLUMN; each may be .gz), a folder of them (recursive; a folder of
    parquet/arrow files is read as a Hugging Face dataset), or a Hugging Face dataset name
    (or hf:NAME; split HF_SPLIT, else all splits). Lines are normalised, split into sentences
    (into clauses past MAX_CHARS), kept if they hold at least MINHANZI hanzi, optionally
    converted to simplified, deduplicated and annotated with pinyin. A file whose name says
    train/valid/val/dev/test keeps that split; other lines go to valid/test with the given
    fractions by a hash of (SEED, line). With NUM_SHARDS > 1 only the lines of shard
    SHARD_INDEX are kept, so several machines can prepare disjoint parts.

    Writes to OUT: train/, valid/, test/ and dataset.json (memory-mapped arrays of code points
    and syllables, read with :func:`pinzi.corpus.load_prepared`), chars.tsv (char, count;
    unseen lexicon chars last at count 0) and stats.json (input lines read; the sentences
    they were split into, kept per split; what was dropped). Bad input (an unreadable file or
    folder, a bad line) is skipped, counted in stats.json and warned about. The same inputs
    and seed give byte-identical files (bar "run" in stats.json). Returns the stats.
    Raises FileNotFoundError for a missing input path, DataError for an unusable input (a
    file without the text field or column, no sentence kept at all), OutputError when OUT is
    a file or another process writes it.
    """
    started = time.perf_counter()
    if min(valid_fraction, test_fraction) < 0 or valid_fraction + test_fraction > 1:
        raise DataError("valid_fraction and test_fraction must be >= 0 and sum to at most 1")
    if not 0 <= shard_index < num_shards or max_chars < 1 or min_hanzi < 0:
        raise DataError("need 0 <= shard_index < num_shards, max_chars >= 1, min_hanzi >= 0")
    cfg = _Config(to_simplified, min_hanzi, max_chars, valid_fraction, test_fraction, seed,
                  num_shards, shard_index)
    workers = max(1, num_workers or os.cpu_count() or 1)
    sources = _resolve(inputs, hf_split)
    inputs_stats = [{"path": s.label, "format": s.fmt, "split": s.hint, "lines_read": 0,
                     "chars_read": 0, "bytes_read": 0, "sentences_kept": 0,
                     "skipped": Counter(), "dropped": Counter()} for s in sources]
    with exclusive(out) as out:  # one writer: two runs would mix their files
        tmp = out / ".prepare.tmp"  # finished files are moved into `out` only at the end
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            stats = _run(sources, inputs_stats, cfg, workers, tmp, progress,
                         (text_field, text_column))
            if not stats["sentences"]["kept"]:
                why = ", ".join(f"{k}={v}" for k, v in stats["dropped"].items()) or "none"
                raise DataError(f"no sentence to keep in the input ({stats['lines']['read']} "
                                f"line(s) read; dropped: {why}): nothing was written")
            stats.update(
                config={**asdict(cfg), "text_field": text_field, "text_column": text_column,
                        "hf_split": hf_split},
                seed=seed, shard={"num_shards": num_shards, "shard_index": shard_index},
                run={"elapsed_seconds": round(time.perf_counter() - started, 2),
                     "num_workers": workers})  # "run" is the only part that differs by run
            (tmp / "stats.json").write_text(json.dumps(
                stats, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _publish(tmp, out)
    return stats


def _run(sources: list[_Source], inputs_stats: list[dict], cfg: _Config, workers: int,
         tmp: Path, progress: bool, read_args: tuple) -> dict:
    """Read, process in the pool, collect in input order; returns the output half of stats."""
    collector = _Collector(tmp, inputs_stats)
    with _progress(progress) as bar, _pool(workers) as pool:
        total = sum(s.path.stat().st_size for s in sources if s.path)
        task = bar.add_task("prepare", total=total or None, lines=0)
        pending: deque = deque()
        for index, hint, lines in _chunks(sources, inputs_stats, read_args):
            pending.append((index, pool.apply_async(_process_chunk, (lines, hint, cfg))))
            bar.update(task, completed=sum(s["bytes_read"] for s in inputs_stats),
                       lines=sum(s["lines_read"] for s in inputs_stats))
            while len(pending) > 2 * workers:  # bounded in-flight work: flat memory
                index, result = pending.popleft()
                collector.add(index, result.get())
        for index, result in pending:
            collector.add(index, result.get())
    return collector.finish(tmp)


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished files from ``tmp`` into ``out``, replacing an earlier run's."""
    for path in sorted(tmp.iterdir()):
        target = out / path.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(path, target)
    tmp.rmdir()
