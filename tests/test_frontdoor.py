"""The front door (frontdoor.py) serves preflights and body-less forwards itself and hands
everything else to aiohttp. These tests speak raw HTTP/1.1 to the real proxy, so they
control which side answers: the first request on a connection that carries a body hands
that connection to aiohttp, and everything after it on the same connection is aiohttp's."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import FRONT_DOOR, ProxyFactory, Upstream
from tests.raw_http import Answer, Connect


@pytest.fixture
def transport() -> str:
    """These tests are about the front door itself: they run on it alone."""
    return FRONT_DOOR


LOCAL = "http://localhost:5173"
ServerFactory = Callable[..., Awaitable[TestServer]]


def get(path: str, *headers: str, method: str = "GET", version: str = "1.1") -> str:
    lines = [f"{method} {path} HTTP/{version}", "Host: localhost", *headers]
    return "\r\n".join(lines) + "\r\n\r\n"


def preflight(path: str, *headers: str) -> str:
    return get(path, f"Origin: {LOCAL}", "Access-Control-Request-Method: PUT", *headers, method="OPTIONS")


# A request aiohttp must answer (it has a body): the handoff on that connection.
HAND_OFF = "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nhi"

RULES = f"""
rules:
  - origins: ["{LOCAL}"]
    allow_methods: [GET, PUT]
    allow_headers: [X-Trace]
"""


@pytest.fixture
async def proxy(upstream: Upstream, make_proxy: ProxyFactory) -> TestClient[Any, Any]:
    return await make_proxy(f"upstream: {upstream.url}\n{RULES}")


@pytest.fixture
def proxy_port(proxy: TestClient[Any, Any]) -> int:
    assert proxy.port is not None
    return proxy.port


async def front_door_counts(proxy: TestClient[Any, Any]) -> tuple[int, int]:
    """(requests served by the front door, connections handed to aiohttp), from /health."""
    counts = (await (await proxy.get("/__corsproxy/health")).json())["front_door"]
    return counts["served"], counts["handed_off"]


async def front_and_handed_off(
    proxy: TestClient[Any, Any], connect: Connect, request: str | bytes
) -> tuple[Answer, Answer]:
    """The same request answered by the front door, then on a handed-off connection by aiohttp."""
    front = await connect()
    await front.send(request)
    (by_front,) = await front.answers(1)
    handed = await connect()
    await handed.send(HAND_OFF, request)
    _, by_aiohttp = await handed.answers(2)
    # The health request is aiohttp's too (the proxy's own pages are), on its own connection.
    assert await front_door_counts(proxy) == (1, 2)
    return by_front, by_aiohttp


# -- the same answers on both sides ----------------------------------------------------


@pytest.mark.parametrize(
    ("request_text", "status"),
    [
        pytest.param(
            preflight("/items", "Access-Control-Request-Headers: x-trace"), 204, id="an allowed preflight"
        ),
        pytest.param(
            preflight("/items", "Access-Control-Request-Headers: x-secret"), 403, id="a refused preflight"
        ),
        pytest.param(get("/a/../b", f"Origin: {LOCAL}"), 400, id="a path with a dot segment"),
        pytest.param(
            get("/items").replace("Host: localhost", "Host: evil.example"), 403, id="a foreign Host"
        ),
        pytest.param(
            get("/items").replace("Host: localhost", "Host: localhost:x"), 400, id="an invalid Host"
        ),
        pytest.param(
            get("/items", f"Origin: {LOCAL}").replace("\r\n\r\n", "\r\nX-Obs: caf\udce9\r\n\r\n"),
            400,
            id="a header that is not UTF-8",
        ),
    ],
)
async def test_an_answer_the_proxy_makes_itself_is_the_same_from_the_front_door_as_from_aiohttp(
    proxy: TestClient[Any, Any],
    proxy_port: int,
    connect_to: Callable[[int], Connect],
    request_text: str,
    status: int,
    upstream: Upstream,
) -> None:
    by_front, by_aiohttp = await front_and_handed_off(
        proxy, connect_to(proxy_port), request_text.encode("utf-8", "surrogateescape")
    )
    assert by_front.status == status
    assert (by_front.status, by_front.header_set(), by_front.body) == (
        by_aiohttp.status,
        by_aiohttp.header_set(),
        by_aiohttp.body,
    )
    # Only the handing-off POST reached the upstream: preflights and refusals never do.
    assert [seen.method for seen in upstream.received] == ["POST"]


@pytest.mark.parametrize(
    "request_text",
    [
        pytest.param(get("/items?page=2", f"Origin: {LOCAL}", "Cookie: a=1"), id="an allowed GET"),
        pytest.param(get("/items", "Origin: https://evil.example"), id="a GET from an origin no rule allows"),
        pytest.param(get("/items"), id="a GET without Origin"),
        pytest.param(get("/own-cors", f"Origin: {LOCAL}"), id="an upstream with its own CORS headers"),
        pytest.param(get("/status/404", f"Origin: {LOCAL}"), id="an upstream 404"),
        pytest.param(get("/status/204", f"Origin: {LOCAL}"), id="an upstream 204"),
        pytest.param(get("/items", f"Origin: {LOCAL}", method="DELETE"), id="a DELETE"),
        pytest.param(get("/items", f"Origin: {LOCAL}", method="PUT"), id="a PUT without a body"),
        pytest.param(get("/items", f"Origin: {LOCAL} ", "X-Trace: 1 "), id="values with trailing spaces"),
    ],
)
async def test_a_forwarded_request_gets_the_same_answer_and_sends_the_same_headers_upstream(
    proxy: TestClient[Any, Any],
    proxy_port: int,
    connect_to: Callable[[int], Connect],
    upstream: Upstream,
    request_text: str,
) -> None:
    by_front, by_aiohttp = await front_and_handed_off(proxy, connect_to(proxy_port), request_text)
    assert (by_front.status, by_front.header_set()) == (by_aiohttp.status, by_aiohttp.header_set())
    if by_front.get("Content-Type") == "application/json; charset=utf-8":
        # The echo shows what the upstream saw: the same headers from both clients.
        assert json.loads(by_front.body) == json.loads(by_aiohttp.body)
    else:
        assert by_front.body == by_aiohttp.body
    first, handing_off, second = upstream.received
    assert handing_off.method == "POST"
    assert first.header_lines == second.header_lines


# -- connections ------------------------------------------------------------------------


async def test_requests_on_one_connection_share_one_kept_alive_upstream_connection(
    aiohttp_server: ServerFactory, make_proxy: ProxyFactory, connect_to: Callable[[int], Connect]
) -> None:
    peers: list[int] = []

    async def note_peer(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername")[1] if request.transport else 0)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", note_peer)
    server = await aiohttp_server(app)
    client = await make_proxy(f"upstream: {server.make_url('')}\n")
    assert client.port is not None
    connection = await connect_to(client.port)()
    for _ in range(5):
        await connection.send(get("/ping"))
    answers = await connection.answers(5)
    assert [answer.body for answer in answers] == [b"ok"] * 5
    assert len(peers) == 5
    assert len(set(peers)) == 1


async def test_pipelined_requests_are_answered_in_order(
    proxy: TestClient[Any, Any], proxy_port: int, connect_to: Callable[[int], Connect]
) -> None:
    connection = await connect_to(proxy_port)()
    await connection.send(get("/first") + preflight("/second") + get("/third") + HAND_OFF + get("/fifth"))
    answers = await connection.answers(5)
    assert [answer.status for answer in answers] == [200, 204, 200, 200, 200]
    paths = [json.loads(answer.body)["path"] for answer in answers if answer.status == 200]
    assert paths == ["/first", "/third", "/echo", "/fifth"]
    # Three by the front door; from the POST on, the connection was aiohttp's.
    assert await front_door_counts(proxy) == (3, 2)


async def test_connection_close_from_the_client_closes_after_the_answer(
    proxy_port: int, connect_to: Callable[[int], Connect]
) -> None:
    connection = await connect_to(proxy_port)()
    await connection.send(get("/items", "Connection: close"))
    (answer,) = await connection.answers(1)
    assert answer.status == 200
    assert answer.get("Connection") == "close"
    assert await connection.closed_by_proxy()


async def test_an_http_1_0_request_is_answered_by_aiohttp(
    proxy: TestClient[Any, Any], proxy_port: int, connect_to: Callable[[int], Connect]
) -> None:
    connection = await connect_to(proxy_port)()
    await connection.send(get("/items", f"Origin: {LOCAL}", version="1.0"))
    (answer,) = await connection.answers(1)
    assert answer.status == 200
    assert answer.get("Access-Control-Allow-Origin") == LOCAL
    assert await front_door_counts(proxy) == (0, 2)


async def test_a_head_over_the_size_limit_still_gets_aiohttps_400_naming_the_limit(
    upstream: Upstream, make_proxy: ProxyFactory, connect_to: Callable[[int], Connect]
) -> None:
    client = await make_proxy(f"server:\n  max_header_size: 1024\nupstream: {upstream.url}\n")
    assert client.port is not None
    connection = await connect_to(client.port)()
    await connection.send(get("/items", "X-Big: " + "a" * 2000))
    (answer,) = await connection.answers(1)
    assert answer.status == 400
    assert b"1024" in answer.body
    assert upstream.received == []


# -- upstream answers the lean client must frame right ----------------------------------


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def scripted_upstream() -> AsyncIterator[Callable[[Script], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await script(reader, writer)
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


async def test_an_interim_103_answer_is_skipped_and_the_final_one_forwarded(
    scripted_upstream: Callable[[Script], Awaitable[str]],
    make_proxy: ProxyFactory,
    connect_to: Callable[[int], Connect],
) -> None:
    async def early_hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
        await writer.drain()
        await reader.read()

    client = await make_proxy(f"upstream: {await scripted_upstream(early_hints)}\n")
    assert client.port is not None
    connection = await connect_to(client.port)()
    await connection.send(get("/", f"Origin: {LOCAL}"))
    (answer,) = await connection.answers(1)
    assert (answer.status, bytes(answer.body)) == (200, b"final")


async def test_an_answer_ended_by_closing_the_connection_reaches_the_client_whole(
    scripted_upstream: Callable[[Script], Awaitable[str]],
    make_proxy: ProxyFactory,
    connect_to: Callable[[int], Connect],
) -> None:
    # RFC 9112 section 6.3: no Content-Length, no chunked coding: the body ends at close.
    async def close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for part in (b"one ", b"two ", b"three"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)

    client = await make_proxy(f"upstream: {await scripted_upstream(close_delimited)}\n")
    assert client.port is not None
    connection = await connect_to(client.port)()
    await connection.send(get("/", f"Origin: {LOCAL}"), get("/again", f"Origin: {LOCAL}"))
    first, second = await connection.answers(2)
    assert first.get("Transfer-Encoding") == "chunked"
    assert (bytes(first.body), bytes(second.body)) == (b"one two three", b"one two three")


async def test_a_client_that_stops_reading_stops_the_proxy_reading_the_upstream(
    aiohttp_server: ServerFactory, make_proxy: ProxyFactory, connect_to: Callable[[int], Connect]
) -> None:
    total, piece = 64 * 1024 * 1024, b"x" * 65536
    written = 0

    async def big(request: web.Request) -> web.StreamResponse:
        nonlocal written
        response = web.StreamResponse()
        response.content_length = total
        await response.prepare(request)
        while written < total:
            await response.write(piece)  # waits while the proxy does not read
            written += len(piece)
        return response

    app = web.Application()
    app.router.add_get("/big", big)
    server = await aiohttp_server(app)
    client = await make_proxy(f"upstream: {server.make_url('')}\n")
    assert client.port is not None
    connection = await connect_to(client.port)()
    await connection.send(get("/big"))
    await asyncio.sleep(1.0)
    # Socket buffers on the way hold a few MiB at most; the rest waits at the upstream.
    stalled_at = written
    assert stalled_at < 24 * 1024 * 1024, f"the upstream wrote {stalled_at} bytes to a stalled client"
    (answer,) = await connection.answers(1)
    assert len(answer.body) == total
    assert written == total


# -- what a misbehaving client or upstream cannot do -------------------------------------


async def test_bytes_an_upstream_sends_after_its_answer_never_reach_the_client(
    scripted_upstream: Callable[[Script], Awaitable[str]],
    make_proxy: ProxyFactory,
    connect_to: Callable[[int], Connect],
) -> None:
    async def answer_and_more(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # One answer to one request, and a second one nobody asked for.
        stray = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"
        with contextlib.suppress(asyncio.IncompleteReadError):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi" + stray)
                await writer.drain()

    client = await make_proxy(f"upstream: {await scripted_upstream(answer_and_more)}\n")
    assert client.port is not None
    connection = await connect_to(client.port)()
    await connection.send(get("/a"))
    await asyncio.sleep(0.2)
    await connection.send(get("/b"))
    first, second = await connection.answers(2)
    assert (bytes(first.body), bytes(second.body)) == (b"hi", b"hi")
    await asyncio.sleep(0.2)
    assert connection.reader.at_eof() is False
    assert len(connection.parsed.answers) == 2


async def test_a_read_timeout_is_a_504_and_the_request_is_sent_only_once(
    upstream: Upstream, make_proxy: ProxyFactory, connect_to: Callable[[int], Connect]
) -> None:
    client = await make_proxy(f"routes:\n  - path: /\n    upstream: {upstream.url}\n    read_timeout: 0.5\n")
    assert client.port is not None
    warm = await connect_to(client.port)()
    # Several kept-alive upstream connections, each of which a retry could pick.
    for index in range(4):
        await warm.send(get(f"/warm{index}"))
    await warm.answers(4)
    connection = await connect_to(client.port)()
    await connection.send(get("/slow?delay=3"))
    (answer,) = await connection.answers(1)
    assert answer.status == 504
    assert [seen.path for seen in upstream.received].count("/slow") == 1


async def test_a_slow_reader_of_pipelined_downloads_gets_every_answer(
    aiohttp_server: ServerFactory, make_proxy: ProxyFactory, connect_to: Callable[[int], Connect]
) -> None:
    body = b"x" * (256 * 1024)

    async def download(request: web.Request) -> web.Response:
        return web.Response(body=body)

    app = web.Application()
    app.router.add_get("/{tail:.*}", download)
    server = await aiohttp_server(app)
    client = await make_proxy(f"upstream: {server.make_url('')}\n")
    assert client.port is not None
    connection = await connect_to(client.port)()
    count = 40
    await connection.send("".join(get(f"/file{index}") for index in range(count)))
    answers: list[Answer] = []
    async with asyncio.timeout(30):
        while len(connection.parsed.answers) < count:
            data = await connection.reader.read(32 * 1024)
            assert data, f"closed after {len(connection.parsed.answers)} answers"
            connection.parsed.parser.feed_data(data)
            await asyncio.sleep(0.001)  # slower than the proxy: its writes back up
        answers = connection.parsed.answers
    assert [len(answer.body) for answer in answers] == [len(body)] * count


async def test_a_client_that_sends_without_reading_is_not_read_without_bound(
    proxy: TestClient[Any, Any], proxy_port: int, connect_to: Callable[[int], Connect]
) -> None:
    connection = await connect_to(proxy_port)()
    request = preflight("/items").encode()
    sent = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            while sent < 64 * 1024 * 1024:
                connection.writer.write(request * 1000)
                await connection.writer.drain()  # blocks once the proxy stops reading
                sent += len(request) * 1000
    assert sent < 64 * 1024 * 1024, "the proxy kept reading from a client that never reads"
    doors = proxy.server.runner.server.doors  # type: ignore[union-attr]
    assert all(len(door.buffer) <= 1024 * 1024 for door in doors)


@pytest.mark.parametrize(
    "raw_request",
    [
        pytest.param(b"GET /items HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n", id="two Hosts"),
        pytest.param(b"GET /items HTTP/1.1\nHost: localhost\n\n", id="bare LF line ends"),
    ],
)
async def test_a_head_aiohttp_would_refuse_is_refused_with_a_400(
    proxy_port: int, connect_to: Callable[[int], Connect], upstream: Upstream, raw_request: bytes
) -> None:
    connection = await connect_to(proxy_port)()
    await connection.send(raw_request)
    (answer,) = await connection.answers(1)
    assert answer.status == 400
    assert upstream.received == []
