"""The input-method page end to end: headless Chromium (Playwright) against a live uvicorn server.

Needs Debian's chromium (scripts/install_browser.sh) and the playwright package (the dev
extra); skipped with a reason when either is missing. Playwright never downloads a browser here.
"""

from __future__ import annotations

import json
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
    expect(bar).to_have_count(0)

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
