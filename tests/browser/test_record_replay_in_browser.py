"""Recording and replay in a real browser: a page's traffic recorded (by corsproxy, or by
Playwright's ``record_har_path``), the upstream gone, and the page getting the same
results from the replay, CORS included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web
from playwright.sync_api import Browser

from corsproxy import create_app
from corsproxy.config.checker import parse_config
from corsproxy.server.runner import ProxyRunner
from tests.browser.conftest import Stack, Tab
from tests.har import load_valid_har, recorded

JSON = {"Content-Type": "application/json"}


def api_app() -> web.Application:
    """An API the page calls: a list, a search with a JSON body, and a counter."""
    calls = {"count": 0}

    async def items(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        return web.json_response({"page": page, "items": [f"item {page}-{n}" for n in range(3)]})

    async def search(request: web.Request) -> web.Response:
        query = (await request.json())["q"]
        return web.json_response(
            {"q": query, "hits": len(query)}, headers={"X-Request-Id": f"search-{query}"}
        )

    async def counter(request: web.Request) -> web.Response:
        calls["count"] += 1
        return web.json_response({"count": calls["count"]})

    app = web.Application()
    app.router.add_get("/items", items)
    app.router.add_post("/search", search)
    app.router.add_get("/counter", counter)
    return app


def proxy_yaml(stack: Stack, upstream_port: int, extra: str) -> str:
    return (
        f"routes:\n  - path: /api\n    upstream: http://127.0.0.1:{upstream_port}\n"
        f"rules:\n  - origins: [http://localhost:{stack.page_port}]\n"
        "    allow_methods: [GET, POST]\n    allow_headers: [Content-Type]\n"
        "    expose_headers: [X-Request-Id]\n    max_age: 0\n" + extra
    )


def page_session(tab: Tab, proxy: str) -> list[dict[str, Any]]:
    """What the page does and reads: a GET, a preflighted POST with JSON, a counter twice."""
    return [
        tab.fetch(f"{proxy}/api/items?page=2"),
        tab.fetch(
            f"{proxy}/api/search",
            {"method": "POST", "headers": JSON, "body": json.dumps({"q": "ada"})},
            read=("X-Request-Id",),
        ),
        tab.fetch(f"{proxy}/api/counter"),
        tab.fetch(f"{proxy}/api/counter"),
    ]


def test_a_page_recorded_through_corsproxy_gets_the_same_results_offline_from_the_replay(
    stack: Stack, tab: Tab, serve: Any, tmp_path: Path
) -> None:
    har = tmp_path / "session.har"
    upstream = serve(api_app())
    live = serve(
        create_app(parse_config(proxy_yaml(stack, upstream.port, f"record: {har}\n"), "live.yaml", {})),
        ProxyRunner,
    )
    tab.page.goto(stack.page_url)
    online = page_session(tab, live.url)
    assert [result["status"] for result in online] == [200, 200, 200, 200]
    assert online[1]["read"]["X-Request-Id"] == "search-ada"
    assert [json.loads(result["body"])["count"] for result in online[2:]] == [1, 2]
    stack.servers.call(recorded(har))
    upstream.stop()
    live.stop()

    replay = f"replay: {{file: {har}, miss: 404}}\n"
    offline = serve(
        create_app(parse_config(proxy_yaml(stack, upstream.port, replay), "offline.yaml", {})), ProxyRunner
    )
    tab.page.goto(stack.page_url)
    again = page_session(tab, offline.url)
    assert again == online
    unrecorded = tab.fetch(f"{offline.url}/api/items?page=9")
    # A miss is a 404 the page can read, never a CORS error.
    assert unrecorded["fetched"], unrecorded
    assert unrecorded["status"] == 404
    assert "no recorded answer" in unrecorded["body"]
    assert not tab.blocked_by_cors()


def test_a_har_recorded_by_playwright_is_replayed_to_the_page(
    fresh_stack: Stack, browser: Browser, serve: Any, tmp_path: Path
) -> None:
    har = tmp_path / "playwright.har"
    recording = browser.new_context(record_har_path=str(har), record_har_content="embed")
    page = recording.new_page()
    page.goto(fresh_stack.page_url)
    tab = Tab(page, [], [])
    first = tab.fetch(f"{fresh_stack.proxy}/open/catalog?sort=name")
    posted = tab.fetch(
        f"{fresh_stack.proxy}/open/orders", {"method": "POST", "headers": JSON, "body": '{"item": 7}'}
    )
    recording.close()  # writes the HAR
    assert (first["status"], posted["status"]) == (200, 200)
    load_valid_har(har)  # Playwright's HAR, held to the same schema as corsproxy's

    yaml = (
        f"rules:\n  - origins: [http://localhost:{fresh_stack.page_port}]\n"
        f"    allow_headers: [Content-Type]\nreplay: {{file: {har}, miss: 404}}\n"
    )
    replay = serve(create_app(parse_config(yaml, "replay.yaml", {})), ProxyRunner)
    seen_before = len(fresh_stack.seen)
    replaying = browser.new_context()
    try:
        page = replaying.new_page()
        page.goto(fresh_stack.page_url)
        tab = Tab(page, [], [])
        again = tab.fetch(f"{replay.url}/open/catalog?sort=name")
        posted_again = tab.fetch(
            f"{replay.url}/open/orders", {"method": "POST", "headers": JSON, "body": '{"item": 7}'}
        )
    finally:
        replaying.close()
    # Playwright recorded the proxy's URLs: replay matches them on the proxy-side path.
    assert (again["status"], again["body"]) == (first["status"], first["body"])
    assert (posted_again["status"], posted_again["body"]) == (posted["status"], posted["body"])
    assert len(fresh_stack.seen) == seen_before
