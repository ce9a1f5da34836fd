"""The inspector page in Chromium: it loads cleanly, updates live, and its "try" panel
tells an allowed request from a blocked one."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from corsproxy import create_app, load_config
from corsproxy.server.runner import ProxyRunner
from tests.browser.conftest import API_KEY, ARTIFACTS, Stack, Tab, bound_socket


def open_inspector(tab: Tab, stack: Stack) -> Page:
    page = tab.page
    page.set_viewport_size({"width": 1440, "height": 1100})
    page.goto(f"{stack.proxy}/__corsproxy/")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    return page


def request_from_outside(url: str, origin: str) -> None:
    """A request that does not come from the page: the list must pick it up by itself."""
    with urllib.request.urlopen(
        urllib.request.Request(url, headers={"Origin": origin}), timeout=5
    ) as response:
        response.read()


def test_the_page_loads_without_console_errors_and_shows_routes_with_secrets_hidden(
    stack: Stack, tab: Tab
) -> None:
    page = open_inspector(tab, stack)
    page.locator("#config-panel summary").click()

    routes = page.locator("#routes tbody")
    expect(routes).to_contain_text("/api")
    expect(routes).to_contain_text("X-Upstream-Key: ***")
    expect(page.locator("#rules tbody")).to_contain_text(f"http://localhost:{stack.page_port}")
    expect(page.locator("#try-url")).to_have_value(f"{stack.proxy}/api")
    assert API_KEY not in page.content()
    assert tab.errors() == []


def test_requests_through_the_proxy_appear_in_the_list_live_with_their_decision(
    stack: Stack, tab: Tab
) -> None:
    page = open_inspector(tab, stack)
    page.evaluate("window.notReloaded = true")
    allowed_origin = f"http://localhost:{stack.page_port}"

    request_from_outside(f"{stack.proxy}/api/live/allowed", allowed_origin)
    request_from_outside(f"{stack.proxy}/open/live/refused", "https://evil.example")

    allowed = page.locator("#exchanges tbody tr", has_text="/api/live/allowed")
    refused = page.locator("#exchanges tbody tr", has_text="/open/live/refused")
    expect(allowed.locator(".decision")).to_have_text("✓ allowed by rules[1] (path /**)")
    expect(allowed.locator(".origin")).to_have_text(allowed_origin)
    expect(allowed.locator(".status")).to_have_text("200")
    expect(refused.locator(".decision")).to_contain_text(
        "✗ refused: origin 'https://evil.example' is not allowed"
    )
    # Newest first: the refused request came second, so it is above.
    first_path = page.locator("#exchanges tbody tr .path").first
    expect(first_path).to_have_text("/open/live/refused")
    assert page.evaluate("window.notReloaded") is True

    allowed.click()
    detail = page.locator("#detail")
    expect(detail.locator("#detail-request")).to_contain_text(allowed_origin)
    expect(detail.locator("#detail-response")).to_contain_text("Access-Control-Allow-Origin")
    expect(detail.locator("#detail-upstream")).to_contain_text("X-Upstream-Key")
    expect(detail.locator("#detail-upstream")).to_contain_text("***")
    assert API_KEY not in page.content()
    assert tab.errors() == []


def test_a_mocked_answer_is_marked_in_the_list_and_the_detail(stack: Stack, tab: Tab) -> None:
    page = open_inspector(tab, stack)
    request_from_outside(f"{stack.proxy}/api/mocked/profile", f"http://localhost:{stack.page_port}")

    row = page.locator("#exchanges tbody tr", has_text="/api/mocked/profile").first
    expect(row.locator(".badge.mock")).to_have_text("mock[0]")
    row.click()
    expect(page.locator("#detail-title")).to_contain_text("(answered by mock[0])")
    assert tab.errors() == []


def test_the_try_panel_reports_an_allowed_request_and_the_headers_the_proxy_sent(
    stack: Stack, tab: Tab
) -> None:
    page = open_inspector(tab, stack)

    page.locator("#try-url").fill(f"{stack.proxy}/api/try/allowed")
    page.locator("#try-method").select_option("PUT")
    page.locator("#try-headers").fill("Content-Type: application/json\nX-API-Key: client-key")
    page.locator("#try-body").fill('{"hello": "proxy"}')
    page.locator("#try-send").click()

    verdict = page.locator("#try-verdict")
    expect(verdict).to_have_attribute("data-allowed", "true")
    expect(verdict).to_contain_text("status 200")
    expect(page.locator("#try-headers-read")).to_contain_text("x-request-id")
    expect(page.locator("#try-body-read")).to_contain_text('\\"hello\\": \\"proxy\\"')
    record = page.locator("#try-record")
    expect(record).to_contain_text("PUT → 200")
    expect(record).to_contain_text(f"Headers the proxy sent to {stack.upstream}/try/allowed?corsproxy_try=")
    expect(record).to_contain_text("X-API-Key")
    expect(record).to_contain_text("X-Upstream-Key***")
    # The echo upstream shows the key in its body; the proxy's record never does.
    assert API_KEY not in record.inner_text()

    page.locator("#exchanges tbody tr", has_text="/api/try/allowed").first.click()
    expect(page.locator("#detail-upstream")).to_contain_text("X-Upstream-Key")
    assert API_KEY not in page.locator("#detail").inner_text()
    page.evaluate("window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "inspector.png")
    assert tab.errors() == []


def test_the_try_panel_reports_a_blocked_request_with_the_proxys_reason(stack: Stack, tab: Tab) -> None:
    page = open_inspector(tab, stack)
    # The proxy under its other name is another origin: the header below needs a preflight.
    other_name = f"http://127.0.0.1:{stack.proxy_port}/api/try/blocked"

    page.locator("#try-url").fill(other_name)
    page.locator("#try-headers").fill("X-Not-Listed: 1")
    page.locator("#try-send").click()

    verdict = page.locator("#try-verdict")
    expect(verdict).to_have_attribute("data-allowed", "false")
    expect(verdict).to_contain_text("Blocked: fetch() rejected with TypeError")
    expect(page.locator("#try-headers-read tbody tr")).to_have_count(0)
    record = page.locator("#try-record")
    expect(record).to_contain_text("Preflight OPTIONS → 403")
    expect(record).to_contain_text("✗ refused: header x-not-listed is not allowed by rules[1]")
    expect(record).to_contain_text("Not forwarded upstream")
    assert tab.blocked_by_cors()
    assert stack.upstream_saw("GET", "/try/blocked") == []


def test_the_try_panel_has_no_record_of_a_request_that_bypassed_the_proxy(stack: Stack, tab: Tab) -> None:
    page = open_inspector(tab, stack)

    page.locator("#try-url").fill(f"{stack.upstream}/try/direct")
    page.locator("#try-send").click()

    expect(page.locator("#try-verdict")).to_have_attribute("data-allowed", "false")
    expect(page.locator("#try-record")).to_contain_text(
        "No record: the request did not go through this proxy"
    )


def test_a_rejected_reload_shows_as_a_banner_and_routes_update_live(
    stack: Stack, tab: Tab, tmp_path: Path
) -> None:
    """The inspector is as current as the terminal: no page reload needed for either."""
    config_file = tmp_path / "corsproxy.yaml"
    config_file.write_text(f"routes:\n  - path: /first\n    upstream: {stack.upstream}\n")
    # The socket is the runner's from here: the stack closes it with its servers.
    sock, port = bound_socket()
    app = create_app(load_config(config_file, {}), watch=config_file)
    stack.servers.serve(app, sock, ProxyRunner)
    page = tab.page
    page.goto(f"http://localhost:{port}/__corsproxy/")
    page.evaluate("window.notReloaded = true")
    page.locator("#config-panel summary").click()
    expect(page.locator("#routes tbody")).to_contain_text("/first")
    expect(page.locator("#reload-banner")).to_be_hidden()

    config_file.write_text(
        f"routes:\n  - path: /first\n    upstream: {stack.upstream}\n    max_body_size: -1\n"
    )
    banner = page.locator("#reload-banner")
    expect(banner).to_be_visible(timeout=10_000)
    expect(banner).to_contain_text("still serving the last good config")
    expect(banner).to_contain_text("routes[0].max_body_size: must be a positive integer, got -1 (line 4)")

    config_file.write_text(f"routes:\n  - path: /second\n    upstream: {stack.upstream}\n")
    expect(page.locator("#routes tbody")).to_contain_text("/second", timeout=10_000)
    expect(banner).to_be_hidden()
    assert page.evaluate("window.notReloaded") is True
    assert tab.errors() == []


def test_a_simulate_switch_flipped_on_the_page_changes_the_next_request(stack: Stack, tab: Tab) -> None:
    page = open_inspector(tab, stack)
    page.locator("#simulate-panel summary").click()
    entries = page.locator("#simulate-entries tbody tr")
    flaky = entries.filter(has_text="/open/flaky/**")
    expect(flaky).to_contain_text("fail 503, every 1, Retry-After 7")
    origin = f"http://localhost:{stack.page_port}"
    switch = flaky.get_by_role("checkbox")
    try:
        switch.uncheck()
        expect(page.locator("#simulate-summary")).to_contain_text("1 of 2 entries on")
        with urllib.request.urlopen(
            urllib.request.Request(f"{stack.proxy}/open/flaky/now", headers={"Origin": origin}), timeout=5
        ) as response:
            assert response.status == 200
    finally:
        switch.check()
    expect(page.locator("#simulate-summary")).to_contain_text("2 of 2 entries on")
    failed = page.locator("#exchanges tbody tr", has_text="/open/flaky/again")
    with pytest.raises(urllib.error.HTTPError) as failure:
        request_from_outside(f"{stack.proxy}/open/flaky/again", origin)
    assert failure.value.code == 503
    failure.value.close()  # an HTTPError holds the answer's socket open
    expect(failed.locator(".badge.simulated")).to_have_text("simulated")
    assert tab.errors() == []
