"""The inspector's JSON API and page, against the real proxy and a real upstream."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from tests.conftest import FRONT_DOOR, ProxyFactory, Upstream
from tests.har import schema_errors


@pytest.fixture
def transport() -> str:
    """The inspector is the proxy's own page, always served by aiohttp: one run, as
    `corsproxy serve` serves it."""
    return FRONT_DOOR


FRONTEND = "http://localhost:5173"
TOKEN = "tok-secret-123"
HOST_SECRET = "upstream-path-secret"


def inspector_yaml(upstream: Upstream) -> str:
    return f"""
routes:
  - path: /api
    upstream: {upstream.url}/${{UPSTREAM_PATH}}
    request_headers:
      Authorization: Bearer ${{API_TOKEN}}
rules:
  - origins: ["{FRONTEND}"]
    allow_methods: [GET, PUT]
    allow_headers: [Content-Type]
    expose_headers: [X-Request-Id]
"""


async def start(upstream: Upstream, make_proxy: ProxyFactory) -> TestClient[Any, Any]:
    return await make_proxy(inspector_yaml(upstream), API_TOKEN=TOKEN, UPSTREAM_PATH=HOST_SECRET)


def own_origin(client: TestClient[Any, Any]) -> str:
    return str(client.make_url("")).rstrip("/")


async def get_json(client: TestClient[Any, Any], path: str) -> Any:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_exchanges_are_listed_newest_first_and_limited(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await start(upstream, make_proxy)
    for name in ("first", "second", "third"):
        await client.get(f"/api/{name}?n=1", headers={"Origin": FRONTEND})

    listed = await get_json(client, "/__corsproxy/api/exchanges")
    limited = await get_json(client, "/__corsproxy/api/exchanges?limit=2")

    assert [item["path"] for item in listed] == ["/api/third", "/api/second", "/api/first"]
    assert [item["path"] for item in limited] == ["/api/third", "/api/second"]
    third = listed[0]
    assert (third["method"], third["query"], third["origin"], third["status"]) == (
        "GET",
        "n=1",
        FRONTEND,
        200,
    )
    assert third["preflight"] is False
    assert third["cors"] == {"allowed": True, "reason": "allowed by rules[0] (path /**)", "rule": 0}


@pytest.mark.parametrize(
    "limit",
    [pytest.param("-1", id="negative limit"), pytest.param("ten", id="limit that is not a number")],
)
async def test_a_bad_limit_is_refused_with_the_reason(
    upstream: Upstream, make_proxy: ProxyFactory, limit: str
) -> None:
    client = await start(upstream, make_proxy)
    response = await client.get(f"/__corsproxy/api/exchanges?limit={limit}")
    assert response.status == 400
    assert (await response.json())["error"] == f"limit must be a non-negative integer, got {limit!r}"


async def test_a_refused_preflight_explains_itself_and_was_never_forwarded(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await start(upstream, make_proxy)
    await client.options(
        "/api/items",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type",
        },
    )

    [summary] = await get_json(client, "/__corsproxy/api/exchanges")
    detail = await get_json(client, f"/__corsproxy/api/exchanges/{summary['id']}")

    assert (detail["method"], detail["status"], detail["preflight"]) == ("OPTIONS", 403, True)
    assert detail["cors"]["allowed"] is False
    assert "origin 'http://localhost:3000' is not allowed for /api/items" in detail["cors"]["reason"]
    assert detail["upstream_request"] is None
    assert upstream.received == []


async def test_an_exchange_shows_all_three_header_sets_with_secrets_hidden(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await start(upstream, make_proxy)
    await client.put(
        "/api/items/1", headers={"Origin": FRONTEND, "Content-Type": "application/json"}, data="{}"
    )
    [summary] = await get_json(client, "/__corsproxy/api/exchanges")

    response = await client.get(f"/__corsproxy/api/exchanges/{summary['id']}")
    text = await response.text()
    detail = json.loads(text)

    # Pairs, as the wire had them; looked up case-insensitively like any headers.
    request_headers = CIMultiDict(detail["request_headers"])
    response_headers = CIMultiDict(detail["response_headers"])
    upstream_request = detail["upstream_request"]
    assert request_headers["Origin"] == FRONTEND
    assert response_headers["Access-Control-Allow-Origin"] == FRONTEND
    assert response_headers["X-Request-Id"] == "req-1"
    assert upstream_request["url"] == f"{upstream.url}/***/items/1"
    assert CIMultiDict(upstream_request["headers"])["Authorization"] == "Bearer ***"
    # The upstream did get the real values: only the inspector hides them.
    assert upstream.received[-1].headers["Authorization"] == f"Bearer {TOKEN}"
    assert upstream.received[-1].path == f"/{HOST_SECRET}/items/1"
    assert TOKEN not in text
    assert HOST_SECRET not in text


async def test_an_unknown_exchange_is_a_404_that_says_why(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await start(upstream, make_proxy)
    response = await client.get("/__corsproxy/api/exchanges/999")
    assert response.status == 404
    assert "no exchange 999" in (await response.json())["error"]


async def test_the_config_summary_lists_routes_and_rules_with_secrets_hidden(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await start(upstream, make_proxy)

    response = await client.get("/__corsproxy/api/config")
    text = await response.text()
    config = json.loads(text)

    [route] = config["routes"]
    assert (route["path"], route["upstream"]) == ("/api", f"{upstream.url}/***")
    assert route["request_headers"] == [["Authorization", "***"]]
    [rule] = config["rules"]
    assert rule["origins"] == [FRONTEND]
    assert rule["allow_methods"] == ["GET", "PUT"]
    assert rule["expose_headers"] == ["X-Request-Id"]
    assert rule["allow_credentials"] is False
    assert TOKEN not in text
    assert HOST_SECRET not in text


async def test_the_inspectors_own_requests_are_not_recorded(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await start(upstream, make_proxy)
    for path in ("/__corsproxy/", "/__corsproxy/inspector.js", "/__corsproxy/api/config"):
        assert (await client.get(path)).status == 200

    assert await get_json(client, "/__corsproxy/api/exchanges") == []
    assert upstream.received == []


INSPECTOR_PATHS = [
    pytest.param("/__corsproxy/", id="the page"),
    pytest.param("/__corsproxy/inspector.js", id="the script"),
    pytest.param("/__corsproxy/api/exchanges", id="the exchange list"),
    pytest.param("/__corsproxy/api/exchanges/1", id="one exchange"),
    pytest.param("/__corsproxy/api/events", id="the event stream"),
    pytest.param("/__corsproxy/api/config", id="the config"),
]


@pytest.mark.parametrize("path", INSPECTOR_PATHS)
@pytest.mark.parametrize(
    "origin",
    [
        pytest.param(FRONTEND, id="an allowed frontend"),
        pytest.param("https://evil.example", id="any website"),
        pytest.param("null", id="a sandboxed page"),
    ],
)
async def test_another_origin_is_refused_with_403_and_no_cors_headers(
    upstream: Upstream, make_proxy: ProxyFactory, path: str, origin: str
) -> None:
    client = await start(upstream, make_proxy)
    await client.get("/api/items", headers={"Origin": FRONTEND})

    response = await client.get(path, headers={"Origin": origin})

    assert response.status == 403
    assert f"served to its own origin {own_origin(client)} only" in await response.text()
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]


@pytest.mark.parametrize(
    ("path", "fetch_metadata", "status"),
    [
        pytest.param(
            "/__corsproxy/api/exchanges",
            {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "script"},
            403,
            id="a script tag on another site is refused",
        ),
        pytest.param(
            "/__corsproxy/api/events",
            {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"},
            403,
            id="an image tag on the frontend's site is refused",
        ),
        pytest.param(
            "/__corsproxy/",
            {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"},
            200,
            id="following a link from elsewhere opens the page",
        ),
        pytest.param(
            "/__corsproxy/api/config",
            {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"},
            200,
            id="the page's own fetch is served",
        ),
    ],
)
async def test_requests_without_origin_are_judged_by_fetch_metadata(
    upstream: Upstream, make_proxy: ProxyFactory, path: str, fetch_metadata: dict[str, str], status: int
) -> None:
    client = await start(upstream, make_proxy)
    response = await client.get(path, headers=fetch_metadata)
    assert response.status == status
    if status == 403:
        assert "not to a " in await response.text()


async def test_the_proxys_own_origin_is_served_without_cors_headers(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await start(upstream, make_proxy)
    await client.get("/api/items", headers={"Origin": FRONTEND})

    for path in ("/__corsproxy/", "/__corsproxy/api/exchanges", "/__corsproxy/api/exchanges/1"):
        response = await client.get(path, headers={"Origin": own_origin(client)})
        assert response.status == 200, path
        assert not [name for name in response.headers if name.lower().startswith("access-control-")]


async def test_the_page_cannot_be_framed_and_loads_nothing_from_elsewhere(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await start(upstream, make_proxy)

    response = await client.get("/__corsproxy/")
    html = await response.text()

    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.headers["X-Frame-Options"] == "DENY"
    policy = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'self'" in policy
    assert "http" not in html.replace("http-equiv", "")  # no CDN, no absolute URLs
    assets = (
        ("inspector.css", "text/css"),
        ("inspector.js", "text/javascript"),
        ("workbench.js", "text/javascript"),
    )
    for asset, kind in assets:
        asset_response = await client.get(f"/__corsproxy/{asset}")
        assert asset_response.status == 200
        assert asset_response.content_type in (kind, "application/javascript")
        # Works offline: no absolute URL, so nothing is fetched from anywhere but the proxy.
        assert re.search(r"https?://", await asset_response.text()) is None, asset


async def test_the_prefix_without_its_slash_redirects_to_the_page(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await start(upstream, make_proxy)
    response = await client.get("/__corsproxy", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/__corsproxy/"
    assert upstream.received == []


async def read_event(client_response: Any) -> tuple[str, Any, str | None]:
    """The next Server-Sent Event, skipping keep-alive comments: (event, data, id)."""
    while True:
        raw = await asyncio.wait_for(client_response.content.readuntil(b"\n\n"), 5)
        fields = dict(
            line.split(": ", 1) for line in raw.decode().strip().split("\n") if not line.startswith(":")
        )
        if fields:
            return fields["event"], json.loads(fields["data"]), fields.get("id")


async def test_the_event_stream_sends_a_snapshot_then_each_new_exchange_live(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await start(upstream, make_proxy)
    await client.get("/api/before", headers={"Origin": FRONTEND})

    stream = await client.get("/__corsproxy/api/events")
    assert stream.headers["Content-Type"] == "text/event-stream"
    name, snapshot, first_id = await read_event(stream)
    await client.get("/api/after", headers={"Origin": "https://evil.example"})
    live_name, live, live_id = await read_event(stream)

    assert (name, [item["path"] for item in snapshot]) == ("snapshot", ["/api/before"])
    assert live_name == "exchange"
    assert live["path"] == "/api/after"
    assert live["cors"]["allowed"] is False
    assert (first_id, live_id) == (str(snapshot[0]["id"]), str(live["id"]))
    # Closing the proxy with a stream still open must not wait for the stream to end.
    await asyncio.wait_for(client.close(), 5)


async def test_a_reconnecting_stream_gets_only_what_it_missed(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await start(upstream, make_proxy)
    for name in ("seen", "missed"):
        await client.get(f"/api/{name}")
    seen_id = (await get_json(client, "/__corsproxy/api/exchanges"))[1]["id"]

    stream = await client.get("/__corsproxy/api/events", headers={"Last-Event-ID": str(seen_id)})
    name, snapshot, _ = await read_event(stream)

    assert name == "snapshot"
    assert [item["path"] for item in snapshot] == ["/api/missed"]
    stream.close()


@pytest.mark.parametrize(
    ("request_headers", "method", "allowed", "codes"),
    [
        pytest.param({"Origin": FRONTEND}, "GET", True, [], id="an allowed GET is one the browser accepts"),
        pytest.param(
            {
                "Origin": FRONTEND,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "x-foo",
            },
            "OPTIONS",
            False,
            ["preflight-failed", "missing-allow-origin"],
            id="a refused preflight is one the browser rejects",
        ),
        pytest.param(
            {"Origin": "https://evil.example"},
            "GET",
            False,
            # The route injects a key: corsproxy refused to forward, and says so.
            ["missing-allow-origin", "answered-by-corsproxy"],
            id="a refused origin's response is one the browser will not let the page read",
        ),
    ],
)
async def test_each_exchange_carries_the_browsers_verdict_on_the_proxys_answer(
    upstream: Upstream,
    make_proxy: ProxyFactory,
    request_headers: dict[str, str],
    method: str,
    allowed: bool,
    codes: list[str],
) -> None:
    client = await start(upstream, make_proxy)
    await client.request(method, "/api/items", headers=request_headers)
    [summary] = await get_json(client, "/__corsproxy/api/exchanges?limit=1")
    detail = await get_json(client, f"/__corsproxy/api/exchanges/{summary['id']}")
    assert detail["browser"]["allowed"] is allowed
    assert [finding["code"] for finding in detail["browser"]["findings"]] == codes


@pytest.mark.parametrize(
    ("path", "status", "named"),
    [
        pytest.param("/nowhere", 404, "no route for /nowhere (routes: /down, /api)", id="no route serves it"),
        pytest.param(
            "/down/x", 502, "cannot connect to upstream http://127.0.0.1:", id="an upstream that is down"
        ),
    ],
)
async def test_an_answer_corsproxy_made_itself_is_never_shown_as_allowed(
    upstream: Upstream, make_proxy: ProxyFactory, path: str, status: int, named: str
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    client = await make_proxy(
        inspector_yaml(upstream).replace(
            "rules:", f"  - path: /down\n    upstream: http://127.0.0.1:{closed}\nrules:"
        ),
        API_TOKEN=TOKEN,
        UPSTREAM_PATH=HOST_SECRET,
    )
    response = await client.get(path, headers={"Origin": FRONTEND})
    assert response.status == status
    # The page can read it (CORS headers on every status), but it is not the upstream's answer.
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    (summary,) = [
        item for item in await get_json(client, "/__corsproxy/api/exchanges") if item["path"] == path
    ]
    assert summary["cors"]["allowed"] is False
    assert f"{status} from corsproxy, not the upstream" in summary["cors"]["reason"]
    assert named in summary["cors"]["reason"]
    detail = await get_json(client, f"/__corsproxy/api/exchanges/{summary['id']}")
    assert detail["browser"]["allowed"] is False
    assert [finding["code"] for finding in detail["browser"]["findings"]] == ["answered-by-corsproxy"]


async def test_the_live_list_starts_with_every_exchange_the_record_keeps(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    """The page shows the last 500, as the README says, not only the newest hundred."""
    client = await start(upstream, make_proxy)
    for number in range(150):
        await (await client.get(f"/api/n{number}")).read()
    stream = await client.get("/__corsproxy/api/events")
    name, snapshot, _ = await read_event(stream)
    assert name == "snapshot"
    assert len(snapshot) == 150
    assert (snapshot[0]["path"], snapshot[-1]["path"]) == ("/api/n149", "/api/n0")
    stream.close()


async def test_without_a_cookie_the_verdict_also_says_what_credentials_mode_include_would_do(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    """The proxy cannot know a page's credentials mode when no Cookie was sent: quick mode's
    rule allows no credentials, so the same answer would be blocked with them."""
    client = await make_proxy(f"upstream: {upstream.url}\n")
    await (await client.get("/items", headers={"Origin": FRONTEND})).read()
    [summary] = await get_json(client, "/__corsproxy/api/exchanges?limit=1")
    browser = (await get_json(client, f"/__corsproxy/api/exchanges/{summary['id']}"))["browser"]
    assert (browser["allowed"], browser["credentials_assumed"]) == (True, False)
    assert browser["with_credentials"]["allowed"] is False
    assert [finding["code"] for finding in browser["with_credentials"]["findings"]] == [
        "credentials-not-allowed"
    ]


async def test_the_record_is_served_as_a_valid_har_oldest_first_with_secrets_hidden(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await start(upstream, make_proxy)
    await client.get("/api/first?x=1", headers={"Origin": FRONTEND})
    await client.options("/api/second", headers={"Origin": FRONTEND, "Access-Control-Request-Method": "PUT"})
    await client.get("/api/third", headers={"Origin": "https://evil.example", "Cookie": f"t={TOKEN}"})
    response = await client.get("/__corsproxy/api/har")
    assert response.status == 200
    assert response.headers["Content-Disposition"] == 'attachment; filename="corsproxy.har"'
    text = await response.text()
    assert TOKEN not in text
    har = json.loads(text)
    assert not schema_errors(har)
    entries = har["log"]["entries"]
    own = own_origin(client)
    assert [entry["request"]["url"] for entry in entries] == [
        f"{own}/api/first?x=1",
        f"{own}/api/second",
        f"{own}/api/third",
    ]
    assert [entry["request"]["method"] for entry in entries] == ["GET", "OPTIONS", "GET"]
    first, preflight, refused = (entry["_corsproxy"] for entry in entries)
    assert (first["source"], first["cors"]["allowed"]) == ("upstream", True)
    assert (preflight["preflight"], preflight["source"]) == (True, "corsproxy")
    assert refused["cors"]["allowed"] is False
    cookie_header = {h["name"]: h["value"] for h in entries[2]["request"]["headers"]}["Cookie"]
    assert cookie_header == "t=***"
