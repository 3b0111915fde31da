"""Pinyin core: the syllable inventory, spelling normalisation, the input parser
(typed pinyin -> ranked segmentations into pieces) and hanzi -> pinyin annotation.

The rules implemented here are written down, with examples, in docs/pinyin.md.
"""

from __future__ import annotations

import gzip
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from pinzi.errors import SettingsError

# Every toneless syllable pypinyin (Style.NORMAL) can emit for any character or phrase in its
# dictionaries -- the standard ~400 plus interjections (ng hm hng m n ê) and rare readings
# (biang, din, len, fiao, ...). ü is written "v" (lv, nve); j/q/x/y keep "u" (ju, yue).
_SYLLABLE_TEXT = """
a ai an ang ao ba bai ban bang bao bei ben beng bi bian biang biao bie bin bing bo bong bu ca
cai can cang cao ce cei cen ceng cha chai chan chang chao che chen cheng chi chong chou chu
chua chuai chuan chuang chui chun chuo ci cong cou cu cuan cui cun cuo da dai dan dang dao de
dei den deng di dia dian diao die din ding diu dong dou du duan dui dun duo e ei en eng er fa
fan fang fei fen feng fiao fo fou fu ga gai gan gang gao ge gei gen geng gong gou gu gua guai
guan guang gui gun guo ha hai han hang hao he hei hen heng hm hng hong hou hu hua huai huan
huang hui hun huo ji jia jian jiang jiao jie jin jing jiong jiu ju juan jue jun ka kai kan kang
kao ke kei ken keng kong kou ku kua kuai kuan kuang kui kun kuo la lai lan lang lao le lei len
leng li lia lian liang liao lie lin ling liu lo long lou lu luan lun luo lv lve m ma mai man
mang mao me mei men meng mi mian miao mie min ming miu mo mou mu n na nai nan nang nao ne nei
nen neng ng ni nia nian niang niao nie nin ning niu nong nou nu nuan nun nuo nv nve o ou pa pai
pan pang pao pei pen peng pi pian piao pie pin ping po pou pu qi qia qian qiang qiao qie qin
qing qiong qiu qu quan que qun ran rang rao re ren reng ri rong rou ru rua ruan rui run ruo sa
sai san sang sao se sen seng sha shai shan shang shao she shei shen sheng shi shou shu shua
shuai shuan shuang shui shun shuo si song sou su suan sui sun suo ta tai tan tang tao te tei
teng ti tian tiao tie ting tong tou tu tuan tui tun tuo wa wai wan wang wei wen weng wo wong wu
xi xia xian xiang xiao xie xin xing xiong xiu xu xuan xue xun ya yan yang yao ye yi yin ying yo
yong you yu yuan yue yun za zai zan zang zao ze zei zen zeng zha zhai zhan zhang zhao zhe zhei
zhen zheng zhi zhong zhou zhu zhua zhuai zhuan zhuang zhui zhun zhuo zi zong zou zu zuan zui
zun zuo ê
"""
SYLLABLES: tuple[str, ...] = tuple(sorted(_SYLLABLE_TEXT.split()))
_SYLLABLE_SET = frozenset(SYLLABLES)

INITIALS: tuple[str, ...] = ("b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q",
                             "x", "zh", "ch", "sh", "r", "z", "c", "s", "y", "w")
_INITIAL_SET = frozenset(INITIALS)

FUZZY_PAIRS: dict[str, tuple[str, str]] = {
    name: tuple(name.split("=", 1))  # type: ignore[misc]
    for name in ("z=zh", "c=ch", "s=sh", "n=l", "f=h", "r=l",
                 "an=ang", "en=eng", "in=ing", "ian=iang", "uan=uang")
}


def initial_of(syllable: str) -> str | None:
    """The initial a canonical syllable is abbreviated by ("zhong" -> "zh", "yan" -> "y").

    Zero-initial syllables ("an", "e", "er", "ê") give None. Syllabic nasals count by their
    first letter ("m" -> "m", "ng" -> "n", "hm" -> "h"), since that is what a user types.

    >>> initial_of("zhong"), initial_of("zi"), initial_of("an")
    ('zh', 'z', None)
    """
    if syllable not in _SYLLABLE_SET:
        return None
    if syllable[:2] in _INITIAL_SET:
        return syllable[:2]
    return syllable[:1] if syllable[:1] in _INITIAL_SET else None


# Typed spelling -> canonical syllable. Besides the canonical spellings we accept "ue" for the
# ü of lüe/nüe (lue = lve) and "v" for the u of j/q/x/y (jv = ju), as most IMEs do.
_SPELLINGS: dict[str, str] = {s: s for s in SYLLABLES}
_SPELLINGS.update(lue="lve", nue="nve")
_SPELLINGS.update({s[0] + "v" + s[2:]: s for s in SYLLABLES if s[0] in "jqxy" and s[1:2] == "u"})
_MAX_SPELLING = max(map(len, _SPELLINGS))


def _prefix_table() -> dict[str, tuple[str, ...]]:
    """Proper prefixes of spellings that are neither a spelling nor an initial ("zho", "bia"),
    each with the syllables it may be the start of."""
    table: dict[str, dict[str, None]] = {}
    for spelling, syllable in sorted(_SPELLINGS.items()):
        for end in range(1, len(spelling)):
            head = spelling[:end]
            if head not in _SPELLINGS and head not in _INITIAL_SET:
                table.setdefault(head, {})[syllable] = None
    return {head: tuple(syllables) for head, syllables in table.items()}


_PREFIXES = _prefix_table()


# --------------------------------------------------------------------------- normalisation
_TONE_MARKS = str.maketrans("", "", "\u0300\u0301\u0304\u030c")  # grave acute macron caron
_LATIN = "\u00c0-\u024f\u1e00-\u1eff"  # precomposed accented Latin letters
_MARKED = re.compile(rf"[A-Za-z{_LATIN}][\u0300-\u036f]+|[{_LATIN}]")  # a letter and its marks


def _fold_marked(match: re.Match[str]) -> str:
    """One accented Latin letter -> pinyin spelling: tones dropped, ü -> v, ê kept."""
    decomposed = unicodedata.normalize("NFD", match.group())
    base, marks = decomposed[0], decomposed[1:]
    if base in "uU" and "\u0308" in marks:
        base, marks = ("v" if base == "u" else "V"), marks.replace("\u0308", "")
    elif base in "eE" and "\u0302" in marks:
        base, marks = ("ê" if base == "e" else "Ê"), marks.replace("\u0302", "")
    if base not in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZêÊ":
        return match.group()
    # Any mark other than a tone (ç, ñ) means this is not a pinyin letter: keep it as typed.
    return match.group() if marks.translate(_TONE_MARKS) else base


def _fold(text: str) -> str:
    """Tone marks dropped and ü written v; ASCII (and so case) is left alone."""
    return text if text.isascii() else _MARKED.sub(_fold_marked, text)


def normalize_syllable(s: str) -> str | None:
    """Any spelling of one syllable -> canonical form, or None if it is not a syllable.

    Case, tone marks, a trailing tone digit, ü / u: / v and lue / lve are all accepted:
    "Lü", "lu:", "lǚ", "lv3" -> "lv"; "lue", "lüe" -> "lve"; "jv" -> "ju".

    >>> normalize_syllable("Lǚ"), normalize_syllable("lue"), normalize_syllable("iphone")
    ('lv', 'lve', None)
    """
    match = re.fullmatch(r"([a-zê]+)[1-5]?", _fold(s.strip()).lower().replace("u:", "v"))
    return _SPELLINGS.get(match.group(1)) if match else None


# ---------------------------------------------------------------------------- the parser

@dataclass(frozen=True)
class Piece:
    """One unit of a reading of the input: a syllable, an abbreviation, or pass-through text."""

    text: str  # as typed, lower-cased and tone-free (pass-through text keeps its case)
    kind: str  # "syllable" | "initial" | "prefix" | "other"
    syllables: tuple[str, ...] = ()  # canonical syllables this piece may stand for
    punct: str = ""  # Chinese punctuation replacing `text` when requested, else ""

    @property
    def output(self) -> str:
        """Text to emit for a pass-through piece (Chinese punctuation when requested)."""
        return self.punct or self.text


_CHINESE_PUNCT = {
    ",": "，", ".": "。", "?": "？", "!": "！", ":": "：", ";": "；",
    "(": "（", ")": "）", "[": "【", "]": "】", "<": "《", ">": "》",
    "\\": "、", "~": "～", "^": "……", "_": "——", '"': "“",
}  # fmt: skip


def to_chinese_punct(ch: str) -> str:
    """ASCII punctuation -> Chinese punctuation; other characters unchanged.

    '"' maps to an opening quote here; `segmentations` alternates “ and ” itself.

    >>> to_chinese_punct(","), to_chinese_punct("a")
    ('，', 'a')
    """
    return _CHINESE_PUNCT.get(ch, ch)


# Token kinds, tried in this order. URLs and e-mail addresses are taken whole, before their
# letters could be read as pinyin; they may only start a word, which also keeps the scan
# linear. "u:" after l/n is the ü of lü/nü.
_SEPARATED = re.compile(r"[\s'’]")
_TOKEN = re.compile(
    r"""
    (?P<url>(?<![A-Za-z0-9._%+-])(?:
        (?:[A-Za-z][A-Za-z0-9+.-]*://|www\.)[!-~]*[A-Za-z0-9/#=_-]
        |[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+
        |(?:[A-Za-z0-9-]+\.)+(?:com|cn|net|org|io|edu|gov|info)\b(?:/[!-~]*[A-Za-z0-9/#=_-])?))
    |(?P<sep>[\s'’]+)
    |(?P<num>[0-9]+(?:[.,:][0-9]+)*)
    |(?P<letters>(?:(?<=[lnLN])[uU]:|[A-Za-zêÊ])+)
    |(?P<punct>[!-&(-/:-@\[-`{-~]+)
    |(?P<other>[^\sA-Za-zêÊ0-9!-~’]+)
    """,
    re.VERBOSE,
)


def _all_syllables(run: str) -> bool:
    """Whether a lower-case letter run reads as full syllables only (decides tone digits)."""
    ok = [True] + [False] * len(run)  # ok[j]: run[:j] reads as full syllables
    for j in range(1, len(run) + 1):
        ok[j] = any(ok[i] and run[i:j] in _SPELLINGS for i in range(max(0, j - _MAX_SPELLING), j))
    return ok[-1]


def _tokens(text: str) -> list[tuple[str, str]]:
    """Split input into (kind, text) tokens of kind url, num, letters, punct or other.

    Separators are dropped, and so is a tone digit: one digit 1-5 right after a letter run that
    reads as full syllables ("ni3hao3"), but not the digits of "mp3" or "iPhone15".
    """
    out: list[tuple[str, str]] = []
    tone_may_follow = False
    for m in _TOKEN.finditer(_fold(text)):
        kind, tok = m.lastgroup or "other", m.group()
        if kind == "letters":
            tok = tok.replace("u:", "v").replace("U:", "V")
        elif kind == "sep" or (tone_may_follow and tok in ("1", "2", "3", "4", "5")):
            tone_may_follow = False
            continue
        tone_may_follow = kind == "letters" and _all_syllables(tok.lower())
        out.append((kind, tok))
    return out


def normalize_input(text: str) -> str:
    """The input as the parser sees it: every segmentation re-joins to this (up to case).

    Tone marks and tone digits removed, ü and u: written v, separators (whitespace and
    apostrophes) removed; URLs, numbers and other pass-through text are kept verbatim.

    >>> normalize_input("Nǐ hǎo, xi'an3 iPhone")
    'Nihao,xianiPhone'
    """
    return "".join(tok for _, tok in _tokens(text))


# Costs of a reading (lower is better): each piece costs _PIECE, an abbreviation or unfinished
# syllable more. A zero-initial syllable inside a letter run costs a little extra, because
# standard orthography writes an apostrophe there (fang'an): "fangan" reads "fan gan" first.
# The syllabic nasals ng, hm, hng are rarely meant ("jing" is not "ji ng") and cost extra too.
_PIECE, _INITIAL, _PREFIX, _ZERO_INITIAL, _NASAL = 10, 10, 5, 1, 3
# An English word typed among pinyin (hellonihao, wifi) passes through as typed: it costs
# _PIECE + _ENGLISH, plus _RARITY per Zipf point below 6 (a common word, 6 and above, adds
# nothing; the rarest listed, Zipf 3, add 6). So up to three full syllables (30) always read as
# pinyin (xian, change -> chang'e, hahaha), and an English word wins over a reading that needs
# initials or unfinished syllables (hello: he l l o, 60).
_ENGLISH, _RARITY = 20, 2
_MIN_ENGLISH, _MAX_ENGLISH = 3, 15  # letters of a listed English word
_Span = tuple[int, int, str]  # start, end, kind within a letter run


@lru_cache(maxsize=1)
def _english_costs() -> dict[str, int]:
    """The listed English words (resources/english.tsv.gz) and what reading one costs."""
    path = Path(str(resources.files("pinzi") / "resources" / "english.tsv.gz"))
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [line.split("\t") for line in f if not line.startswith("#")]
    return {word: _PIECE + _ENGLISH + round(_RARITY * max(0.0, 6 - float(zipf)))
            for word, zipf in rows}


@lru_cache(maxsize=2048)
def _read_run(run: str, last: bool, k: int) -> tuple[tuple[int, tuple[_Span, ...]], ...]:
    """The k cheapest readings of one lower-case letter run, as (cost, spans).

    Dynamic programming over positions keeping the k best partial readings per position
    (exact k-best, as costs add up), so the work is linear in the run length. Spans are
    chained as (previous chain, span) while reading; sorts are stable, hence deterministic.
    """
    n = len(run)
    english = _english_costs()
    best: list[list[tuple[int, tuple | None]]] = [[] for _ in range(n + 1)]
    best[0] = [(0, None)]
    for i in range(n):
        if not best[i]:
            continue
        best[i] = sorted(best[i], key=_cost)[:k]
        for j in range(i + _MIN_ENGLISH, min(n, i + _MAX_ENGLISH) + 1):
            cost = english.get(run[i:j])
            if cost is not None:
                best[j].extend((c + cost, (chain, (i, j, "english"))) for c, chain in best[i])
        for j in range(i + 1, min(n, i + _MAX_SPELLING) + 1):
            s = run[i:j]
            if s in _INITIAL_SET:  # also "m" and "n", which are syllables too
                kind, cost = "initial", _PIECE + _INITIAL
            elif s in _SPELLINGS:
                zero = i > 0 and initial_of(_SPELLINGS[s]) is None
                nasal = s in ("ng", "hm", "hng")
                kind, cost = "syllable", _PIECE + _ZERO_INITIAL * zero + _NASAL * nasal
            elif last and j == n and s in _PREFIXES:
                kind, cost = "prefix", _PIECE + _PREFIX
            else:
                continue
            best[j].extend((c + cost, (chain, (i, j, kind))) for c, chain in best[i])
    readings = [(c, tuple(_unchain(chain))) for c, chain in sorted(best[n], key=_cost)[:k]]
    # Pass the run through as a word: always possible, but worse than any pinyin reading.
    readings.append((_PIECE + 2 * (_PIECE + _INITIAL) * n if readings else _PIECE, ()))
    return tuple(readings[:k])


def _cost(reading: tuple[int, object]) -> int:
    return reading[0]


def _unchain(chain: tuple | None) -> list:
    """(((None, a), b), c) -> [a, b, c]"""
    items = []
    while chain is not None:
        chain, item = chain
        items.append(item)
    return items[::-1]


def parse_fuzzy(spec: str | Iterable[str] | None) -> frozenset[str]:
    """The fuzzy pairs a user asks for, in any of the forms the CLI, the HTTP API and Python
    take: ``"all"``, a comma-separated string (``"z=zh,n=l"``) or the names themselves
    (``["z=zh", "n=l"]``, ``["all"]``). Raises :class:`~pinzi.errors.SettingsError` naming
    an unknown pair and the choices.

    >>> sorted(parse_fuzzy("z=zh, n=l")), len(parse_fuzzy(["all"])) == len(FUZZY_PAIRS)
    (['n=l', 'z=zh'], True)
    """
    if not spec:
        return frozenset()
    names = {name.strip() for name in (spec.split(",") if isinstance(spec, str) else spec)}
    names.discard("")
    if "all" in names:
        return frozenset(FUZZY_PAIRS)
    unknown = sorted(names - FUZZY_PAIRS.keys())
    if unknown:
        raise SettingsError(f"unknown fuzzy pair(s) {', '.join(unknown)}; "
                            f"choose from: all, {', '.join(FUZZY_PAIRS)}")
    return frozenset(names)


def fuzzy_variants(syllable: str, fuzzy: frozenset[str]) -> list[str]:
    """The syllable, then every real syllable reached by swapping its initial and/or final
    under the FUZZY_PAIRS named in `fuzzy`.

    >>> fuzzy_variants("zan", frozenset({"z=zh", "an=ang"}))
    ['zan', 'zang', 'zhan', 'zhang']
    """
    initial = initial_of(syllable) or ""
    final = syllable[len(initial) :]
    initials, finals = {initial}, {final}
    for name in fuzzy:
        a, b = FUZZY_PAIRS[name]
        for part, options in ((initial, initials), (final, finals)):
            if part in (a, b):
                options.update((a, b))
    variants = {i + f for i in initials for f in finals} - {syllable}
    return [syllable, *sorted(v for v in variants if v in _SYLLABLE_SET)]


# An initial typed alone stands for the syllables it starts: z for zh as well as z (srkl ->
# 生日快乐), as input methods' abbreviations (简拼) take the first letter; zh still means zh only.
_ABBREVIATED_BY = {"z": ("z", "zh"), "c": ("c", "ch"), "s": ("s", "sh")}


@lru_cache(maxsize=8192)
def _pinyin_piece(text: str, kind: str, fuzzy: frozenset[str]) -> Piece:
    if kind == "syllable":
        base = [_SPELLINGS[text]]
    elif kind == "initial":
        base = [s for s in SYLLABLES if initial_of(s) in _ABBREVIATED_BY.get(text, (text,))]
    else:
        base = list(_PREFIXES[text])
    if fuzzy:
        base = [v for s in base for v in fuzzy_variants(s, fuzzy)]
    return Piece(text, kind, tuple(dict.fromkeys(base)))


def segmentations(text: str, *, fuzzy: frozenset[str] = frozenset(),
                  chinese_punct: bool = False, limit: int = 8) -> list[list[Piece]]:
    """Every reading of typed input as pieces, best first, at most `limit` of them.

    The readings of :func:`scored_segmentations`, without their costs.

    >>> [" ".join(p.text for p in seg) for seg in segmentations("fangan", limit=2)]
    ['fan gan', 'fang an']
    """
    found = scored_segmentations(text, fuzzy=fuzzy, chinese_punct=chinese_punct, limit=limit)
    return [pieces for _, pieces in found]


def scored_segmentations(text: str, *, fuzzy: frozenset[str] = frozenset(),
                         chinese_punct: bool = False,
                         limit: int = 8) -> list[tuple[int, list[Piece]]]:
    """Every reading of typed input as (cost, pieces), cheapest first, at most `limit`.

    The cost is the sum of its pieces' costs (``_PIECE`` and the surcharges beside it; the
    rules are in docs/pinyin.md, "Ranking").

    Each reading re-joins to the normalised input:
    ``"".join(p.text for p in seg).lower() == normalize_input(text).lower()``.
    Raises ValueError only for an unknown fuzzy option name.

    `text` is what the user typed: pinyin with or without spaces, apostrophes, tones or
    abbreviations, mixed with anything else (passed through); `fuzzy`, names from FUZZY_PAIRS
    whose sounds are not told apart; `chinese_punct` gives ASCII punctuation a Chinese
    `Piece.output`.

    >>> [(cost, " ".join(p.text for p in seg))
    ...  for cost, seg in scored_segmentations("xian", limit=3)]
    [(10, 'xian'), (21, 'xi an'), (30, 'xia n')]
    """
    unknown = set(fuzzy) - FUZZY_PAIRS.keys()
    if unknown:
        raise ValueError(f"unknown fuzzy options: {sorted(unknown)}")
    fuzzy = frozenset(fuzzy)
    tokens = _tokens(text)
    keep = max(limit, 1)
    # With separators typed, a token that is one syllable or initial was delimited on purpose.
    spaced = _SEPARATED.search(text.strip()) is not None
    # Partial readings as (cost, chain); a chain is (previous chain, pieces of one token), so
    # extending one costs O(1) however long the input is.
    readings: list[tuple[int, tuple | None]] = [(0, None)]
    quotes = 0
    for index, (kind, tok) in enumerate(tokens):
        if kind == "letters":
            low = tok.lower()
            last = index == len(tokens) - 1
            whole = spaced and (low in _SPELLINGS or low in _INITIAL_SET)
            options = [  # a whole piece is also the cheapest reading: keep just that one
                (cost, tuple(Piece(tok[a:b], "other") if k == "english"
                             else _pinyin_piece(low[a:b], k, fuzzy) for a, b, k in spans))
                if spans
                else (cost, (Piece(tok, "other"),))
                for cost, spans in _read_run(low, last, 1 if whole else keep)
            ]
        else:
            punct = ""
            if kind == "punct" and chinese_punct:
                chars = []
                for ch in tok:
                    quotes += ch == '"'
                    chars.append("”" if ch == '"' and quotes % 2 == 0 else to_chinese_punct(ch))
                punct = "".join(chars)
            options = [(_PIECE, (Piece(tok, "other", (), punct),))]
        merged = [(c1 + c2, (chain, p)) for c1, chain in readings for c2, p in options]
        readings = sorted(merged, key=_cost)[:keep]
    return [(cost, [p for pieces in _unchain(chain) for p in pieces])
            for cost, chain in readings[:limit]]


def parse(text: str, **kw: object) -> list[Piece]:
    """The best reading of typed input (empty list for empty or blank input).

    >>> [(p.text, p.kind) for p in parse("beij")]
    [('bei', 'syllable'), ('j', 'initial')]
    """
    found = segmentations(text, **kw)  # type: ignore[arg-type]
    return found[0] if found else []
