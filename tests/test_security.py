"""Safe by default: who may use the proxy, where it may send requests, and its limits."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from tests.conftest import ProxyFactory, Upstream

LOCAL = "http://localhost:5173"


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send bytes no well-behaved client would send, and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and b"Connection: close" not in request:
                break
    return answer


def guarded(upstream: Upstream, extra_route: str = "", server: str = "") -> str:
    return f"""
{server}
routes:
  - path: /api
    upstream: {upstream.url}
    request_headers:
      X-Api-Key: ${{API_KEY}}
{extra_route}
  - path: /open
    upstream: {upstream.url}
rules:
  - origins: ["{LOCAL}"]
"""


@pytest.mark.parametrize(
    ("host", "status"),
    [
        pytest.param("localhost:8080", 200, id="localhost is served"),
        pytest.param("127.0.0.1:8080", 200, id="127.0.0.1 is served"),
        pytest.param("[::1]:8080", 200, id="the IPv6 loopback is served"),
        pytest.param("app.localhost:8080", 200, id="a name under localhost is served"),
        pytest.param("evil.example:8080", 403, id="a rebound name is refused"),
        pytest.param("localhost.evil.example", 403, id="a name merely starting with localhost is refused"),
    ],
)
async def test_the_host_header_must_name_the_proxy(
    upstream: Upstream, make_proxy: ProxyFactory, host: str, status: int
) -> None:
    client = await make_proxy(f"upstream: {upstream.url}\n")
    response = await client.get("/x", headers={"Host": host})
    assert response.status == status
    if status == 403:
        assert "server.allowed_hosts" in await response.text()
        assert upstream.received == []


async def test_allowed_hosts_extend_the_default_list(upstream: Upstream, make_proxy: ProxyFactory) -> None:
    client = await make_proxy(
        f"server:\n  allowed_hosts: [dev.myapp.test, '*.preview.test']\nupstream: {upstream.url}\n"
    )
    for host, status in [("dev.myapp.test", 200), ("pr-1.preview.test:80", 200), ("other.test", 403)]:
        assert (await client.get("/", headers={"Host": host})).status == status, host


async def test_the_inspector_and_health_are_behind_the_host_guard_too(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(f"upstream: {upstream.url}\n")
    response = await client.get("/__corsproxy/health", headers={"Host": "evil.example"})
    assert response.status == 403


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(b"//evil.example/steal", id="a scheme-relative path"),
        pytest.param(b"http://localhost/steal", id="an absolute-form target naming the proxy"),
        pytest.param(b"/@evil.example/steal", id="an at-sign trick"),
        pytest.param(b"/%2F%2Fevil.example", id="encoded slashes"),
    ],
)
async def test_no_request_target_sends_the_proxy_elsewhere(
    upstream: Upstream, make_proxy: ProxyFactory, target: bytes
) -> None:
    client = await make_proxy(f"upstream: {upstream.url}\n")
    assert client.port is not None
    answer = await asyncio.to_thread(
        raw_exchange,
        client.port,
        b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    # Whatever the target said, it was answered by the one configured upstream, on its host.
    # (Dot segments and foreign absolute-form hosts are refused: tests/test_hardening.py.)
    assert upstream.received[-1].headers["Host"] == f"127.0.0.1:{upstream.server.port}"


async def test_crlf_in_a_request_line_is_rejected_with_a_4xx(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(f"upstream: {upstream.url}\n")
    assert client.port is not None
    answer = await asyncio.to_thread(
        raw_exchange,
        client.port,
        b"GET /a\rX-Injected: 1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    assert answer.split(b" ", 2)[1] == b"400", answer[:100]
    assert upstream.received == []


async def test_a_disallowed_origin_cannot_spend_an_injected_key(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(guarded(upstream), API_KEY="k-123")
    refused = await client.post("/api/charge", headers={"Origin": "https://evil.example"}, data=b"x")
    assert refused.status == 403
    text = await refused.text()
    assert "injects credentials" in text
    assert "k-123" not in text
    assert upstream.received == []


async def test_a_cross_site_request_without_origin_cannot_spend_an_injected_key(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(guarded(upstream), API_KEY="k-123")
    refused = await client.get("/api/me", headers={"Sec-Fetch-Site": "cross-site"})
    assert refused.status == 403
    assert upstream.received == []


async def test_allowed_origins_and_plain_clients_still_reach_an_injecting_route(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(guarded(upstream), API_KEY="k-123")
    assert (await client.get("/api/me", headers={"Origin": LOCAL})).status == 200
    assert (await client.get("/api/me")).status == 200
    assert [seen.headers["X-Api-Key"] for seen in upstream.received] == ["k-123", "k-123"]


async def test_a_route_without_secrets_forwards_disallowed_origins_without_cors(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(guarded(upstream), API_KEY="k-123")
    response = await client.get("/open/x", headers={"Origin": "https://evil.example"})
    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_the_guard_can_be_turned_off_per_route(upstream: Upstream, make_proxy: ProxyFactory) -> None:
    client = await make_proxy(
        f"""
routes:
  - path: /api
    upstream: {upstream.url}
    request_headers: {{X-Api-Key: k}}
    refuse_disallowed_origins: false
rules:
  - origins: ["{LOCAL}"]
""",
    )
    assert (await client.get("/api/x", headers={"Origin": "https://evil.example"})).status == 200


async def test_a_body_over_max_body_size_is_a_413(upstream: Upstream, make_proxy: ProxyFactory) -> None:
    client = await make_proxy(
        f"routes:\n  - path: /\n    upstream: {upstream.url}\n    max_body_size: 1000\n"
    )
    too_big = await client.post("/upload", data=b"x" * 1001)
    fits = await client.post("/upload", data=b"x" * 1000)
    assert too_big.status == 413
    assert "max_body_size of 1000" in await too_big.text()
    assert fits.status == 200
    assert [seen.body_size for seen in upstream.received] == [1000]


async def test_an_oversized_header_is_a_4xx_naming_the_limit(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(f"server:\n  max_header_size: 1024\nupstream: {upstream.url}\n")
    response = await client.get("/", headers={"X-Big": "b" * 2000})
    # aiohttp's parser answers 400 (not 431) and names the limit.
    assert response.status == 400
    assert "1024" in await response.text()
    assert upstream.received == []


async def test_requests_over_max_upstream_connections_wait_then_get_a_503(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(
        f"""
server:
  max_upstream_connections: 2
routes:
  - path: /
    upstream: {upstream.url}
    connect_timeout: 0.3
rules:
  - origins: ["{LOCAL}"]
"""
    )
    slow = [asyncio.create_task(client.get("/slow?delay=1.5")) for _ in range(2)]
    await asyncio.sleep(0.2)
    extra = await client.get("/fast", headers={"Origin": LOCAL})
    assert extra.status == 503
    assert "max_upstream_connections: 2" in await extra.text()
    assert extra.headers["Access-Control-Allow-Origin"] == LOCAL
    assert [(await task).status for task in slow] == [200, 200]
    assert (await client.get("/after")).status == 200


async def test_injected_secrets_never_reach_the_log(
    upstream: Upstream, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="corsproxy")
    client = await make_proxy(guarded(upstream), API_KEY="k-s3cret")
    await client.get("/api/x", headers={"Origin": LOCAL})
    await client.get("/api/x", headers={"Origin": "https://evil.example"})
    assert caplog.records, "the proxy logs one line per request"
    assert "k-s3cret" not in caplog.text


async def test_an_ordinary_session_is_not_confused_by_the_guard(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(f"upstream: {upstream.url}\n")
    async with aiohttp.ClientSession() as session, session.get(client.make_url("/ok")) as response:
        assert response.status == 200
