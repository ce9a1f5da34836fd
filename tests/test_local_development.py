"""What local development against real APIs throws at the proxy: cookies, redirects,
event streams, request rewriting, .env files, hot reload and several upstreams."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from corsproxy import create_app, load_config
from tests.conftest import ProxyFactory, ProxyTestServer, Upstream, loads

LOCAL = "http://localhost:5173"
ServerFactory = Callable[..., Awaitable[TestServer]]


async def test_a_login_cookie_is_adapted_to_stick_on_the_proxys_host(
    aiohttp_server: ServerFactory, make_proxy: ProxyFactory
) -> None:
    async def login(request: web.Request) -> web.Response:
        response = web.Response(text="ok")
        response.headers.add(
            "Set-Cookie", "session=abc; Domain=api.example.com; Path=/v1; Secure; HttpOnly; SameSite=None"
        )
        return response

    app = web.Application()
    app.router.add_post("/v1/login", login)
    server = await aiohttp_server(app)
    client = await make_proxy(
        f"routes:\n  - path: /api\n    upstream: http://127.0.0.1:{server.port}/v1\n"
        f"rules:\n  - origins: ['{LOCAL}']\n    allow_credentials: true\n"
    )
    response = await client.post("/api/login", headers={"Origin": LOCAL})
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("session=abc")
    assert "Domain" not in cookie
    assert "Secure" not in cookie
    assert "Path=/api" in cookie
    assert "SameSite=None" not in cookie
    assert "HttpOnly" in cookie


async def test_an_absolute_redirect_to_the_upstream_comes_back_through_the_proxy(
    aiohttp_server: ServerFactory, make_proxy: ProxyFactory
) -> None:
    async def moved(request: web.Request) -> web.Response:
        host = request.host
        return web.Response(status=307, headers={"Location": f"http://{host}/v1/new?x=1"})

    app = web.Application()
    app.router.add_route("*", "/v1/old", moved)
    server = await aiohttp_server(app)
    client = await make_proxy(
        f"routes:\n  - path: /api\n    upstream: http://127.0.0.1:{server.port}/v1\n"
        f"rules:\n  - origins: ['{LOCAL}']\n    allow_methods: [PUT]\n"
    )
    response = await client.put("/api/old", data=b"body", allow_redirects=False, headers={"Origin": LOCAL})
    assert response.status == 307
    assert response.headers["Location"] == f"http://127.0.0.1:{client.port}/api/new?x=1"
    assert response.headers["Access-Control-Allow-Origin"] == LOCAL


async def test_server_sent_events_arrive_before_the_upstream_finishes(
    aiohttp_server: ServerFactory, make_proxy: ProxyFactory
) -> None:
    finished = asyncio.Event()
    release = asyncio.Event()

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        await release.wait()
        await response.write(b"data: second\n\n")
        await response.write_eof()
        finished.set()
        return response

    app = web.Application()
    app.router.add_get("/events", events)
    server = await aiohttp_server(app)
    client = await make_proxy(f"upstream: http://127.0.0.1:{server.port}\n")
    response = await client.get("/events", headers={"Origin": "http://localhost:3000"})
    first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
    assert first == b"data: first\n\n"
    assert not finished.is_set()
    release.set()
    assert await response.content.read() == b"data: second\n\n"


async def test_request_headers_are_set_removed_and_origin_rewritten(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(
        f"""
routes:
  - path: /
    upstream: {upstream.url}
    request_headers:
      X-Api-Key: ${{API_KEY}}
    remove_request_headers: [Cookie, X-Debug]
    rewrite_origin: upstream
rules:
  - origins: ["{LOCAL}"]
""",
        API_KEY="key-1",
    )
    await client.get(
        "/",
        headers={
            "Origin": LOCAL,
            "Referer": f"{LOCAL}/page",
            "Cookie": "a=1",
            "X-Debug": "1",
            "X-Api-Key": "mine",
        },
    )
    seen = upstream.received[-1].headers
    assert seen["X-Api-Key"] == "key-1"
    assert "Cookie" not in seen
    assert "X-Debug" not in seen
    assert seen["Origin"] == upstream.url
    assert seen["Referer"] == upstream.url + "/"


async def test_rewrite_origin_none_removes_origin_and_referer(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(
        f"routes:\n  - path: /\n    upstream: {upstream.url}\n    rewrite_origin: none\n"
        f"rules:\n  - origins: ['{LOCAL}']\n"
    )
    response = await client.get("/", headers={"Origin": LOCAL, "Referer": f"{LOCAL}/"})
    assert response.headers["Access-Control-Allow-Origin"] == LOCAL
    assert "Origin" not in upstream.received[-1].headers
    assert "Referer" not in upstream.received[-1].headers


async def test_paths_are_rewritten_by_regex_after_the_prefix_is_stripped(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(
        f"""
routes:
  - path: /api
    upstream: {upstream.url}/v1
    path_rewrites:
      - match: "^/v1/users/(\\\\d+)$"
        replace: "/v2/people/\\\\1"
"""
    )
    assert loads(await (await client.get("/api/users/42?x=1")).read())["path"] == "/v2/people/42"
    assert upstream.received[-1].query == "x=1"
    assert loads(await (await client.get("/api/users/me")).read())["path"] == "/v1/users/me"


def test_values_come_from_a_dot_env_file_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("API_TOKEN=from-dotenv\nAPI_URL=https://api.example.com\n")
    config_file = tmp_path / "corsproxy.yaml"
    config_file.write_text(
        "routes:\n  - path: /\n    upstream: ${API_URL}\n    request_headers:\n"
        "      Authorization: Bearer ${API_TOKEN}\n"
    )
    config = load_config(config_file, {})
    assert config.routes[0].request_headers == (("Authorization", "Bearer from-dotenv"),)
    assert config.env_file == str(tmp_path / ".env")
    # The real environment wins over the file.
    assert (
        load_config(config_file, {"API_TOKEN": "from-env"}).routes[0].request_headers[0][1]
        == "Bearer from-env"
    )


async def test_a_valid_change_is_reloaded_and_an_invalid_one_keeps_the_last_good_config(
    upstream: Upstream,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config_file = tmp_path / "corsproxy.yaml"
    config_file.write_text(f"upstream: {upstream.url}\nrules:\n  - origins: ['http://localhost:1111']\n")
    client = await aiohttp_client(
        ProxyTestServer(create_app(load_config(config_file, {}), watch=config_file))
    )

    async def allowed_origin(origin: str) -> str | None:
        response = await client.get("/", headers={"Origin": origin})
        value: str | None = response.headers.get("Access-Control-Allow-Origin")
        return value

    async def eventually(origin: str, wanted: str | None) -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if await allowed_origin(origin) == wanted:
                return True
            await asyncio.sleep(0.1)
        return False

    assert await allowed_origin("http://localhost:1111") == "http://localhost:1111"
    config_file.write_text(f"upstream: {upstream.url}\nrules:\n  - origins: ['http://localhost:2222']\n")
    assert await eventually("http://localhost:2222", "http://localhost:2222")
    assert await allowed_origin("http://localhost:1111") is None

    caplog.set_level("ERROR", logger="corsproxy")
    config_file.write_text(
        f"upstream: {upstream.url}\nrules:\n  - origins: ['http://localhost:3333/']\n  - max_age: -1\n"
    )
    for _ in range(50):  # the watcher polls once a second
        if "config change rejected" in caplog.text:
            break
        await asyncio.sleep(0.1)
    assert "rules[0].origins[0]: 'http://localhost:3333/' ends with '/'" in caplog.text
    assert "(line 4)" in caplog.text
    assert await allowed_origin("http://localhost:2222") == "http://localhost:2222"
    # /health carries the refusal too, with every error and its line, until a good config loads.
    rejected = (await (await client.get("/__corsproxy/health")).json())["rejected_reload"]
    assert any("ends with '/'" in error and "(line 3)" in error for error in rejected["errors"])
    config_file.write_text(f"upstream: {upstream.url}\nrules:\n  - origins: ['http://localhost:4444']\n")
    assert await eventually("http://localhost:4444", "http://localhost:4444")
    assert (await (await client.get("/__corsproxy/health")).json())["rejected_reload"] is None


async def test_an_edit_to_the_env_file_is_reloaded_without_touching_the_yaml(
    upstream: Upstream,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    tmp_path: Path,
) -> None:
    config_file = tmp_path / "corsproxy.yaml"
    (tmp_path / ".env").write_text("TOKEN=first\n")
    config_file.write_text(
        f"routes:\n  - path: /\n    upstream: {upstream.url}\n    request_headers:\n"
        "      X-Token: ${TOKEN}\n"
    )
    client = await aiohttp_client(
        ProxyTestServer(create_app(load_config(config_file, {}), watch=config_file))
    )

    async def token_seen() -> str:
        await (await client.get("/")).read()
        return upstream.received[-1].headers["X-Token"]

    assert await token_seen() == "first"
    (tmp_path / ".env").write_text("TOKEN=second-and-longer\n")
    for _ in range(50):  # the watcher polls once a second
        if await token_seen() == "second-and-longer":
            break
        await asyncio.sleep(0.1)
    assert await token_seen() == "second-and-longer"


async def test_three_routes_reach_three_upstreams_one_of_them_over_https(
    aiohttp_server: ServerFactory, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))

    def named(name: str) -> web.Application:
        async def answer(request: web.Request) -> web.Response:
            return web.json_response({"upstream": name, "path": request.path})

        app = web.Application()
        app.router.add_get("/{tail:.*}", answer)
        return app

    users = await aiohttp_server(named("users"))
    billing = await aiohttp_server(named("billing"))
    secure = await aiohttp_server(named("secure"), ssl=server_context)
    client = await make_proxy(
        f"""
routes:
  - path: /users
    upstream: http://127.0.0.1:{users.port}
  - path: /billing
    upstream: http://127.0.0.1:{billing.port}/api
  - path: /secure
    upstream: https://127.0.0.1:{secure.port}
    tls:
      ca_file: {ca_file}
rules:
  - origins: ["{LOCAL}"]
"""
    )
    answers = {}
    for path in ("/users/1", "/billing/invoices", "/secure/data"):
        response = await client.get(path, headers={"Origin": LOCAL})
        assert response.headers["Access-Control-Allow-Origin"] == LOCAL
        answers[path] = loads(await response.read())
    assert answers == {
        "/users/1": {"upstream": "users", "path": "/1"},
        "/billing/invoices": {"upstream": "billing", "path": "/api/invoices"},
        "/secure/data": {"upstream": "secure", "path": "/data"},
    }


async def test_a_request_in_flight_during_a_reload_finishes_under_the_config_it_started_with(
    upstream: Upstream, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], tmp_path: Path
) -> None:
    config_file = tmp_path / "corsproxy.yaml"
    config_file.write_text(f"upstream: {upstream.url}\nrules:\n  - origins: ['http://localhost:1111']\n")
    client = await aiohttp_client(
        ProxyTestServer(create_app(load_config(config_file, {}), watch=config_file))
    )
    slow = asyncio.create_task(client.get("/slow?delay=2.5", headers={"Origin": "http://localhost:1111"}))
    await asyncio.sleep(0.3)
    config_file.write_text(f"upstream: {upstream.url}\nrules:\n  - origins: ['http://localhost:2222']\n")
    for _ in range(50):  # the watcher polls once a second
        fresh = await client.get("/", headers={"Origin": "http://localhost:2222"})
        if "Access-Control-Allow-Origin" in fresh.headers:
            break
        await asyncio.sleep(0.1)
    assert not slow.done(), "the reload happened while the slow request was still in flight"
    finished = await slow
    assert finished.status == 200
    assert await finished.text() == "late"
    assert finished.headers["Access-Control-Allow-Origin"] == "http://localhost:1111"
