"""The input-method page end to end: headless Chromium (Playwright) against a live uvicorn server.

Needs Debian's chromium (scripts/install_browser.sh) and the playwright package (the dev
extra); skipped with a reason when either is missing. Playwright never downloads a browser here.
"""

from __future__ import annotations

import json
import re
import shutil
from contextlib import contextmanager

import pytest
from test_serve import serving as serving_in_thread

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("no chromium: run scripts/install_browser.sh", allow_module_level=True)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextmanager
def serving(app):
    """``app`` as `pinzi serve` runs it, in a thread on a free loopback port: its URL."""
    from pinzi.guard import GuardedHttp

    with serving_in_thread(app, http=GuardedHttp) as (host, port):
        yield f"http://{host}:{port}"


@pytest.fixture(scope="module")
def server(tiny_model, lora_run):
    """The tiny model and a LoRA adapter of it named "domain"."""
    from pinzi.converter import Converter
    from pinzi.serve import create_app

    app = create_app(Converter.from_pretrained(tiny_model, backend="torch"),
                     adapters={"domain": Converter.from_pretrained(tiny_model,
                                                                   adapter=lora_run[0])})
    with serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 900, "height": 720})
        page.goto(server)
        yield page
        browser.close()


@pytest.mark.slow  # a real browser: seconds
def test_typing_pinyin_shows_candidates_and_space_commits(page, tmp_path):
    expect = sync_api.expect
    buffer, bar, text = page.locator("#pinyin"), page.locator("#candidates li"), page.locator(
        "#committed")
    buffer.press_sequentially("woaibeijing", delay=30)
    expect(bar.first).to_contain_text("我爱北京")
    expect(bar.first).to_contain_text("1")  # numbered for the digit keys
    page.screenshot(path=str(tmp_path / "ime.png"))
    assert (tmp_path / "ime.png").stat().st_size > 1000
    page.keyboard.press("Space")
    expect(text).to_have_value("我爱北京")
    expect(buffer).to_have_value("")
    expect(page.locator("#candidates li.candidate")).to_have_count(0)  # predictions may follow

    # The next word is asked for with the committed text as context, and picked by its digit.
    requests = []
    page.on("request", lambda r: requests.append(r) if r.url.endswith("/v1/candidates") else None)
    buffer.press_sequentially("nihao", delay=30)
    expect(bar.first).to_contain_text("你好")
    page.keyboard.press("1")
    expect(text).to_have_value("我爱北京你好")
    assert json.loads(requests[-1].post_data)["context"] == "我爱北京"

    page.keyboard.press("Backspace")  # on an empty buffer: deletes a committed character
    expect(text).to_have_value("我爱北京你")


@pytest.mark.slow
def test_a_loaded_adapter_can_be_chosen(page):
    expect = sync_api.expect
    expect(page.locator("#adapter-choice")).to_be_visible()  # the server lists "domain"
    page.locator("#adapter").select_option("domain")
    requests = []
    page.on("request", lambda r: requests.append(r) if r.url.endswith("/v1/candidates") else None)
    page.locator("#pinyin").press_sequentially("nihao", delay=30)
    expect(page.locator("#candidates li").first).to_be_visible()
    assert json.loads(requests[-1].post_data)["adapter"] == "domain"


@pytest.mark.slow
def test_no_adapter_menu_without_adapters(page, tiny_model):
    from pinzi.converter import Converter
    from pinzi.serve import create_app

    with serving(create_app(Converter.from_pretrained(tiny_model, backend="torch"))) as url:
        page.goto(url)
        page.wait_for_load_state("networkidle")  # the page has asked /healthz for adapters
        sync_api.expect(page.locator("#adapter-choice")).to_be_hidden()
        assert page.locator("#punct").is_visible()  # the options row itself is shown


@pytest.mark.slow
def test_the_api_docs_render_offline(page, server):
    # Every asset is the package's own: a request elsewhere would fail (the tests are offline).
    outside = []
    page.on("request", lambda r: None if r.url.startswith(server) else outside.append(r.url))
    page.goto(f"{server}/docs")
    sync_api.expect(page.locator(".opblock-summary-path").first).to_be_visible()
    assert "/v1/candidates" in page.content()
    assert outside == []


@pytest.mark.slow
def test_the_traditional_box_asks_for_traditional_characters(page, server):
    expect = sync_api.expect
    page.goto(server)  # a fresh page: the base model, no box checked
    page.locator("#traditional").check()
    requests = []
    page.on("request", lambda r: requests.append(r) if r.url.endswith("/v1/candidates") else None)
    page.locator("#pinyin").press_sequentially("woaibeijing", delay=30)
    expect(page.locator("#candidates li").first).to_contain_text("我愛北京")
    assert json.loads(requests[-1].post_data)["traditional"] is True
    page.locator("#traditional").uncheck()  # asks again, for simplified characters
    expect(page.locator("#candidates li").first).to_contain_text("我爱北京")


# ---- partial picks, pages, predictions and learning (issue 13) ---------------------------------
def sent_to(page, route: str) -> list[dict]:
    """The JSON bodies the page posts to ``route`` from now on: a list that fills as it does."""
    bodies: list[dict] = []
    page.on("request", lambda r: bodies.append(json.loads(r.post_data))
            if r.url.endswith(route) else None)
    return bodies


def typed_afresh(page, server, route: str) -> list[dict]:
    """The page loaded afresh and woaibeijing typed until 我爱北京 leads the bar; the JSON
    bodies posted to ``route`` from the start (:func:`sent_to`)."""
    page.goto(server)
    bodies = sent_to(page, route)
    page.locator("#pinyin").press_sequentially("woaibeijing", delay=30)
    sync_api.expect(page.locator("#candidates li.candidate").first).to_contain_text("我爱北京")
    return bodies


def shown(items) -> list[str]:
    """The hanzi of the bar ``items`` (each button holds its number, then the text)."""
    return items.locator("button").evaluate_all("buttons => buttons.map(b => b.lastChild.data)")


def candidate(page, hanzi: str):
    """The candidate in the bar that is exactly ``hanzi`` (after its number)."""
    return page.locator("#candidates li.candidate", has_text=re.compile(rf"^\d{hanzi}$"))


@pytest.mark.slow
def test_a_word_for_the_start_of_the_pinyin_leaves_the_rest_to_convert(page, server):
    expect = sync_api.expect
    page.goto(server)  # a fresh page: nothing committed
    asked = sent_to(page, "/v1/candidates")
    buffer, text = page.locator("#pinyin"), page.locator("#committed")
    buffer.press_sequentially("woaibeijing", delay=30)
    expect(page.locator("#candidates li").last).to_have_text("⏎woaibeijing")  # the letters
    candidate(page, "我").click()
    expect(text).to_have_value("我")
    expect(buffer).to_have_value("aibeijing")  # the pinyin 我 did not consume
    expect(page.locator("#candidates li.candidate").first).to_contain_text("爱北京")
    assert {key: asked[-1][key] for key in ("pinyin", "context", "offset")} == {
        "pinyin": "aibeijing", "context": "我", "offset": 0}
    page.keyboard.press("Space")
    expect(text).to_have_value("我爱北京")
    expect(buffer).to_have_value("")

    buffer.press_sequentially("beijing", delay=30)  # Enter keeps the letters as typed
    expect(page.locator("#candidates li.candidate").first).to_be_visible()
    page.keyboard.press("Enter")
    expect(text).to_have_value("我爱北京beijing")


@pytest.mark.slow
def test_the_page_keys_turn_pages_of_candidates(page, server):
    expect = sync_api.expect
    asked = typed_afresh(page, server, "/v1/candidates")
    buffer, number = page.locator("#pinyin"), page.locator("#page-number")
    candidates = page.locator("#candidates li.candidate")
    expect(page.locator("#pager")).to_be_visible()
    expect(page.locator("#previous-page")).to_be_disabled()  # nothing before page 1
    first_page = shown(candidates)
    assert len(first_page) == 9 and asked[-1]["k"] == 9

    page.keyboard.press("=")
    expect(number).to_have_text("2")
    assert asked[-1]["offset"] == 9
    second_page = shown(candidates)
    assert second_page and not set(second_page) & set(first_page)
    expect(buffer).to_have_value("woaibeijing")  # the page keys are not typed

    page.keyboard.press("-")
    expect(number).to_have_text("1")
    assert shown(candidates) == first_page  # pages are stable
    page.keyboard.press("PageUp")  # still page 1: nothing is asked for
    page.keyboard.press("PageDown")
    expect(number).to_have_text("2")
    assert [body["offset"] for body in asked[-3:]] == [9, 0, 9]


@pytest.mark.slow
def test_a_commit_is_followed_by_predictions_that_digits_pick(page, server):
    expect = sync_api.expect
    predicted = typed_afresh(page, server, "/v1/predict")
    buffer, text = page.locator("#pinyin"), page.locator("#committed")
    predictions = page.locator("#candidates li.prediction")
    page.keyboard.press("Space")
    expect(page.locator("#bar-label")).to_have_text("联想")
    expect(predictions.first).to_be_visible()
    assert predicted[-1] == {"context": "我爱北京", "k": 9, "traditional": False,
                             "adapter": None}
    word = shown(predictions)[0]
    with page.expect_request(lambda r: r.url.endswith("/v1/predict")) as again:
        page.keyboard.press("1")
    expect(text).to_have_value(f"我爱北京{word}")
    assert json.loads(again.value.post_data)["context"] == f"我爱北京{word}"  # predicts on
    expect(predictions.first).to_be_visible()

    page.keyboard.press("Escape")
    expect(predictions).to_have_count(0)
    expect(page.locator("#bar-label")).to_be_hidden()
    page.keyboard.press("1")  # nothing to pick: typed into the buffer
    expect(buffer).to_have_value("1")
    expect(text).to_have_value(f"我爱北京{word}")


@contextmanager
def learning_server(tiny_model, user_dir):
    """A server that learns what is picked, in ``user_dir`` (`pinzi serve --user-dir`)."""
    from pinzi.converter import Converter
    from pinzi.serve import create_app

    with serving(create_app(Converter.from_pretrained(tiny_model, backend="torch",
                                                      user_dir=user_dir))) as url:
        yield url


@pytest.mark.slow
def test_a_name_picked_syllable_by_syllable_is_learned_across_a_restart(page, tiny_model,
                                                                        tmp_path):
    expect = sync_api.expect
    buffer, first = page.locator("#pinyin"), page.locator("#candidates li.candidate").first
    with learning_server(tiny_model, tmp_path) as url:
        page.goto(url)
        page.wait_for_load_state("networkidle")  # /healthz has said that the server learns
        learned = []
        page.on("request", lambda r: learned.append(r) if r.url.endswith("/v1/learn") else None)
        buffer.press_sequentially("zhangsan", delay=30)
        expect(first).to_be_visible()
        expect(first).not_to_have_text("1张三")  # not yet known as a word
        page.keyboard.press("=")  # the tiny model is unsure of 伞 and 三: whole readings
        expect(page.locator("#page-number")).to_have_text("2")  # fill the first page
        candidate(page, "张").click()
        expect(buffer).to_have_value("san")
        candidate(page, "三").click()
        expect(page.locator("#committed")).to_have_value("张三")
        expect(page.locator("#candidates li.prediction").first).to_be_visible()
        page.keyboard.press("1")  # a prediction: never learned
        expect(page.locator("#candidates li.prediction").first).to_be_visible()
        # Each pick, then the whole composition: all answered before the server stops.
        assert [(json.loads(r.post_data), r.response().status) for r in learned] == [
            ({"pinyin": pinyin, "hanzi": hanzi, "scheme": None}, 200)
            for pinyin, hanzi in [("zhang", "张"), ("san", "三"), ("zhangsan", "张三")]]

    with learning_server(tiny_model, tmp_path) as url:  # a new converter, the same user_dir
        page.goto(url)
        buffer.press_sequentially("zhangsan", delay=30)
        expect(first).to_have_text("1张三")
