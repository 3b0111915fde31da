"""Shuangpin (双拼): the key tables against the published layouts, syllable by syllable, and the
scheme option through the converter, the command line, the HTTP API and the page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SENTENCES
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from pinzi.cli import app
from pinzi.converter import Converter
from pinzi.decode import UserDict
from pinzi.errors import SettingsError
from pinzi.pinyin import SYLLABLES
from pinzi.readings import annotate
from pinzi.serve import ServeConfig, build_app, create_app
from pinzi.shuangpin import SCHEME_NAMES, SCHEMES, key_table, to_pinyin

ROOT = Path(__file__).resolve().parents[1]
# Syllables no scheme has keys for: the syllabic nasals, ê, and lo, whose keys read luo.
UNTYPEABLE = {"hm", "hng", "m", "n", "ng", "ê", "lo"}

# What each scheme's published table says, written out by hand (not from the code's tables):
# 我爱北京天安门 (wo ai bei jing tian an men), then single syllables.
KNOWN = {
    "xiaohe": {"woaibwjktmanmf": "wo'ai'bei'jing'tian'an'men", "wode": "wo'de",
               "nihc": "ni'hao", "uiui": "shi'shi", "vsgo": "zhong'guo", "ix": "chua",
               "aa": "a", "ai": "ai", "an": "an", "ah": "ang", "ee": "e", "eg": "eng",
               "er": "er", "oo": "o", "ou": "ou", "lv": "lv", "lt": "lve", "jt": "jue",
               "xr": "xuan", "jy": "jun", "ys": "yong", "xs": "xiong", "kk": "kuai",
               "bk": "bing", "gl": "guang", "nl": "niang", "dp": "die", "nn": "niao",
               "qq": "qiu", "ww": "wei", "dv": "dui", "zz": "zou", "cc": "cao", "bb": "bin"},
    "ziranma": {"woaibzjytmanmf": "wo'ai'bei'jing'tian'an'men", "nihk": "ni'hao",
                "vsgo": "zhong'guo", "ah": "ang", "eg": "eng", "er": "er", "xt": "xue",
                "vd": "zhuang", "ld": "liang", "ky": "kuai", "xc": "xiao", "xx": "xie",
                "lw": "lia", "gw": "gua", "nn": "nin", "db": "dou", "ml": "mai",
                "gp": "gun", "lv": "lv", "ui": "shi"},
    "microsoft": {"woolbzj;tmojmf": "wo'ai'bei'jing'tian'an'men", "nihk": "ni'hao",
                  "oa": "a", "oo": "o", "oe": "e", "or": "er", "ob": "ou", "oh": "ang",
                  "og": "eng", "ly": "lv", "lt": "lve", "lv": "lve", "jt": "jue",
                  "jv": "jue", "ky": "kuai", "dv": "dui", "vd": "zhuang", "x;": "xing",
                  "ir": "chuan", "up": "shun"},
    "sogou": {"woolbzj;tmojmf": "wo'ai'bei'jing'tian'an'men", "nihk": "ni'hao",
              "oj": "an", "or": "er", "ly": "lv", "lt": "lve", "jt": "jue", "dv": "dui",
              "ky": "kuai", "q;": "qing", "ol": "ai", "oz": "ei", "ok": "ao"},
}


# ---- the tables ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SCHEMES)
def test_every_typeable_syllable_round_trips(name):
    scheme = SCHEMES[name]
    keys = {syllable: scheme.encode(syllable) for syllable in SYLLABLES}
    assert {s for s, k in keys.items() if k is None} == UNTYPEABLE
    typed = {s: k for s, k in keys.items() if k is not None}
    assert len(set(typed.values())) == len(typed)  # two keys for one syllable, and back
    for syllable, pair in typed.items():
        assert len(pair) == 2 and to_pinyin(pair, name) == syllable, (syllable, pair)


@pytest.mark.parametrize("name", SCHEMES)
def test_the_published_examples(name):
    for keys, pinyin in KNOWN[name].items():
        assert to_pinyin(keys, name) == pinyin, keys


def test_keys_are_read_in_pairs_and_the_rest_passes_through():
    assert to_pinyin("Nihc, wode 2 ge!", "xiaohe") == "ni'hao, wo'de 2 ge!"
    assert to_pinyin("nih", "xiaohe") == "ni'h"  # an unfinished syllable: its initial
    assert to_pinyin("v", "xiaohe") == "zh" and to_pinyin("wou", "xiaohe") == "wo'sh"
    assert to_pinyin("ni'hc", "xiaohe") == "ni'hao"  # an apostrophe restarts the pairs
    assert to_pinyin("bzni", "xiaohe") == "bz'ni"  # bou is no syllable: kept as typed
    assert to_pinyin("你好wo", "xiaohe") == "你好wo"
    # ; is a final key only where a scheme has one, and only as the second of a pair
    assert to_pinyin(";x;", "microsoft") == ";xing" and to_pinyin("x;", "xiaohe") == "x;"
    assert to_pinyin("nihk", "pinyin") == to_pinyin("nihk", None) == "nihk"


def test_an_unknown_scheme_is_a_clear_error(tiny_model):
    with pytest.raises(SettingsError, match="unknown shuangpin scheme 'qwerty'; choose from: "
                                            "pinyin, xiaohe, ziranma, microsoft, sogou"):
        to_pinyin("ni", "qwerty")
    converter = Converter.from_pretrained(tiny_model, backend="torch")
    with pytest.raises(SettingsError, match="unknown shuangpin scheme"):
        converter.convert("ni", scheme="qwerty")
    with pytest.raises(SettingsError, match="unknown shuangpin scheme"):
        Converter.from_pretrained(tiny_model, backend="torch", scheme="qwerty")


def test_the_docs_show_the_tables_of_the_code():
    page = (ROOT / "docs" / "shuangpin.md").read_text(encoding="utf-8")
    for name in SCHEMES:
        assert key_table(name) in page, f"docs/shuangpin.md: regenerate the {name} table"


# ---- through the converter, the command line, HTTP and the page ---------------------------------
def keys_of(sentence: str, name: str) -> str:
    return "".join(SCHEMES[name].encode(syllable) for syllable in annotate(sentence))


@pytest.fixture(scope="module")
def converter(tiny_model):
    return Converter.from_pretrained(tiny_model, backend="torch")


@pytest.mark.parametrize("name", SCHEMES)
def test_shuangpin_converts_as_its_pinyin_does(converter, name):
    for sentence in SENTENCES[:6]:
        keys = keys_of(sentence, name)
        assert converter.convert(keys, scheme=name) == sentence
        keyed = converter.candidates(keys, k=20, scheme=name)
        spelled = converter.candidates("'".join(annotate(sentence)), k=20)
        assert [c[:2] for c in keyed] == [c[:2] for c in spelled]
        # What a candidate covers is counted in keys typed: two a syllable.
        assert [c.consumed for c in keyed] == [2 * len(c.hanzi) for c in keyed]


def test_fuzzy_punct_and_user_words_work_after_the_keys(converter, tiny_model):
    # 小鹤 zsgo = zong guo: 中国 only with z=zh
    assert converter.convert("zsgo", scheme="xiaohe") != "中国"
    assert converter.convert("zsgo", scheme="xiaohe", fuzzy="z=zh") == "中国"
    assert converter.convert("nihc,", scheme="xiaohe", punct=True) == "你好，"
    assert converter.convert("ybhh", scheme="xiaohe", userdict=UserDict({"音航": 20.0})) == "音航"
    # the converter's default, and a call's own choice over it
    xiaohe = Converter.from_pretrained(tiny_model, backend="torch", scheme="xiaohe")
    assert xiaohe.convert("nihc") == "你好"
    assert xiaohe.convert("nihao", scheme="pinyin") == "你好"
    assert xiaohe.convert_batch(["nihk"], scheme="ziranma") == ["你好"]


def test_the_command_line_takes_a_scheme(tiny_model):
    runner = CliRunner()

    def convert(*args: str):
        return runner.invoke(app, ["convert", "-m", str(tiny_model), *args])

    keys = keys_of("我爱北京天安门", "xiaohe")
    shuangpin, pinyin = convert("--scheme", "xiaohe", keys), convert("woaibeijingtiananmen")
    assert shuangpin.exit_code == 0 and shuangpin.stdout == pinyin.stdout == "我爱北京天安门\n"
    wrong = convert("--scheme", "qwerty", keys)
    assert wrong.exit_code == 2 and "xiaohe" in wrong.output and "qwerty" in wrong.output
    served = runner.invoke(app, ["serve", "-m", str(tiny_model), "--scheme", "qwerty"])
    assert served.exit_code == 2 and "sogou" in served.output


def test_http_requests_choose_a_scheme(converter, tiny_model):
    with TestClient(create_app(converter)) as client:
        def best(**body):
            answer = client.post("/v1/candidates", json=body)
            return answer.status_code, answer.json()

        assert best(pinyin="woaibwjk", scheme="xiaohe")[1]["candidates"][0]["hanzi"] == "我爱北京"
        assert client.post("/v1/convert", json={"pinyin": ["nihk"], "scheme": "ziranma"}
                           ).json() == {"hanzi": ["你好"]}
        status, body = best(pinyin="nihc", scheme="qwerty")
        assert status == 422 and body["detail"].startswith("scheme:") and "xiaohe" in body["detail"]
    # pinzi serve --scheme: the server's default, which a request may override
    app_ = build_app(ServeConfig(model=str(tiny_model), backend="torch", scheme="xiaohe"))
    with TestClient(app_) as client:
        assert client.post("/v1/convert", json={"pinyin": ["nihc"]}).json()["hanzi"] == ["你好"]
        assert client.post("/v1/convert", json={"pinyin": ["nihao"], "scheme": "pinyin"}
                           ).json()["hanzi"] == ["你好"]


def test_the_page_offers_every_scheme_and_sends_it():
    page = (ROOT / "src" / "pinzi" / "static" / "index.html").read_text(encoding="utf-8")
    script = (ROOT / "src" / "pinzi" / "static" / "app.js").read_text(encoding="utf-8")
    for name in SCHEME_NAMES:
        assert f'<option value="{name}">' in page
    assert 'id="scheme"' in page and "scheme: scheme.value || null" in script


@pytest.mark.slow  # a real browser: seconds
def test_the_page_menu_converts_shuangpin(converter):
    from test_serve import serving
    from test_web import CHROMIUM, CHROMIUM_ARGS, sync_api  # skips without a browser

    with serving(create_app(converter)) as (host, port), sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"http://{host}:{port}")
        page.locator("#scheme").select_option("xiaohe")
        sent = []
        page.on("request", lambda r: sent.append(r) if r.url.endswith("/v1/candidates") else None)
        page.locator("#pinyin").press_sequentially("nihc", delay=30)
        sync_api.expect(page.locator("#candidates li").first).to_contain_text("你好")
        assert json.loads(sent[-1].post_data)["scheme"] == "xiaohe"
        browser.close()
