"""What a real browser allows through the proxy, and refuses without it.

Each test loads the frontend page, runs fetch() in it, and asserts what the script could
see; then checks the other side: what the upstream received and what the proxy recorded.
"""

from __future__ import annotations

import json

import pytest

from tests.browser.conftest import API_KEY, Stack, Tab

JSON_HEADERS = {"Content-Type": "application/json", "X-API-Key": "client-key-7"}


def test_a_simple_get_through_the_proxy_is_allowed_and_its_body_readable(
    fresh_stack: Stack, tab: Tab
) -> None:
    tab.page.goto(fresh_stack.page_url)

    result = tab.fetch(f"{fresh_stack.proxy}/api/items?page=2")

    assert result["fetched"], result
    assert result["status"] == 200
    echoed = json.loads(result["body"])
    assert echoed["path"] == "/items"
    assert echoed["headers"]["Origin"] == f"http://localhost:{fresh_stack.page_port}"
    assert echoed["headers"]["X-Upstream-Key"] == API_KEY
    assert not tab.blocked_by_cors()


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("PUT", id="preflighted PUT with a JSON body and X-API-Key is allowed"),
        pytest.param("PATCH", id="preflighted PATCH with a JSON body and X-API-Key is allowed"),
        pytest.param("DELETE", id="preflighted DELETE with a JSON body and X-API-Key is allowed"),
    ],
)
def test_preflighted_requests_are_answered_by_the_proxy_and_then_sent(
    fresh_stack: Stack, tab: Tab, method: str
) -> None:
    tab.page.goto(fresh_stack.page_url)
    path = f"/items/{method.lower()}"
    body = json.dumps({"name": "widget", "count": 3})

    result = tab.fetch(
        f"{fresh_stack.proxy}/api{path}", {"method": method, "headers": JSON_HEADERS, "body": body}
    )

    assert result["fetched"], result
    assert result["status"] == 200
    echoed = json.loads(result["body"])
    assert echoed["method"] == method
    assert json.loads(echoed["body"]) == {"name": "widget", "count": 3}
    assert echoed["headers"]["X-API-Key"] == "client-key-7"
    # The proxy answered the preflight itself: the upstream saw the request, never the OPTIONS.
    assert len(fresh_stack.upstream_saw(method, path)) == 1
    assert fresh_stack.upstream_saw("OPTIONS", path) == []
    preflights = [e for e in fresh_stack.exchanges() if e.preflight and e.path == f"/api{path}"]
    assert preflights, "the browser sent no preflight"
    assert preflights[0].status == 204
    assert preflights[0].request_headers["Access-Control-Request-Method"] == method
    assert not tab.blocked_by_cors()


def test_a_cookie_set_by_the_upstream_through_the_proxy_is_sent_back_with_credentials(
    fresh_stack: Stack, tab: Tab
) -> None:
    tab.page.goto(fresh_stack.page_url)
    api = f"{fresh_stack.proxy}/api"

    login = tab.fetch(f"{api}/login", {"credentials": "include"})
    with_cookie = tab.fetch(f"{api}/whoami", {"credentials": "include"})
    without_credentials = tab.fetch(f"{api}/anonymous")

    assert login["fetched"], login
    assert with_cookie["fetched"], with_cookie
    assert without_credentials["fetched"], without_credentials
    [stored] = tab.page.context.cookies()
    assert (stored["name"], stored["domain"], stored["sameSite"]) == ("session", "localhost", "Lax")
    [whoami] = fresh_stack.upstream_saw("GET", "/whoami")
    assert whoami.headers["Cookie"] == "session=s3cr3t-session"
    # fetch's default credentials mode, same-origin, sends no cookie to another origin.
    [anonymous] = fresh_stack.upstream_saw("GET", "/anonymous")
    assert "Cookie" not in anonymous.headers


def test_a_production_login_cookie_sticks_on_localhost_and_is_sent_back(fresh_stack: Stack, tab: Tab) -> None:
    tab.page.goto(fresh_stack.page_url)
    api = f"{fresh_stack.proxy}/api"

    login = tab.fetch(f"{api}/production-login", {"credentials": "include"})
    with_cookie = tab.fetch(f"{api}/whoami-prod", {"credentials": "include"})

    assert login["fetched"], login
    assert with_cookie["fetched"], with_cookie
    # Sent as Domain=api.example.com; Secure; SameSite=None, Chromium would have dropped it.
    [stored] = tab.page.context.cookies()
    assert stored["domain"] == "localhost"
    assert stored["path"] == "/api"
    assert stored["secure"] is False
    # The upstream gets the cookie back under the name it set.
    [whoami] = fresh_stack.upstream_saw("GET", "/whoami-prod")
    assert whoami.headers["Cookie"] == "__Host-sid=prod-session"


def test_an_exposed_header_is_readable_and_an_unexposed_one_is_not(fresh_stack: Stack, tab: Tab) -> None:
    tab.page.goto(fresh_stack.page_url)

    result = tab.fetch(
        f"{fresh_stack.proxy}/api/exposed", read=("X-Request-Id", "X-Internal", "Content-Type")
    )

    assert result["fetched"], result
    assert result["read"] == {
        "X-Request-Id": "req-42",
        "X-Internal": None,
        "Content-Type": "application/json; charset=utf-8",
    }
    # The proxy did deliver X-Internal: hiding it was the browser's doing, as the rule says.
    [exchange] = [e for e in fresh_stack.exchanges() if e.path == "/api/exposed"]
    assert exchange.response_headers["X-Internal"] == "hidden-from-scripts"


@pytest.mark.parametrize(
    ("method", "init"),
    [
        pytest.param("GET", {}, id="simple GET from a disallowed origin is unreadable"),
        pytest.param(
            "PUT",
            {"method": "PUT", "headers": JSON_HEADERS, "body": "{}"},
            id="preflighted PUT from a disallowed origin never reaches the upstream",
        ),
    ],
)
def test_a_disallowed_origin_is_refused_by_the_browser(
    fresh_stack: Stack, tab: Tab, method: str, init: dict[str, object]
) -> None:
    tab.page.goto(fresh_stack.foreign_page_url)
    path = f"/foreign/{method.lower()}"

    result = tab.fetch(f"{fresh_stack.proxy}/open{path}", init)

    assert not result["fetched"]
    assert result["error"] == "TypeError: Failed to fetch"
    assert tab.blocked_by_cors()
    [exchange] = [e for e in fresh_stack.exchanges() if e.path == f"/open{path}"]
    assert not exchange.allowed
    assert f"origin 'http://127.0.0.1:{fresh_stack.page_port}' is not allowed" in exchange.reason
    assert "Access-Control-Allow-Origin" not in exchange.response_headers
    assert fresh_stack.upstream_saw("OPTIONS", path) == []
    if method == "PUT":
        assert exchange.preflight
        assert exchange.status == 403
        assert fresh_stack.upstream_saw("PUT", path) == []
    else:
        # A simple request is sent; CORS only stops the script from reading the answer.
        assert len(fresh_stack.upstream_saw("GET", path)) == 1


def test_a_disallowed_origin_cannot_spend_the_injected_key_even_with_a_simple_get(
    fresh_stack: Stack, tab: Tab
) -> None:
    tab.page.goto(fresh_stack.foreign_page_url)

    result = tab.fetch(f"{fresh_stack.proxy}/api/spend-the-key")

    assert not result["fetched"]
    assert tab.blocked_by_cors()
    [exchange] = [e for e in fresh_stack.exchanges() if e.path == "/api/spend-the-key"]
    assert (exchange.status, exchange.allowed, exchange.upstream_request_headers) == (403, False, None)
    assert fresh_stack.upstream_saw("GET", "/spend-the-key") == []


def test_with_the_upstream_down_the_page_reads_the_502_and_its_explanation(
    fresh_stack: Stack, tab: Tab
) -> None:
    tab.page.goto(fresh_stack.page_url)

    result = tab.fetch(f"{fresh_stack.proxy}/down/items")

    assert result["fetched"], result
    assert result["status"] == 502
    assert "cannot connect to upstream http://127.0.0.1:" in result["body"]
    assert not tab.blocked_by_cors()


@pytest.mark.parametrize(
    ("method", "init"),
    [
        pytest.param("GET", {}, id="simple GET straight to the upstream is unreadable"),
        pytest.param(
            "PUT",
            {"method": "PUT", "headers": JSON_HEADERS, "body": "{}"},
            id="preflighted PUT straight to the upstream is never sent",
        ),
    ],
)
def test_without_the_proxy_the_browser_refuses_the_same_requests(
    fresh_stack: Stack, tab: Tab, method: str, init: dict[str, object]
) -> None:
    tab.page.goto(fresh_stack.page_url)
    path = f"/direct/{method.lower()}"

    result = tab.fetch(f"{fresh_stack.upstream}{path}", init)

    assert not result["fetched"]
    assert result["error"] == "TypeError: Failed to fetch"
    assert tab.blocked_by_cors()
    if method == "PUT":
        # The upstream's preflight answer has no CORS headers, so the PUT itself never leaves.
        assert len(fresh_stack.upstream_saw("OPTIONS", path)) == 1
        assert fresh_stack.upstream_saw("PUT", path) == []
    else:
        assert len(fresh_stack.upstream_saw("GET", path)) == 1


def test_a_credentialed_fetch_to_a_rule_without_credentials_is_blocked_and_recorded_as_blocked(
    fresh_stack: Stack, tab: Tab
) -> None:
    """The proxy must never call "allowed" what Chromium blocks: the page sends its cookie
    (credentials: 'include'), the rule does not allow credentials, so no ACAC is sent."""
    tab.page.goto(fresh_stack.page_url)
    # Cookies belong to the host, not the port: this one goes to the proxy too.
    tab.page.evaluate("document.cookie = 'session=abc; path=/'")

    result = tab.fetch(f"{fresh_stack.proxy}/nocreds/items", {"credentials": "include"})

    assert not result["fetched"], result
    assert tab.blocked_by_cors()
    (recorded,) = [item for item in fresh_stack.exchanges() if item.path == "/nocreds/items"]
    assert not recorded.allowed
    assert "the page sent credentials (a Cookie)" in recorded.reason
    assert "allow_credentials: true" in recorded.reason


def test_a_mock_passes_cors_with_credentials_a_custom_header_and_an_exposed_header(
    fresh_stack: Stack, tab: Tab
) -> None:
    tab.page.goto(fresh_stack.page_url)

    result = tab.fetch(
        f"{fresh_stack.proxy}/api/mocked/profile",
        {"credentials": "include", "headers": {"X-API-Key": "client-key-7"}},
        read=("X-Request-Id",),
    )

    assert result["fetched"], result
    assert (result["status"], json.loads(result["body"])) == (200, {"name": "Ada"})
    assert result["read"]["X-Request-Id"] == "mock-42"
    assert fresh_stack.upstream_saw("GET", "/mocked/profile") == []
    assert not tab.blocked_by_cors()


def test_a_mocked_503_for_a_path_no_route_serves_reaches_the_page_as_a_503(
    fresh_stack: Stack, tab: Tab
) -> None:
    tab.page.goto(fresh_stack.page_url)

    result = tab.fetch(
        f"{fresh_stack.proxy}/not-built-yet/orders",
        {"method": "PUT", "headers": JSON_HEADERS, "body": "{}"},
    )

    assert result["fetched"], result
    assert (result["status"], result["body"]) == (503, "simulated outage")
    assert not tab.blocked_by_cors()


def test_a_simulated_503_reaches_the_page_with_its_retry_after_and_body(fresh_stack: Stack, tab: Tab) -> None:
    tab.page.goto(fresh_stack.page_url)

    result = tab.fetch(f"{fresh_stack.proxy}/open/flaky/orders", read=("Retry-After",))

    assert result["fetched"], result
    assert result["status"] == 503
    assert result["read"]["Retry-After"] == "7"
    assert result["body"].startswith("simulated by corsproxy: 503")
    assert fresh_stack.upstream_saw("GET", "/flaky/orders") == []
    assert not tab.blocked_by_cors()


def test_a_simulated_reset_makes_fetch_reject(fresh_stack: Stack, tab: Tab) -> None:
    tab.page.goto(fresh_stack.page_url)

    result = tab.fetch(f"{fresh_stack.proxy}/open/cut/orders")

    assert not result["fetched"]
    assert result["error"].startswith("TypeError: Failed to fetch")
    # Not a CORS failure: the connection was cut.
    assert not tab.blocked_by_cors()
