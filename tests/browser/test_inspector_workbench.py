"""The inspector as a workbench, in Chromium through the real proxy, against a real
upstream that answers in gzip, br and zstd: bodies decoded, filters that live in the URL,
copy as cURL (run for real), edit and resend, HAR export, "mock this", pause and clear,
keyboard navigation, 1280 and 800 px, and no console errors."""

from __future__ import annotations

import json
import shlex
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.sync_api import Page, expect

from corsproxy import create_app
from corsproxy.config.checker import parse_config
from corsproxy.server.runner import ProxyRunner
from tests.browser.conftest import ARTIFACTS, Served, Stack, Tab
from tests.codings import ENCODERS, coded_json
from tests.har import schema_errors

DOCUMENT = {"user": {"id": 7, "name": "Ada Lovelace"}, "roles": ["admin", "author"]}
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e1b62e5a0000000049454e44ae426082"
)


def coded_api() -> web.Application:
    async def coded(request: web.Request) -> web.Response:
        coding = request.match_info["coding"]
        return coded_json(coding, json.dumps(DOCUMENT).encode())

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"method": request.method, "body": await request.text()})

    async def logo(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no such thing")

    app = web.Application()
    app.router.add_get("/coded/{coding}", coded)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/logo.png", logo)
    app.router.add_get("/missing", missing)
    return app


@pytest.fixture
def bench(stack: Stack, serve: Any) -> Served:
    """A proxy of its own (its record starts empty) in front of the coded API."""
    upstream = serve(coded_api())
    yaml = (
        f"upstream: http://127.0.0.1:{upstream.port}\n"
        f"rules:\n  - origins: [http://localhost:{stack.page_port}, 'regex:http://localhost:[0-9]+']\n"
        "    allow_methods: [GET, POST, PUT]\n    allow_headers: [Content-Type, X-Trace]\n"
    )
    served: Served = serve(create_app(parse_config(yaml, "workbench.yaml", {})), ProxyRunner)
    return served


def traffic(bench: Served) -> None:
    """Requests from outside the page: a coded body of each kind, an image, a 404."""
    for path in ("/coded/gzip", "/coded/br", "/coded/zstd", "/logo.png", "/missing"):
        request = urllib.request.Request(f"{bench.url}{path}", headers={"Accept-Encoding": "gzip, br, zstd"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
        except urllib.error.HTTPError as error:
            error.close()


def open_bench(tab: Tab, bench: Served, query: str = "", width: int = 1280) -> Page:
    page = tab.page
    page.set_viewport_size({"width": width, "height": 1000})
    page.goto(f"{bench.url}/__corsproxy/{query}")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    return page


def row(page: Page, path: str) -> Any:
    return page.locator("#exchanges tbody tr", has_text=path)


@pytest.mark.parametrize("coding", list(ENCODERS))
def test_a_coded_body_is_shown_decoded_and_pretty_with_both_sizes(
    bench: Served, tab: Tab, coding: str
) -> None:
    traffic(bench)
    page = open_bench(tab, bench)
    row(page, f"/coded/{coding}").click()
    body = page.locator("#detail-response-body")
    expect(body.locator("pre.body.json")).to_contain_text('"name": "Ada Lovelace"')
    wire = len(ENCODERS[coding](json.dumps(DOCUMENT).encode()))
    expect(body.locator(".body-meta")).to_contain_text(f"{wire} B over the wire ({coding})")
    expect(body.locator(".body-meta")).to_contain_text(f"{len(json.dumps(DOCUMENT))} B decoded")
    assert tab.errors() == []


def test_an_image_is_shown_and_a_filter_narrows_the_rows_and_lives_in_the_url(
    bench: Served, tab: Tab
) -> None:
    traffic(bench)
    page = open_bench(tab, bench)
    row(page, "/logo.png").click()
    expect(page.locator("#detail-response-body img.body-image")).to_be_visible()
    page.locator("#filter-text").fill("coded br")
    expect(page.locator("#exchanges tbody tr:visible")).to_have_count(1)
    expect(page.locator("#filter-count")).to_have_text("1 of 5 shown")
    assert "q=coded+br" in page.url
    page.locator("#filter-text").fill("")
    page.locator("#filter-errors").check()
    expect(page.locator("#exchanges tbody tr:visible")).to_have_count(1)
    expect(page.locator("#exchanges tbody tr:visible")).to_contain_text("/missing")
    # A reload (or a shared link) keeps the filter.
    page.reload()
    expect(page.locator("#filter-errors")).to_be_checked()
    expect(page.locator("#exchanges tbody tr:visible")).to_have_count(1)
    assert tab.errors() == []


def test_a_copied_curl_command_reproduces_the_answer(bench: Served, tab: Tab) -> None:
    page = open_bench(tab, bench)
    page.evaluate(
        """(url) => fetch(url, {method: 'POST',
                                headers: {'Content-Type': 'application/json', 'X-Trace': "it's 7"},
                                body: JSON.stringify({name: "O'Brien"})})""",
        f"{bench.url}/echo",
    )
    row(page, "/echo").click()
    expect(page.locator("#detail-request-body pre.body")).to_contain_text("O'Brien")
    page.locator("#copy-curl").click()
    copied = page.locator("#detail-copy")
    expect(copied).to_contain_text("curl --compressed -X POST")
    command = copied.inner_text()
    result = subprocess.run(
        [*shlex.split(command), "-s", "-w", "\\n%{http_code}"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "200"
    assert json.loads(body) == {
        "method": "POST",
        "body": json.dumps({"name": "O'Brien"}, separators=(",", ":")),
    }
    page.locator("#copy-fetch").click()
    expect(copied).to_contain_text('"X-Trace": "it\'s 7"')
    assert tab.errors() == []


def test_edit_and_resend_fills_the_try_panel_and_the_new_exchange_appears(bench: Served, tab: Tab) -> None:
    page = open_bench(tab, bench)
    page.evaluate(
        "(url) => fetch(url, {method: 'PUT', headers: {'Content-Type': 'application/json'},"
        " body: '{\"v\": 1}'})",
        f"{bench.url}/echo",
    )
    row(page, "PUT").click()
    page.locator("#resend").click()
    expect(page.locator("#try-method")).to_have_value("PUT")
    expect(page.locator("#try-body")).to_have_value('{"v": 1}')
    page.locator("#try-body").fill('{"v": 2}')
    page.locator("#try-send").click()
    expect(page.locator("#try-verdict")).to_contain_text("Allowed")
    expect(page.locator("#try-body-read")).to_contain_text('\\"v\\": 2')
    expect(page.locator("#exchanges tbody tr", has_text="PUT")).to_have_count(2)
    assert tab.errors() == []


def test_the_exported_har_validates_and_the_shown_rows_export_alone(
    bench: Served, tab: Tab, tmp_path: Path
) -> None:
    traffic(bench)
    page = open_bench(tab, bench)
    with page.expect_download() as everything:
        page.locator("#export-all").click()
    har = json.loads(Path(everything.value.path()).read_text())
    assert not schema_errors(har)
    assert len(har["log"]["entries"]) == 5
    coded = next(entry for entry in har["log"]["entries"] if entry["request"]["url"].endswith("/coded/zstd"))
    assert json.loads(coded["response"]["content"]["text"]) == DOCUMENT
    page.locator("#filter-status").select_option("4")
    with page.expect_download() as shown:
        page.locator("#export-filtered").click()
    some = json.loads(Path(shown.value.path()).read_text())
    assert [entry["response"]["status"] for entry in some["log"]["entries"]] == [404]
    assert tab.errors() == []


def test_mock_this_changes_the_next_answer_and_can_be_removed(bench: Served, tab: Tab) -> None:
    traffic(bench)
    page = open_bench(tab, bench)
    row(page, "/coded/br").click()
    page.locator("#mock-this").click()
    expect(page.locator("#detail-mock .mock-yaml")).to_contain_text("path: /coded/br")
    expect(page.locator("#mocks-list")).to_contain_text("mock[+0]")
    read = "(url) => fetch(url).then(async r => [r.headers.get('Corsproxy-Answer'), await r.json()])"
    answered_by, body = page.evaluate(read, f"{bench.url}/coded/br")
    assert (answered_by, body) == ("mock[+0]", DOCUMENT)
    expect(page.locator("#exchanges tbody tr .badge.mock")).to_have_text("mock[+0]")
    page.locator("#mocks-list button").click()
    expect(page.locator("#mocks-panel")).to_be_hidden()
    answered_by, _ = page.evaluate(read, f"{bench.url}/coded/br")
    assert answered_by is None
    assert tab.errors() == []


def test_keyboard_pause_and_clear(bench: Served, tab: Tab) -> None:
    traffic(bench)
    page = open_bench(tab, bench)
    first = page.locator("#exchanges tbody tr").first
    first.focus()
    # Newest first: /missing, /logo.png, /coded/zstd, ...
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#detail-title")).to_contain_text("/logo.png")
    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()
    page.locator("#pause").click()
    traffic(bench)
    expect(page.locator("#pause-count")).to_have_text("5 new")
    expect(page.locator("#exchanges tbody tr")).to_have_count(5)
    page.locator("#pause").click()
    expect(page.locator("#exchanges tbody tr")).to_have_count(10)
    page.locator("#clear").click()
    expect(page.locator("#exchanges tbody tr")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    assert tab.errors() == []


@pytest.mark.parametrize("width", [1280, 800])
def test_the_page_works_at_1280_and_800_px_with_no_console_errors(
    bench: Served, tab: Tab, width: int
) -> None:
    traffic(bench)
    page = open_bench(tab, bench, width=width)
    row(page, "/coded/gzip").click()
    expect(page.locator("#detail-response-body pre.body")).to_be_visible()
    # Nothing wider than the window: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"inspector-workbench-{width}.png"), full_page=True)
    assert tab.errors() == []
