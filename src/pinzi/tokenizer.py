"""The one input vocabulary of every pinzi model: special tokens, characters, syllables, initials.

Ids are laid out in four contiguous sections so that the conversion head can score
"every character" as a slice of the embedding matrix::

    [PAD] [UNK] [CLS] [SEP] [MASK] | chars ... | syllables (zhong, guo, ...) | initials (zh, g, ...)

The same string can live in two sections (the Latin letter ``a`` and the syllable ``a``,
the syllable ``m`` and the initial ``m``), so lookups always name their section.
Saved as ``vocab.json`` beside the model weights.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from pinzi.errors import ModelLoadError
from pinzi.hub import damaged
from pinzi.lexicon import Lexicon
from pinzi.pinyin import INITIALS, SYLLABLES, Piece, initial_of

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIALS))
VOCAB_FILE = "vocab.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"  # for Hugging Face, see save_tokenizer_config


class PinziTokenizer:
    """Maps characters, syllables and initials to ids and back.

    >>> tok = PinziTokenizer(["中", "国"])
    >>> tok.decode_chars([tok.char_id("国"), tok.char_id("中")])
    '国中'
    """

    def __init__(self, chars: Sequence[str]):
        if len(set(chars)) != len(chars):
            raise ValueError("duplicate characters in the vocabulary")
        self.chars: tuple[str, ...] = tuple(chars)
        self.char_offset = len(SPECIALS)
        self.syllable_offset = self.char_offset + len(self.chars)
        self.initial_offset = self.syllable_offset + len(SYLLABLES)
        self.vocab_size = self.initial_offset + len(INITIALS)
        self._char_ids = {c: i + self.char_offset for i, c in enumerate(self.chars)}
        self._syllable_ids = {s: i + self.syllable_offset for i, s in enumerate(SYLLABLES)}
        self._initial_ids = {s: i + self.initial_offset for i, s in enumerate(INITIALS)}

    @property
    def n_chars(self) -> int:
        return len(self.chars)

    # ---- lookups -------------------------------------------------------------------------
    def char_id(self, char: str) -> int:
        return self._char_ids.get(char, UNK_ID)

    def syllable_id(self, syllable: str) -> int:
        return self._syllable_ids[syllable]

    def initial_id(self, initial: str) -> int:
        return self._initial_ids[initial]

    def encode_text(self, text: str) -> list[int]:
        return [self._char_ids.get(c, UNK_ID) for c in text]

    def decode_chars(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i - self.char_offset] for i in ids)

    def piece_id(self, piece: Piece) -> int:
        """The input token for a parsed pinyin piece: the syllable itself, else its initial."""
        if piece.kind == "syllable":  # syllables[0] is the canonical spelling of what was typed
            return self._syllable_ids[piece.syllables[0]]
        if piece.kind == "initial":
            return self._initial_ids[piece.text]
        initials = {initial_of(s) for s in piece.syllables}
        if len(initials) == 1 and None not in initials:
            return self._initial_ids[initials.pop()]
        return MASK_ID  # a prefix such as "a" or "e" with no initial: pure "some hanzi here"

    @cached_property
    def codepoint_table(self) -> np.ndarray:
        """Codepoint -> char id (UNK elsewhere): encodes whole corpora without a Python loop."""
        table = np.full(0x110000, UNK_ID, dtype=np.int32)
        for char, idx in self._char_ids.items():
            if len(char) == 1:
                table[ord(char)] = idx
        return table

    def encode_codepoints(self, codepoints: np.ndarray) -> np.ndarray:
        return self.codepoint_table[codepoints]

    # ---- candidates ---------------------------------------------------------------------------
    def char_indices(self, chars: Iterable[str]) -> np.ndarray:
        """Indices *within the char section* (what the conversion head scores)."""
        idx = [self._char_ids[c] - self.char_offset for c in chars if c in self._char_ids]
        return np.asarray(idx, dtype=np.int64)

    def candidate_matrix(self, lexicon: Lexicon) -> np.ndarray:
        """Bool matrix (vocab_size, n_chars): which characters each input token can stand for.

        Rows of syllables hold the characters readable that way, rows of initials the
        characters with a reading that starts with that initial; every other row is empty.
        """
        matrix = np.zeros((self.vocab_size, self.n_chars), dtype=bool)
        for syllable, token in self._syllable_ids.items():
            matrix[token, self.char_indices(lexicon.chars_for(syllable))] = True
        for initial, token in self._initial_ids.items():
            matrix[token, self.char_indices(lexicon.chars_for_initial(initial))] = True
        return matrix

    def piece_candidates(self, lexicon: Lexicon, piece: Piece) -> np.ndarray:
        return self.char_indices(lexicon.chars_for_piece(piece))

    # ---- persistence -------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        payload = {"specials": SPECIALS, "chars": self.chars, "syllables": SYLLABLES,
                   "initials": INITIALS}
        Path(directory, VOCAB_FILE).write_text(json.dumps(payload, ensure_ascii=False),
                                               encoding="utf-8")
        self.save_tokenizer_config(directory)

    def save_tokenizer_config(self, directory: str | Path,
                              model_max_length: int | None = None) -> None:
        """Write ``tokenizer_config.json``, the file the Hugging Face ecosystem reads first: the
        tokenizer class (:class:`pinzi.hf.PinziHFTokenizer`, which ``AutoTokenizer`` finds once
        :mod:`pinzi.model` is imported), the special tokens and the longest input.

        ``model_max_length`` defaults to the ``max_position_embeddings`` of a ``config.json``
        already in ``directory`` (the model is saved first); without one it is left out.
        """
        if model_max_length is None:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                model_config = json.loads(Path(directory, "config.json").read_text("utf-8"))
                model_max_length = model_config.get("max_position_embeddings")
        payload = {"tokenizer_class": "PinziHFTokenizer", "pad_token": SPECIALS[PAD_ID],
                   "unk_token": SPECIALS[UNK_ID], "cls_token": SPECIALS[CLS_ID],
                   "sep_token": SPECIALS[SEP_ID], "mask_token": SPECIALS[MASK_ID],
                   "clean_up_tokenization_spaces": False}
        if isinstance(model_max_length, int):
            payload["model_max_length"] = model_max_length
        Path(directory, TOKENIZER_CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n",
                                                          encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> PinziTokenizer:
        """The folder's ``vocab.json``; :func:`pinzi.hub.damaged` when it is missing, is not a
        pinzi vocabulary or was written for another syllable inventory."""
        path = Path(directory, VOCAB_FILE)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            chars = payload["chars"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise damaged(directory, f"{VOCAB_FILE} is missing or is not a pinzi vocabulary: "
                          f"{err}") from err
        if (tuple(payload.get("syllables", ())) != SYLLABLES
                or tuple(payload.get("initials", ())) != INITIALS
                or tuple(payload.get("specials", ())) != SPECIALS):
            raise ModelLoadError(f"{path} was written for another syllable inventory; "
                                 "it cannot be used with this version of pinzi")
        if not isinstance(chars, list) or not all(isinstance(c, str) and c for c in chars):
            raise damaged(directory, f"{VOCAB_FILE}: its chars are not a list of characters")
        try:
            return cls(chars)
        except ValueError as err:
            raise damaged(directory, f"{VOCAB_FILE}: {err}") from err

    @classmethod
    def from_counts(cls, counts_file: str | Path, *, min_count: int = 2,
                    max_chars: int = 12000, lexicon: Lexicon | None = None) -> PinziTokenizer:
        """Build the char section from a prepared dataset's ``chars.tsv``.

        Keeps every lexicon character plus the other corpus characters seen at least
        ``min_count`` times, most frequent first, at most ``max_chars`` in all.
        """
        lexicon = lexicon or Lexicon.default()
        frequent: list[str] = []
        with open(counts_file, encoding="utf-8") as f:
            for line in f:
                char, _, count = line.rstrip("\n").partition("\t")
                if len(char) == 1 and not char.isspace() and int(count or 0) >= min_count:
                    frequent.append(char)
        extras = [c for c in frequent if c not in lexicon]
        in_lexicon = set(frequent) - set(extras)
        # Frequent lexicon chars first, then the rest of the lexicon, then the corpus extras
        # (digits, Latin, punctuation, rare hanzi) up to the size cap.
        chars = [c for c in frequent if c in in_lexicon]
        chars += [c for c in lexicon.chars if c not in in_lexicon]
        return cls(chars + extras[: max(0, max_chars - len(chars))])
