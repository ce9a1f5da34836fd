"""Forwarding through the real proxy to a real upstream: methods, paths, headers, bodies."""

from __future__ import annotations

import gzip
import os
import resource
from collections.abc import AsyncIterator

import aiohttp
import pytest
from yarl import URL

from tests.conftest import GZIPPED_TEXT, ProxyFactory, Upstream, loads

LOCAL = "http://localhost:5173"


def single_route(upstream: Upstream, extra: str = "") -> str:
    return f"""
upstream: {upstream.url}
rules:
  - origins: ["{LOCAL}"]
    allow_methods: ["*"]
    allow_headers: [Content-Type, X-API-Key]
    expose_headers: [X-Request-Id]
{extra}"""


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"])
async def test_every_method_reaches_the_upstream_unchanged(
    upstream: Upstream, make_proxy: ProxyFactory, method: str
) -> None:
    client = await make_proxy(single_route(upstream))
    response = await client.request(method, "/items/1?a=1&b=%20x")
    assert response.status == 200
    seen = upstream.received[-1]
    assert (seen.method, seen.path, seen.query) == (method, "/items/1", "a=1&b=%20x")


async def test_the_path_and_query_arrive_percent_encoded_as_sent(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(single_route(upstream))
    raw = URL(str(client.make_url("/")) + "a%2Fb/c%20d?q=%2F&x", encoded=True)
    async with aiohttp.ClientSession() as session, session.get(raw) as response:
        assert response.status == 200
    assert upstream.received[-1].raw_path == "/a%2Fb/c%20d"
    assert upstream.received[-1].query == "q=%2F&x"
    assert loads(await (await client.get("/a%20b")).read())["path"] == "/a b"


async def test_routes_strip_their_prefix_and_the_longest_prefix_wins(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(f"""
routes:
  - path: /api
    upstream: {upstream.url}/v1
  - path: /api/v2
    upstream: {upstream.url}/two
  - path: /keep
    upstream: {upstream.url}/base
    strip_prefix: false
""")
    cases = {"/api/users": "/v1/users", "/api": "/v1", "/api/v2/x": "/two/x", "/keep/x": "/base/keep/x"}
    for sent, wanted in cases.items():
        assert loads(await (await client.get(sent)).read())["path"] == wanted, sent


async def test_an_unrouted_path_is_a_404_naming_the_path(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(f"routes:\n  - path: /api\n    upstream: {upstream.url}\n")
    response = await client.get("/apix/users", headers={"Origin": "http://localhost:3000"})
    assert response.status == 404
    assert "/apix/users" in await response.text()
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert upstream.received == []


async def test_host_is_the_upstreams_and_forwarded_headers_are_added(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(single_route(upstream))
    await client.get("/", headers={"X-Forwarded-For": "10.0.0.9"})
    seen = upstream.received[-1].headers
    assert seen["Host"] == f"127.0.0.1:{upstream.server.port}"
    assert seen["X-Forwarded-For"] == "10.0.0.9, 127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["X-Forwarded-Host"] == f"{client.server.host}:{client.server.port}"


async def test_the_proxy_invents_no_request_headers(upstream: Upstream, make_proxy: ProxyFactory) -> None:
    client = await make_proxy(single_route(upstream))
    await client.post(
        "/", data=b"raw", skip_auto_headers=["User-Agent", "Accept", "Accept-Encoding", "Content-Type"]
    )
    names = {name.lower() for name in upstream.received[-1].headers}
    assert not names & {"user-agent", "accept", "accept-encoding", "content-type"}


async def test_hop_by_hop_headers_are_dropped_both_ways(upstream: Upstream, make_proxy: ProxyFactory) -> None:
    client = await make_proxy(single_route(upstream))
    response = await client.get(
        "/hop",
        headers={
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "1",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic eA==",
            "Upgrade": "h2c",
            "X-Kept": "yes",
        },
    )
    sent = {name.lower() for name in upstream.received[-1].headers}
    assert not sent & {"x-drop-me", "keep-alive", "te", "proxy-authorization", "upgrade"}
    assert upstream.received[-1].headers["X-Kept"] == "yes"
    assert "X-Secret-Hop" not in response.headers
    assert "Keep-Alive" not in response.headers


async def test_content_encoding_passes_through_untouched(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(single_route(upstream))
    response = await client.get("/gzip", headers={"Accept-Encoding": "gzip"})
    body = await response.read()
    assert response.headers["Content-Encoding"] == "gzip"
    assert int(response.headers["Content-Length"]) == len(body)
    assert gzip.decompress(body) == GZIPPED_TEXT


async def test_status_codes_arrive_as_the_upstream_sent_them(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(single_route(upstream))
    for code in (201, 302, 404, 418, 500, 503):
        response = await client.get(f"/status/{code}", allow_redirects=False)
        assert response.status == code


def _rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def test_a_large_download_streams_with_bounded_memory(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    size = 256 * 1024 * 1024
    client = await make_proxy(single_route(upstream))
    before = _rss_mib()
    response = await client.get(f"/stream?size={size}")
    received = 0
    peak = before
    async for chunk in response.content.iter_chunked(1 << 20):
        received += len(chunk)
        peak = max(peak, _rss_mib())
    assert received == size
    # Upstream, proxy and client share this process: buffering any of it would add 256 MiB.
    assert peak - before < 64, f"RSS grew by {peak - before:.0f} MiB while streaming {size >> 20} MiB"


async def test_a_large_upload_streams_with_bounded_memory(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    size = 256 * 1024 * 1024
    chunk = b"u" * (1 << 20)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // len(chunk)):
            yield chunk

    client = await make_proxy(single_route(upstream))
    before = _rss_mib()
    response = await client.post("/upload", data=body())
    assert response.status == 200
    assert upstream.received[-1].body_size == size
    assert _rss_mib() - before < 64


async def test_an_upload_with_content_length_is_not_rechunked(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(single_route(upstream))
    await client.post("/", data=b"x" * 1000, headers={"Content-Type": "application/octet-stream"})
    seen = upstream.received[-1]
    assert seen.headers["Content-Length"] == "1000"
    assert "Transfer-Encoding" not in seen.headers
    assert seen.body_size == 1000


async def test_health_answers_json(upstream: Upstream, make_proxy: ProxyFactory) -> None:
    client = await make_proxy(single_route(upstream))
    response = await client.get("/__corsproxy/health")
    assert response.status == 200
    data = loads(await response.read())
    assert data["status"] == "ok"
    assert data["routes"] == [{"path": "/", "upstream": upstream.url, "strip_prefix": True}]
    assert data["rejected_reload"] is None
    assert upstream.received == []


async def test_cookies_from_the_upstream_are_not_kept_by_the_proxy(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(single_route(upstream))
    await client.get("/", headers={"Cookie": "a=1"})
    await client.get("/")
    assert upstream.received[0].headers["Cookie"] == "a=1"
    assert "Cookie" not in upstream.received[1].headers


async def test_an_ordinary_client_session_sees_a_normal_api(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(single_route(upstream))
    async with aiohttp.ClientSession() as session, session.get(client.make_url("/hello")) as response:
        assert (await response.json())["path"] == "/hello"
