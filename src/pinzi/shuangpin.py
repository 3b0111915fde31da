"""Shuangpin (双拼): two keys a syllable, read into pinyin in front of the converter.

Each scheme gives zh, ch and sh a key of their own (the other initials keep their letter) and
puts every final on one key; a zero-initial syllable (an, er, ou) is typed by the scheme's own
rule. :func:`to_pinyin` turns typed keys into pinyin with apostrophes between syllables
(小鹤 ``nihc`` -> ``ni'hao``), which the pinyin parser then reads like any other input: fuzzy
pinyin, punctuation and the user dictionary work unchanged. The key tables, with examples, are
in docs/shuangpin.md (:func:`key_table` writes them; a test checks the page against the code).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from pinzi.errors import SettingsError
from pinzi.pinyin import SYLLABLES, initial_of, normalize_syllable

FULL_PINYIN = "pinyin"  # the scheme name that means full pinyin (全拼): keys taken as typed
# Key -> initial: every scheme here puts zh, ch and sh on v, i and u, the rest on their letter.
_INITIAL_KEYS = {"v": "zh", "i": "ch", "u": "sh", **{i: i for i in "bpmfdtnlgkhjqxrzcsyw"}}


@dataclass(frozen=True)
class Scheme:
    """One shuangpin layout: ``finals`` lists, key by key, the finals on it (``"k=ing,uai"``);
    where a key carries several, a pair reads as the first that makes a syllable with the
    initial. ``zero_key``: the key that starts every zero-initial syllable (``o`` + the
    final's key: ``oj`` = an), or ``""`` for the doubling rule (a one-letter final doubled,
    ``aa``; a two-letter one spelled, ``an``; ang and eng as their first letter and the
    final's key, ``ah``)."""

    name: str
    title: str
    finals: str
    zero_key: str = ""
    initial_keys = _INITIAL_KEYS

    @cached_property
    def final_keys(self) -> dict[str, tuple[str, ...]]:
        """Key -> the finals on it, in the order a pair tries them."""
        return {key: tuple(finals.split(",")) for key, finals in
                (entry.split("=") for entry in self.finals.split())}

    @cached_property
    def key_of_final(self) -> dict[str, str]:
        """Final -> the key that types it (the first listing it)."""
        found: dict[str, str] = {}
        for key, finals in self.final_keys.items():
            for final in finals:
                found.setdefault(final, key)
        return found

    @cached_property
    def zero_initial(self) -> dict[str, str]:
        """Zero-initial syllable -> its two keys."""
        keys = {}
        for syllable in SYLLABLES:
            if initial_of(syllable) is not None or not syllable.isascii():  # ê: no keys
                continue
            if not self.zero_key and len(syllable) <= 2:
                keys[syllable] = syllable * 2 if len(syllable) == 1 else syllable
            elif syllable in self.key_of_final:
                start = self.zero_key or syllable[0]
                keys[syllable] = start + self.key_of_final[syllable]
        return keys

    @cached_property
    def zero_starts(self) -> str:
        """The keys that start a zero-initial syllable."""
        return self.zero_key or "aeo"

    @cached_property
    def pairs(self) -> dict[str, str]:
        """Every two keys that spell a syllable -> that syllable."""
        found = {keys: syllable for syllable, keys in self.zero_initial.items()}
        for first, initial in self.initial_keys.items():
            for second, finals in self.final_keys.items():
                readings = (normalize_syllable(initial + final) for final in finals)
                syllable = next(filter(None, readings), None)
                if syllable is not None:
                    found[first + second] = syllable
        return found

    def encode(self, syllable: str) -> str | None:
        """The two keys that type ``syllable``, or None if the scheme has no keys for it
        (``ê``, ``hm``, or one that shares its keys with a more common one, as lo with luo).

        >>> SCHEMES["xiaohe"].encode("shi"), SCHEMES["microsoft"].encode("er")
        ('ui', 'or')
        """
        initial = initial_of(syllable)
        if initial is None:
            keys = self.zero_initial.get(syllable)
        else:
            final_key = self.key_of_final.get(syllable[len(initial):])
            initial_key = next(k for k, i in self.initial_keys.items() if i == initial)
            keys = initial_key + final_key if final_key else None
        return keys if keys is not None and self.pairs.get(keys) == syllable else None


_COMMON = "q=iu e=e u=u i=i o=uo,o a=a s=ong,iong f=en g=eng h=ang j=an"
_MICROSOFT = (_COMMON + " w=ia,ua r=uan,er t=ue,ve y=uai,v p=un d=iang,uang k=ao l=ai ;=ing"
              " z=ei x=ie c=iao b=ou n=in m=ian")
SCHEMES: dict[str, Scheme] = {scheme.name: scheme for scheme in (
    Scheme("xiaohe", "小鹤双拼 Xiaohe (Flypy)", _COMMON + " w=ei r=uan t=ue,ve y=un p=ie d=ai"
           " k=ing,uai l=iang,uang z=ou x=ia,ua c=ao v=ui,v b=in n=iao m=ian"),
    Scheme("ziranma", "自然码 Ziranma", _COMMON + " w=ia,ua r=uan t=ue,ve y=ing,uai p=un"
           " d=iang,uang k=ao l=ai z=ei x=ie c=iao v=ui,v b=ou n=in m=ian"),
    # Microsoft also takes v for üe (lv = lüe, jv = jue); Sogou keeps v for ui alone.
    Scheme("microsoft", "微软双拼 Microsoft", _MICROSOFT + " v=ui,ue,ve", zero_key="o"),
    Scheme("sogou", "搜狗双拼 Sogou", _MICROSOFT + " v=ui", zero_key="o"),
)}
SCHEME_NAMES: tuple[str, ...] = (FULL_PINYIN, *SCHEMES)


def check_scheme(name: str | None) -> str | None:
    """``name`` if it is a scheme (None and ``"pinyin"`` mean full pinyin); else a
    :class:`~pinzi.errors.SettingsError` naming the choices."""
    if name is not None and name not in SCHEME_NAMES:
        raise SettingsError(f"unknown shuangpin scheme {name!r}; choose from: "
                            f"{', '.join(SCHEME_NAMES)}")
    return name


def to_pinyin(typed: str, scheme: str | None) -> str:
    """Shuangpin keys -> pinyin, syllables apart by apostrophes; full pinyin (None or
    ``"pinyin"``) unchanged.

    Keys go by pairs from the start of each run of letters; anything else (digits,
    punctuation, spaces, apostrophes, hanzi) passes through and ends the run. An odd last key
    is an unfinished syllable, kept as its initial (``zh`` for 小鹤 ``v``), which the parser
    reads as an abbreviation; a pair that spells no syllable is kept as typed. Raises
    :class:`~pinzi.errors.SettingsError` for an unknown scheme.

    >>> to_pinyin("nihc", "xiaohe"), to_pinyin("wode,v", "xiaohe"), to_pinyin("ah", "xiaohe")
    ("ni'hao", "wo'de,zh", 'ang')
    """
    if check_scheme(scheme) in (None, FULL_PINYIN):
        return typed
    layout = SCHEMES[scheme]
    out: list[str] = []
    run: list[str] = []  # pieces of the current run of keys, joined by apostrophes
    first = ""  # the first key of a pair not yet complete
    for char in typed:
        key = char.lower()
        if first and key in layout.final_keys:  # ; too, where a final is on it
            run.append(layout.pairs.get(first + key, first + key))
            first = ""
        elif key in layout.initial_keys or (len(key) == 1 and key in layout.zero_starts):
            first = key
        else:
            out += ["'".join([*run, *_unfinished(layout, first)]), char]
            run, first = [], ""
    out.append("'".join([*run, *_unfinished(layout, first)]))
    return "".join(out)


def _unfinished(layout: Scheme, first: str) -> list[str]:
    """A lone first key as the initial it stands for (a zero-initial key as itself)."""
    return [layout.initial_keys.get(first, first)] if first else []


def key_table(name: str) -> str:
    """The scheme's keys as Markdown: zh/ch/sh, the finals key by key, the zero-initial
    syllables (what docs/shuangpin.md shows)."""
    layout = SCHEMES[name]
    special = ", ".join(f"{i} = `{k}`" for k, i in layout.initial_keys.items() if len(i) == 2)
    rows = [f"| `{key}` | {', '.join(layout.final_keys[key])} |"
            for key in "qwertyuiopasdfghjkl;zxcvbnm" if key in layout.final_keys]
    zero = ", ".join(f"{s} `{k}`" for s, k in layout.zero_initial.items())
    return "\n".join([f"### {layout.title} (`--scheme {name}`)", "",
                      f"Initials: {special}; every other initial is its own letter.", "",
                      "| key | finals |", "|---|---|", *rows, "",
                      f"Zero-initial syllables: {zero}.", ""])
