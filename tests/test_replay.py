"""Replay: requests answered from a HAR's entries, shaped as live answers and with the
rules' CORS headers. Through the real proxy on both transports (the `transport` fixture);
the upstream, when there is one, is real and says whether it was reached."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from corsproxy.config.checker import parse_config
from corsproxy.config.model import ConfigError
from corsproxy.state import STATE
from tests.conftest import FRONT_DOOR, ProxyFactory, ProxyTestServer, Upstream
from tests.har import recorded
from tests.processes import free_port, http, spawn, wait_for_port

LOCAL = "http://localhost:5173"
RULES = (
    f"rules:\n  - origins: ['{LOCAL}']\n    allow_credentials: true\n"
    "    allow_methods: [GET, POST]\n    expose_headers: [X-Request-Id]\n"
)


def har_entry(
    method: str,
    url: str,
    *,
    status: int = 200,
    text: str = "",
    mime: str = "application/json",
    headers: list[tuple[str, str]] | None = None,
    post: str | None = None,
) -> dict[str, Any]:
    """An entry as Chromium's DevTools writes one (only the members replay reads differ)."""
    request: dict[str, Any] = {
        "method": method,
        "url": url,
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": [],
        "queryString": [],
        "headersSize": -1,
        "bodySize": 0 if post is None else len(post),
    }
    if post is not None:
        request["postData"] = {"mimeType": "application/json", "text": post}
    return {
        "startedDateTime": "2026-12-01T10:00:00.000Z",
        "time": 5,
        "request": request,
        "response": {
            "status": status,
            "statusText": "OK",
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": [{"name": n, "value": v} for n, v in (headers or [("Content-Type", mime)])],
            "content": {"size": len(text), "mimeType": mime, "text": text},
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": len(text),
        },
        "cache": {},
        "timings": {"send": 0, "wait": 5, "receive": 0},
    }


def write_har(path: Path, *entries: dict[str, Any]) -> Path:
    creator = {"name": "WebInspector", "version": "537.36"}
    path.write_text(json.dumps({"log": {"version": "1.2", "creator": creator, "entries": list(entries)}}))
    return path


def front_door_served(client: Any) -> int:
    assert isinstance(client.server, ProxyTestServer)
    return int(client.server.app[STATE].front_door.served)


async def test_a_recorded_answer_is_served_with_the_rules_cors_headers_and_the_upstream_is_not_asked(
    upstream: Upstream, make_proxy: ProxyFactory, transport: str, tmp_path: Path
) -> None:
    headers = [
        ("Content-Type", "application/json"),
        ("X-Request-Id", "rec-7"),
        ("Access-Control-Allow-Origin", "*"),
        ("Content-Encoding", "gzip"),
        ("Content-Length", "9999"),
        ("Connection", "keep-alive"),
    ]
    har = write_har(
        tmp_path / "api.har",
        har_entry("GET", "https://api.example.com/v1/users?page=2", text='{"users": []}', headers=headers),
    )
    client = await make_proxy(f"upstream: {upstream.url}\n{RULES}replay: {har}\n")
    response = await client.get("/v1/users?page=2", headers={"Origin": LOCAL, "Cookie": "s=1"})
    assert response.status == 200
    body = await response.read()
    assert json.loads(body) == {"users": []}
    # Shaped as a live answer: recorded CORS, coding, length and hop-by-hop headers gone.
    assert response.headers["Access-Control-Allow-Origin"] == LOCAL
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert response.headers["Access-Control-Expose-Headers"] == "X-Request-Id"
    assert "Content-Encoding" not in response.headers
    assert response.headers["Content-Length"] == str(len(body))
    assert response.headers["X-Request-Id"] == "rec-7"
    assert response.headers["Corsproxy-Answer"] == "replay"
    assert upstream.received == []
    if transport == FRONT_DOOR:
        assert front_door_served(client) == 1


async def test_matching_ignores_hosts_and_takes_the_proxy_side_or_the_upstream_path(
    upstream: Upstream, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = write_har(
        tmp_path / "both.har",
        # As corsproxy records it: the upstream URL (the route strips /api).
        har_entry("GET", f"{upstream.url}/orders", text='"upstream-side"'),
        # As a browser records it: the page's URL, the proxy's path.
        har_entry("GET", "http://localhost:8080/api/profile", text='"proxy-side"'),
    )
    client = await make_proxy(
        f"routes:\n  - path: /api\n    upstream: {upstream.url}\n{RULES}replay: {{file: {har}}}\n"
    )
    assert await (await client.get("/api/orders")).json() == "upstream-side"
    assert await (await client.get("/api/profile")).json() == "proxy-side"
    assert upstream.received == []


async def test_query_parameters_match_in_any_order_but_not_with_other_values(
    upstream: Upstream, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = write_har(tmp_path / "q.har", har_entry("GET", "https://x.example/search?q=ada&page=1", text="1"))
    client = await make_proxy(f"upstream: {upstream.url}\nreplay: {har}\n")
    assert (await client.get("/search?page=1&q=ada")).headers["Corsproxy-Answer"] == "replay"
    other = await client.get("/search?page=2&q=ada")
    # A miss goes upstream (replay.miss: forward, the default).
    assert "Corsproxy-Answer" not in other.headers
    assert [(seen.path, seen.query) for seen in upstream.received] == [("/search", "page=2&q=ada")]


async def test_a_request_body_matches_exactly_or_as_equal_json(
    upstream: Upstream, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = write_har(
        tmp_path / "bodies.har",
        har_entry("POST", "https://x.example/graphql", text='"ada"', post='{"query": "user", "id": 1}'),
        har_entry("POST", "https://x.example/graphql", text='"grace"', post='{"query": "user", "id": 2}'),
        har_entry("POST", "https://x.example/echo-text", text='"plain"', post="name=ada"),
    )
    client = await make_proxy(f"upstream: {upstream.url}\nreplay: {har}\n")
    # Same JSON, other spacing and key order.
    second = await client.post("/graphql", data='{"id":2,"query":"user"}')
    assert await second.json() == "grace"
    first = await client.post("/graphql", data='{"query": "user", "id": 1}')
    assert await first.json() == "ada"
    assert await (await client.post("/echo-text", data="name=ada")).json() == "plain"
    # No recorded body like it: forwarded, with its body intact.
    missed = await client.post("/graphql", data='{"query": "user", "id": 3}')
    assert (await missed.json())["body_size"] == len('{"query": "user", "id": 3}')
    assert len(upstream.received) == 1


async def test_repeated_requests_get_the_recorded_answers_in_order_then_the_last_again(
    make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = write_har(
        tmp_path / "polling.har",
        *(
            har_entry("GET", "https://x.example/job/7", text=json.dumps(state))
            for state in ("queued", "running", "done")
        ),
    )
    client = await make_proxy(f"{RULES}replay: {har}\n")
    states = [await (await client.get("/job/7")).json() for _ in range(5)]
    assert states == ["queued", "running", "done", "done", "done"]


async def test_with_miss_404_an_unrecorded_request_gets_a_readable_404_naming_the_closest(
    upstream: Upstream, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = write_har(
        tmp_path / "few.har",
        har_entry("GET", "https://x.example/api/users", text="[]"),
        har_entry("GET", "https://x.example/api/orders", text="[]"),
    )
    client = await make_proxy(f"upstream: {upstream.url}\n{RULES}replay: {{file: {har}, miss: 404}}\n")
    response = await client.get("/api/user", headers={"Origin": LOCAL})
    assert response.status == 404
    text = await response.text()
    assert f"no recorded answer in {har} for GET /api/user" in text
    assert response.headers["Corsproxy-Answer"] == "replay-miss"
    assert "closest recorded: GET /api/users" in text
    # Readable by the page: CORS headers on the 404 as on every answer.
    assert response.headers["Access-Control-Allow-Origin"] == LOCAL
    assert upstream.received == []


async def test_recorded_cookies_and_redirects_are_adapted_as_a_live_answer_would_be(
    upstream: Upstream, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    headers = [
        ("Set-Cookie", f"session=abc; Domain={upstream.server.host}; Path=/; Secure; SameSite=None"),
        ("Location", f"{upstream.url}/welcome"),
    ]
    har = write_har(
        tmp_path / "login.har",
        har_entry("POST", f"{upstream.url}/login", status=302, headers=headers, post='{"u": 1}'),
    )
    client = await make_proxy(
        f"routes:\n  - path: /api\n    upstream: {upstream.url}\n{RULES}replay: {har}\n"
    )
    response = await client.post("/api/login", data='{"u": 1}', allow_redirects=False)
    assert response.status == 302
    # As for a live answer through route /api (upstream/rewrite.py).
    assert response.headers["Location"].endswith("/api/welcome")
    cookie = response.headers["Set-Cookie"]
    assert "Domain" not in cookie
    assert "Path=/api" in cookie


async def test_a_replay_alone_needs_no_upstream_and_head_is_answered_from_get(
    make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = write_har(tmp_path / "offline.har", har_entry("GET", "https://x.example/health", text='"ok"'))
    client = await make_proxy(f"{RULES}replay: {har}\n")
    assert await (await client.get("/health", headers={"Origin": LOCAL})).json() == "ok"
    head = await client.head("/health")
    assert head.status == 200
    assert await head.read() == b""
    missing = await client.get("/other")
    # A miss with nothing to forward to: the no-route 404, as without a replay.
    assert missing.status == 404


async def test_the_log_line_and_the_inspector_say_replay(
    make_proxy: ProxyFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    har = write_har(tmp_path / "said.har", har_entry("GET", "https://x.example/said", text="1"))
    client = await make_proxy(f"{RULES}replay: {har}\n")
    caplog.set_level("INFO", logger="corsproxy")
    await client.get("/said", headers={"Origin": LOCAL})
    assert any("GET /said" in line and "answered by replay" in line for line in caplog.messages)
    listed = await (await client.get("/__corsproxy/api/exchanges")).json()
    assert listed[0]["source"] == "replay"


async def test_a_har_corsproxy_recorded_replays_the_same_answers_with_the_upstream_gone(
    upstream: Upstream, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = tmp_path / "session.har"
    live = await make_proxy(f"upstream: {upstream.url}\n{RULES}record: {har}\n")
    first = await live.get("/gzip", headers={"Origin": LOCAL})
    compressed = await first.read()
    echoed = await (await live.get("/items?id=3", headers={"Origin": LOCAL})).json()
    assert len(await recorded(har)) == 2
    address = upstream.url
    await upstream.server.close()
    offline = await make_proxy(f"upstream: {address}\n{RULES}replay: {{file: {har}, miss: 404}}\n")
    replayed = await offline.get("/gzip", headers={"Origin": LOCAL})
    # Stored decoded, served decoded: the same text the browser read through the coding.
    assert await replayed.read() == gzip.decompress(compressed)
    assert "Content-Encoding" not in replayed.headers
    assert await (await offline.get("/items?id=3", headers={"Origin": LOCAL})).json() == echoed


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        pytest.param(
            "replay: {}\n", "replay.file: missing: the HAR file to answer from (line 2)", id="no file"
        ),
        pytest.param("replay: nowhere.har\n", "replay: no such file: ", id="missing file"),
        pytest.param("replay: {file: notes.txt}\n", "replay.file: cannot replay it: ", id="not JSON"),
        pytest.param(
            "replay: {file: empty.json}\n", "is not a HAR file: no log.entries list", id="not a HAR"
        ),
        pytest.param(
            "replay: {file: odd.json}\n", "is not a HAR file: no log.entries list", id="log not a mapping"
        ),
        pytest.param(
            "replay: {file: broken.har}\n",
            "replay.file: cannot replay it: entries[1]: missing 'response'",
            id="a broken entry",
        ),
        pytest.param(
            "replay: {file: good.har, miss: drop}\n",
            "replay.miss: must be one of forward, 404, got 'drop' (line 2)",
            id="bad miss",
        ),
        pytest.param(
            "replay: {file: good.har, mis: 404}\n", "replay.mis: unknown key; did you mean 'miss'?", id="typo"
        ),
    ],
)
def test_every_replay_mistake_is_a_config_error_with_its_key_and_line(
    text: str, wanted: str, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("not json")
    (tmp_path / "empty.json").write_text("{}")
    (tmp_path / "odd.json").write_text('{"log": "x"}')
    good = har_entry("GET", "https://x.example/a")
    write_har(tmp_path / "good.har", good)
    write_har(tmp_path / "broken.har", good, {"request": good["request"]})
    with pytest.raises(ConfigError) as raised:
        parse_config("upstream: http://127.0.0.1:9\n" + text, "test.yaml", {}, tmp_path)
    assert any(wanted in error for error in raised.value.errors), raised.value.errors


def test_corsproxy_serve_replay_alone_answers_offline(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    har = write_har(tmp_path / "cli.har", har_entry("GET", "https://api.example.com/me", text='{"me": 1}'))
    port = free_port()
    proxy = spawn(started, "serve", "--replay", str(har), "--replay-miss", "404", "--port", str(port))
    wait_for_port(port, proxy)
    answer = http(port, f"GET /me HTTP/1.1\nHost: localhost\nOrigin: {LOCAL}\nConnection: close\n")
    assert answer.startswith("HTTP/1.1 200")
    assert answer.endswith('{"me": 1}')
    assert f"Access-Control-Allow-Origin: {LOCAL}" in answer
    missed = http(port, "GET /you HTTP/1.1\nHost: localhost\nConnection: close\n")
    assert missed.startswith("HTTP/1.1 404")
    assert "closest recorded: GET /me" in missed
    proxy.terminate()
    out, _ = proxy.communicate(timeout=15)
    assert f"replaying {har} (1 entries; a miss: 404)" in out


async def test_entries_without_an_answer_or_for_a_websocket_are_not_replayed(
    upstream: Upstream, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = write_har(
        tmp_path / "devtools.har",
        # As DevTools saves them: a request the page cancelled, and a WebSocket's upgrade.
        har_entry("GET", "https://x.example/cancelled", status=0),
        har_entry("GET", "https://x.example/socket", status=101),
        har_entry("GET", "https://x.example/kept", text='"kept"'),
    )
    client = await make_proxy(f"upstream: {upstream.url}\nreplay: {har}\n")
    assert await (await client.get("/kept")).json() == "kept"
    for path in ("/cancelled", "/socket"):
        assert "Corsproxy-Answer" not in (await client.get(path)).headers
    assert [seen.path for seen in upstream.received] == ["/cancelled", "/socket"]


async def test_a_cut_or_broken_off_entry_is_not_replayed_but_a_cut_event_stream_is(
    upstream: Upstream, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    cut = har_entry("GET", "https://x.example/big", text='{"items": [1, 2')
    cut["response"]["content"]["_truncated"] = True
    stream = har_entry("GET", "https://x.example/events", text="data: 1\n\n", mime="text/event-stream")
    stream["response"]["content"]["_truncated"] = True
    har = write_har(tmp_path / "cut.har", cut, stream)
    client = await make_proxy(f"upstream: {upstream.url}\nreplay: {har}\n")
    # Served whole, the cut JSON would look complete: it goes upstream instead.
    assert "Corsproxy-Answer" not in (await client.get("/big")).headers
    events = await client.get("/events")
    assert (events.headers["Corsproxy-Answer"], await events.text()) == ("replay", "data: 1\n\n")


async def test_a_body_in_another_charset_is_recorded_exact_and_replayed_byte_for_byte(
    make_proxy: ProxyFactory, tmp_path: Path, aiohttp_server: Any
) -> None:
    from aiohttp import web

    latin = "café".encode("latin-1")

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=latin, headers={"Content-Type": "text/plain; charset=iso-8859-1"})

    app = web.Application()
    app.router.add_get("/page", page)
    server = await aiohttp_server(app)
    har = tmp_path / "latin.har"
    live = await make_proxy(f"upstream: {str(server.make_url('')).rstrip('/')}\nrecord: {har}\n")
    assert await (await live.get("/page")).read() == latin
    (entry,) = await recorded(har)
    assert entry["response"]["content"]["encoding"] == "base64"
    offline = await make_proxy(f"replay: {{file: {har}, miss: 404}}\n")
    assert await (await offline.get("/page")).read() == latin


async def test_a_gzipped_request_body_matches_its_recording(make_proxy: ProxyFactory, tmp_path: Path) -> None:
    har = write_har(
        tmp_path / "gz.har", har_entry("POST", "https://x.example/upload", text='"got it"', post='{"a": 1}')
    )
    client = await make_proxy(f"replay: {{file: {har}, miss: 404}}\n")
    response = await client.post(
        "/upload", data=gzip.compress(b'{"a": 1}'), headers={"Content-Encoding": "gzip"}
    )
    assert await response.json() == "got it"


async def test_a_304_answers_only_a_conditional_request(make_proxy: ProxyFactory, tmp_path: Path) -> None:
    cached = har_entry("GET", "https://x.example/logo", status=304)
    cached["request"]["headers"] = [{"name": "If-None-Match", "value": '"v1"'}]
    har = write_har(
        tmp_path / "reload.har", har_entry("GET", "https://x.example/logo", text='"fresh"'), cached
    )
    client = await make_proxy(f"replay: {{file: {har}, miss: 404}}\n")
    for _ in range(2):
        # A browser without a cached copy gets the 200, however often it asks.
        assert await (await client.get("/logo")).json() == "fresh"
    conditional = await client.get("/logo", headers={"If-None-Match": '"v1"'})
    assert conditional.status == 304
    assert "Content-Length" not in conditional.headers or conditional.headers["Content-Length"] == "0"


async def test_head_keeps_its_own_place_in_a_sequence_shared_with_get(
    make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = write_har(
        tmp_path / "seq.har", *(har_entry("GET", "https://x.example/v", text=f'"v{n}"') for n in (1, 2))
    )
    client = await make_proxy(f"replay: {{file: {har}, miss: 404}}\n")
    assert (await client.head("/v")).status == 200
    assert await (await client.get("/v")).json() == "v1"


async def test_json_bodies_compare_strictly_true_is_not_1(make_proxy: ProxyFactory, tmp_path: Path) -> None:
    har = write_har(
        tmp_path / "strict.har", har_entry("POST", "https://x.example/flag", text='"on"', post='{"on": true}')
    )
    client = await make_proxy(f"replay: {{file: {har}, miss: 404}}\n")
    assert (await client.post("/flag", data='{"on": 1}')).status == 404
    assert await (await client.post("/flag", data='{ "on" : true }')).json() == "on"


def test_an_entry_whose_members_are_the_wrong_shape_is_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    broken = har_entry("GET", "https://x.example/a")
    broken["response"]["content"] = "oops"
    har = write_har(tmp_path / "shape.har", broken)
    with pytest.raises(ConfigError) as raised:
        parse_config(f"replay: {har}\n", "test.yaml", {}, tmp_path)
    assert raised.value.errors == [
        "replay: cannot replay it: entries[0]: response.content must be an object (line 1)"
    ]
