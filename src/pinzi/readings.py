"""Hanzi -> pinyin: the reading of every character of a text, polyphones read in their word.

The other direction of :mod:`pinzi.pinyin` (which reads what a user types). Training data gets
its pinyin from here (``pinzi data prepare``), the benchmarks their typed input, and ``pinzi
pinyin`` prints it with tone marks or digits. pypinyin's phrase dictionary does the reading.
"""

from __future__ import annotations

from functools import lru_cache

from pinzi.errors import SettingsError
from pinzi.pinyin import SYLLABLES, normalize_syllable

_SYLLABLE_SET = frozenset(SYLLABLES)
_NO_PINYIN = "\x00"  # what pypinyin gives, via our `errors` hook, for characters it cannot read
TONES = ("mark", "number", "none")  # zhōng, zhong1 (neutral tone: 5), zhong (canonical)


@lru_cache(maxsize=1)
def _pypinyin() -> tuple:
    """pypinyin's converter, styles by TONES and segmenter, imported on first use (~1 s)."""
    from pypinyin import Style
    from pypinyin.constants import RE_HANS
    from pypinyin.converter import UltimateConverter
    from pypinyin.core import Pinyin
    from pypinyin.seg.simpleseg import seg

    styles = dict(zip(TONES, (Style.TONE, Style.TONE3, Style.NORMAL), strict=True))
    # The neutral tone's 5 changes Style.TONE3 alone: toneless readings are pypinyin's defaults.
    return Pinyin(UltimateConverter(neutral_tone_with_five=True)), styles, seg, RE_HANS


@lru_cache(maxsize=1 << 17)
def _word_pinyin(word: str, tone: str = "none") -> tuple[str, ...]:
    """Readings of one word as segmented by pypinyin; cached, since words repeat a lot."""
    engine, styles, _, _ = _pypinyin()
    readings = engine.lazy_pinyin(word, style=styles[tone], strict=True,
                                  errors=lambda chars: [_NO_PINYIN] * len(chars))
    if len(readings) != len(word):  # never seen; keep the one-per-character promise anyway
        return (tuple(r for ch in word for r in _word_pinyin(ch, tone)) if len(word) > 1
                else ("",))
    return tuple("" if r == _NO_PINYIN else r if tone != "none" or r in _SYLLABLE_SET
                 else normalize_syllable(r) or "" for r in readings)


def annotate(text: str, tone: str = "none") -> list[str]:
    """Hanzi -> pinyin, exactly one entry per character of `text`.

    Each hanzi gets its canonical syllable (`tone` "none"), or that with its tone mark ("mark":
    zhōng, lǜ) or digit ("number": zhong1, lv4, le5), polyphones resolved from context by
    pypinyin's phrase dictionary ("银行" -> yin hang, "行走" -> xing zou); every other character
    (punctuation, digits, Latin, spaces, unreadable hanzi) gets "". Pass whole lines: words
    are found by pypinyin's segmenter over the line, then looked up in a cache.

    >>> annotate("去银行。"), annotate("重庆", tone="mark")
    (['qu', 'yin', 'hang', ''], ['chóng', 'qìng'])
    """
    if tone not in TONES:
        raise SettingsError(f"unknown tone style {tone!r}; choose from: {', '.join(TONES)}")
    _, _, seg, re_hans = _pypinyin()
    out: list[str] = []
    for word in seg(text):
        out.extend(_word_pinyin(word, tone) if re_hans.match(word) else [""] * len(word))
    return out
