"""When the upstream fails: a 502/504 the browser can read, and the proxy keeps serving."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.conftest import ProxyFactory, Upstream

LOCAL = "http://localhost:5173"


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config(upstream_url: str, extra: str = "") -> str:
    return f"""
routes:
  - path: /
    upstream: {upstream_url}
{extra}
rules:
  - origins: ["{LOCAL}"]
    allow_credentials: true
"""


async def test_an_unreachable_upstream_is_a_502_with_cors_headers(make_proxy: ProxyFactory) -> None:
    port = closed_port()
    client = await make_proxy(config(f"http://127.0.0.1:{port}"))
    response = await client.get("/api", headers={"Origin": LOCAL})
    assert response.status == 502
    body = await response.text()
    assert f"cannot connect to upstream http://127.0.0.1:{port}" in body
    assert response.headers["Access-Control-Allow-Origin"] == LOCAL
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert response.headers["Vary"] == "Origin"


async def test_a_slow_upstream_is_a_504_with_cors_headers(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(config(upstream.url, "    read_timeout: 0.3"))
    response = await client.get("/slow?delay=5", headers={"Origin": LOCAL})
    assert response.status == 504
    assert "timed out" in await response.text()
    assert response.headers["Access-Control-Allow-Origin"] == LOCAL


async def test_the_proxy_keeps_serving_after_upstream_failures(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(
        f"""
routes:
  - path: /down
    upstream: http://127.0.0.1:{closed_port()}
  - path: /
    upstream: {upstream.url}
rules:
  - origins: ["{LOCAL}"]
"""
    )
    statuses = [(await client.get("/down/x")).status for _ in range(20)]
    assert statuses == [502] * 20
    assert (await client.get("/up")).status == 200


@pytest.fixture
async def truncating_upstream() -> AsyncIterator[str]:
    """An upstream that promises 1 MB and hangs up after 1 KB."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\nContent-Type: text/plain\r\n\r\n")
        writer.write(b"x" * 1024)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.close()
    await server.wait_closed()


async def test_an_upstream_that_breaks_mid_body_gives_a_visibly_truncated_response(
    truncating_upstream: str, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(config(truncating_upstream))
    response = await client.get("/big", headers={"Origin": LOCAL})
    assert response.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert (await client.get("/__corsproxy/health")).status == 200
