"""Chinese text as pinzi reads it: which characters are hanzi, one normal form, and the
simplified and traditional scripts.

Every text that reaches a model goes through :func:`normalise` first: the training corpus
(``pinzi data prepare``), the texts a classifier labels, so that both see the same characters.
Models read and write simplified characters; OpenCC converts between the scripts, phrase by
phrase (头发 -> 頭髮, 发展 -> 發展).
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

# The hanzi of a regular-expression character class: 〇, CJK extension A, the unified block,
# the compatibility block and the supplementary planes' ideographs.
HAN = "\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_SPACES = re.compile(r"\s+")


def is_hanzi(ch: str) -> bool:
    """CJK ideographs, with exactly the ranges of the peers' score.py (so both keep one set)."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x3FFFF
            or 0xF900 <= cp <= 0xFAFF or cp == 0x3007)


@cache
def _norm_table() -> dict[int, int | None]:
    # Full-width ASCII -> ASCII, except the Chinese punctuation the corpus keeps as is.
    table: dict[int, int | None] = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}
    for ch in "，！？：；（）":
        del table[ord(ch)]
    # Control, format (zero-width, bidi, BOM) and lone surrogate code points go: the last come
    # from JSON escapes ("\ud800") and cannot be encoded.
    for cp in range(0x110000):
        if unicodedata.category(chr(cp)) in ("Cc", "Cf", "Cs"):
            table[cp] = 0x20 if chr(cp).isspace() else None
    return table


@cache
def _needs_norm() -> re.Pattern[str]:
    # What isprintable() lets through: full-width ASCII and stray ASCII spaces.
    full_width = "".join(re.escape(chr(cp)) for cp in _norm_table() if 0xFF00 < cp < 0xFF5F)
    return re.compile(f"[{full_width}]|  |^ | $")


def normalise(text: str) -> str:
    """Full-width ASCII to half-width, control/zero-width characters and lone surrogates
    dropped, spaces collapsed."""
    if text.isprintable() and not _needs_norm().search(text):  # the common, cheap case
        return text
    return _SPACES.sub(" ", text.translate(_norm_table())).strip()


@cache
def _opencc(config: str):
    import opencc  # loading it and a table takes ~0.1 s: paid only where a script is converted

    return opencc.OpenCC(config)


def to_traditional(text: str) -> str:
    """Simplified -> traditional characters (OpenCC ``s2t``, the standard forms, not Taiwan's or
    Hong Kong's variants): 我爱北京 -> 我愛北京."""
    return _opencc("s2t").convert(text)


def to_simplified(text: str) -> str:
    """Traditional -> simplified characters (OpenCC ``t2s``): 我愛北京 -> 我爱北京."""
    return _opencc("t2s").convert(text)
