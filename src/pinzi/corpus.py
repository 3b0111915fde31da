"""A prepared dataset on disk (``pinzi data prepare``'s output), its writer and its reader.

The format (``pinzi-corpus-1``) is pinzi's own: raw little-endian arrays that are read with
``np.memmap``, one folder per split::

    OUT/dataset.json        {"format": "pinzi-corpus-1", "splits": {name: {"lines", "chars"}},
                             "dtypes": {...}, "syllables": fingerprint of the inventory}
    OUT/<split>/chars.bin   uint32: the Unicode code points of every line, concatenated
    OUT/<split>/pinyin.bin  uint16: per character, 1 + the index of its toneless syllable in
                            pinzi.pinyin.SYLLABLES; 0 where it has none
    OUT/<split>/offsets.bin int64: lines + 1 offsets into the two above, offsets[0] = 0
    OUT/chars.tsv           character counts (the tokenizer's vocabulary); OUT/stats.json

:class:`CorpusWriter` writes it chunk by chunk (:class:`Rows`); :func:`open_prepared` opens
the folder and checks it, :func:`load_prepared` also checks that it can be trained on. Each
:class:`PreparedSplit` gives its texts and its :class:`TokenizedCorpus`: flat arrays of
character ids and syllable ids with line offsets, which is all the pinyin-denoising task reads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pinzi.errors import TrainingError
from pinzi.pinyin import SYLLABLES
from pinzi.tokenizer import PAD_ID, PinziTokenizer

FORMAT = "pinzi-corpus-1"
SPLITS = ("train", "valid", "test")
CHARS_FILE = "chars.tsv"
DATASET_FILE = "dataset.json"
DTYPES = {"chars": "<u4", "pinyin": "<u2", "offsets": "<i8"}  # the files of a split: <name>.bin
SYLLABLES_FINGERPRINT = hashlib.blake2b(" ".join(SYLLABLES).encode(), digest_size=8).hexdigest()
_CODES = {s: i + 1 for i, s in enumerate(SYLLABLES)}
_PREPARE = "`pinzi data prepare INPUT... --out DIR`"


# ---- writing ------------------------------------------------------------------------------------
@dataclass
class Rows:
    """Lines as flat arrays: code points, pinyin codes (1 + syllable index, 0: none), lengths."""

    chars: np.ndarray  # (total,) uint32
    pinyin: np.ndarray  # (total,) uint16
    lengths: np.ndarray  # (lines,) int64

    @classmethod
    def encode(cls, texts: Sequence[str], syllables: Iterable[str]) -> Rows:
        """``texts`` and one syllable per character of them, in order ("" or unknown: none)."""
        chars = np.frombuffer("".join(texts).encode("utf-32-le"), "<u4")
        codes = np.fromiter((_CODES.get(s, 0) for s in syllables), "<u2")
        if len(codes) != len(chars):
            raise ValueError(f"{len(codes)} syllables for {len(chars)} characters: "
                             "one per character expected")
        return cls(chars, codes, np.fromiter(map(len, texts), np.int64, len(texts)))

    def __len__(self) -> int:
        return len(self.lengths)

    def line(self, i: int) -> str:
        start = int(self.lengths[:i].sum())
        return self.chars[start : start + int(self.lengths[i])].tobytes().decode("utf-32-le")

    def select(self, keep: np.ndarray) -> Rows:
        """The lines where the boolean mask ``keep`` is true."""
        per_char = np.repeat(keep, self.lengths)
        return Rows(self.chars[per_char], self.pinyin[per_char], self.lengths[keep])


class CorpusWriter:
    """Streams the splits of a prepared dataset into ``directory`` (created here).

    ``add`` appends rows to a split; ``close`` writes ``dataset.json``, which makes the folder
    a dataset. The same rows in the same order give byte-identical files.
    """

    def __init__(self, directory: str | Path, splits: Sequence[str] = SPLITS):
        self.dir = Path(directory)
        self.lines = dict.fromkeys(splits, 0)
        self.chars = dict.fromkeys(splits, 0)
        for split in splits:
            (self.dir / split).mkdir(parents=True)
            self._write(split, chars=np.zeros(0), pinyin=np.zeros(0), offsets=np.zeros(1))

    def _write(self, split: str, **arrays: np.ndarray) -> None:
        for name, array in arrays.items():  # appended: a file holds no more than what it got
            with open(self.dir / split / f"{name}.bin", "ab") as f:
                f.write(array.astype(DTYPES[name], copy=False).tobytes())

    def add(self, split: str, rows: Rows) -> None:
        ends = self.chars[split] + np.cumsum(rows.lengths, dtype=np.int64)
        self._write(split, chars=rows.chars, pinyin=rows.pinyin, offsets=ends)
        self.lines[split] += len(rows)
        self.chars[split] += len(rows.chars)

    def append(self, split: str, texts: Sequence[str], syllables: Iterable[str]) -> None:
        """Append ``texts`` with one syllable per character (see :meth:`Rows.encode`)."""
        self.add(split, Rows.encode(texts, syllables))

    def close(self) -> dict:
        """Write ``dataset.json``, which makes the folder a dataset; returns what it holds."""
        info = {"format": FORMAT, "dtypes": DTYPES, "syllables": SYLLABLES_FINGERPRINT,
                "splits": {s: {"lines": self.lines[s], "chars": self.chars[s]}
                           for s in self.lines}}
        (self.dir / DATASET_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n",
                                             encoding="utf-8")
        return info

    def __enter__(self) -> CorpusWriter:
        return self

    def __exit__(self, kind, *exc) -> None:
        if kind is None:  # after an error: no dataset.json, so the folder is not a dataset
            self.close()


# ---- reading ------------------------------------------------------------------------------------
@dataclass
class TokenizedCorpus:
    """A prepared split as flat arrays: char ids, syllable token ids (0: not hanzi), offsets."""

    chars: np.ndarray  # (total,) int32
    syllables: np.ndarray  # (total,) int32
    offsets: np.ndarray  # (lines + 1,) int64

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def gather(self, lines: np.ndarray, max_length: int) -> tuple[np.ndarray, ...]:
        """(chars, syllables, lengths) of ``lines`` as padded (B, T) arrays."""
        lengths = np.minimum(self.lengths[lines], max_length)
        T = max(1, int(lengths.max(initial=1)))
        positions = self.offsets[lines][:, None] + np.arange(T)[None, :]
        real = np.arange(T)[None, :] < lengths[:, None]
        positions = np.where(real, positions, 0)
        if len(self.chars) == 0:
            return np.zeros_like(positions), np.zeros_like(positions), lengths
        return (np.where(real, self.chars[positions], PAD_ID),
                np.where(real, self.syllables[positions], 0), lengths)


def _array(path: Path, dtype: str, count: int) -> np.ndarray:
    if count == 0:  # an empty file cannot be memory-mapped
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


class PreparedSplit:
    """One split of a prepared dataset, memory-mapped: ``chars``, ``pinyin``, ``offsets``."""

    def __init__(self, directory: Path, lines: int, chars: int):
        self.path = directory
        self.chars = _array(directory / "chars.bin", DTYPES["chars"], chars)
        self.pinyin = _array(directory / "pinyin.bin", DTYPES["pinyin"], chars)
        self.offsets = _array(directory / "offsets.bin", DTYPES["offsets"], lines + 1)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def rows(self) -> Rows:
        """The split as :class:`Rows` (to write it elsewhere with :class:`CorpusWriter`)."""
        return Rows(self.chars, self.pinyin, np.diff(self.offsets))

    def texts(self) -> list[str]:
        try:
            whole = self.chars.tobytes().decode("utf-32-le")
        except UnicodeDecodeError as err:
            raise TrainingError(f"{self.path}/chars.bin is damaged: {err}") from err
        bounds = self.offsets.tolist()
        return [whole[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def tokenized(self, tokenizer: PinziTokenizer, chunk: int = 1 << 24) -> TokenizedCorpus:
        """Character ids and syllable token ids of every character, with the line offsets."""
        chars = np.empty(len(self.chars), np.int32)
        syllables = np.empty(len(self.chars), np.int32)
        for start in range(0, len(self.chars), chunk):
            part = slice(start, start + chunk)
            codepoints = self.chars[part]
            if codepoints.max() >= 0x110000:
                raise TrainingError(f"{self.path}/chars.bin is damaged: it holds a value that "
                                    f"is not a Unicode code point; run {_PREPARE} again")
            chars[part] = tokenizer.encode_codepoints(codepoints)
            codes = self.pinyin[part].astype(np.int32)
            syllables[part] = np.where(codes > 0, codes + (tokenizer.syllable_offset - 1), 0)
        return TokenizedCorpus(chars, syllables, np.array(self.offsets, np.int64))


def load_prepared(data_dir: str | Path) -> dict[str, PreparedSplit]:
    """The splits to train on: :func:`open_prepared`'s, with a train and a valid split and a
    train split that is not empty (:class:`TrainingError` otherwise)."""
    path = Path(data_dir)
    splits = open_prepared(path)
    for split in ("train", "valid"):
        if split not in splits:
            raise TrainingError(f"{path} has no {split!r} split")
    if len(splits["train"]) == 0:
        raise TrainingError(f"{path}: the train split is empty")
    return splits


def open_prepared(data_dir: str | Path) -> dict[str, PreparedSplit]:
    """The splits written by `pinzi data prepare`, whatever they hold, with a clear
    :class:`TrainingError` when the folder is not one, is damaged, or is of another format."""
    path = Path(data_dir)
    if not (path / CHARS_FILE).exists():
        raise TrainingError(f"{path} is not a prepared dataset (no {CHARS_FILE}): run "
                            f"{_PREPARE} first")
    if not (path / DATASET_FILE).exists():
        if (path / "dataset_dict.json").exists() or (path / "train" / "state.json").exists():
            raise TrainingError(f"{path} was prepared by an older pinzi (the `datasets` Arrow "
                                f"format, no longer read): run {_PREPARE} again")
        raise TrainingError(f"{path} is an incomplete prepared dataset (no {DATASET_FILE}): "
                            f"run {_PREPARE} again")
    try:
        info = json.loads((path / DATASET_FILE).read_text(encoding="utf-8"))
        fmt, splits = info.get("format"), info["splits"]
        sizes = {name: (int(s["lines"]), int(s["chars"])) for name, s in splits.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise TrainingError(f"{path}/{DATASET_FILE} is damaged ({type(err).__name__}: {err}): "
                            f"run {_PREPARE} again") from err
    if fmt != FORMAT or info.get("dtypes") != DTYPES:
        raise TrainingError(f"{path} holds a prepared dataset of format {fmt!r}, which this "
                            f"pinzi does not read (it reads {FORMAT!r}): run {_PREPARE} again")
    if info.get("syllables") != SYLLABLES_FINGERPRINT:
        raise TrainingError(f"{path} was prepared with another syllable inventory than this "
                            f"pinzi's: run {_PREPARE} again")
    for name, (lines, chars) in sizes.items():
        _check_split(path / name, lines, chars)
    return {name: PreparedSplit(path / name, *sizes[name]) for name in sizes}


def _check_split(directory: Path, lines: int, chars: int) -> None:
    if lines < 0 or chars < 0:
        raise TrainingError(f"{directory.parent}/{DATASET_FILE} is damaged (negative sizes): "
                            f"run {_PREPARE} again")
    expected = {"chars": chars * 4, "pinyin": chars * 2, "offsets": (lines + 1) * 8}
    for name, size in expected.items():
        file = directory / f"{name}.bin"
        if not file.is_file():
            raise TrainingError(f"{directory} lacks {file.name}: the dataset is incomplete; "
                                f"run {_PREPARE} again")
        if file.stat().st_size != size:
            raise TrainingError(f"{file} holds {file.stat().st_size} bytes where "
                                f"{DATASET_FILE} says {size}: the dataset is damaged; run "
                                f"{_PREPARE} again")
    offsets = _array(directory / "offsets.bin", DTYPES["offsets"], lines + 1)
    if offsets[0] != 0 or offsets[-1] != chars:
        raise TrainingError(f"{directory}/offsets.bin is damaged (its offsets do not span the "
                            f"{chars} characters); run {_PREPARE} again")
