"""Fault injection: real misbehaving upstreams speaking raw bytes, the real proxy in front,
a real client. In every case the proxy answers what it can (502, 504, or a visibly
truncated body), keeps serving, and gives back every connection and task it took."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from corsproxy import create_app
from corsproxy.server.frontdoor import FrontDoorServer
from corsproxy.state import STATE, ProxyState
from tests.conftest import FRONT_DOOR, ProxyTestServer, Upstream, config_from_yaml

LOCAL = "http://localhost:5173"
SETTLE_SECONDS = 3.0
READ_TIMEOUT = 0.5

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# -- a raw upstream --------------------------------------------------------------------


@dataclass
class RawUpstream:
    """An upstream written with asyncio streams, so it can send exactly the wrong bytes.
    It counts the connections it saw open and closed, and the body bytes it received."""

    behaviour: Behaviour
    server: asyncio.Server | None = None
    opened: int = 0
    closed: int = 0
    body_received: int = 0
    handlers: set[asyncio.Task[None]] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.opened += 1
        self.changed.set()
        try:
            await self.behaviour(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Torn down mid-write: a graceful close would wait to flush to a peer that
            # may never read.
            writer.transport.abort()
            raise
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()
            self.closed += 1
            self.changed.set()
            self.handlers.discard(task)

    async def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(SETTLE_SECONDS):
                while not condition():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"the upstream never {what} (opened {self.opened}, closed {self.closed}, "
                f"body bytes {self.body_received})"
            ) from None


RawUpstreamFactory = Callable[[Behaviour], Awaitable[RawUpstream]]


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstreamFactory]:
    started: list[RawUpstream] = []

    async def start(behaviour: Behaviour) -> RawUpstream:
        upstream = RawUpstream(behaviour)
        upstream.server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        assert upstream.server is not None
        upstream.server.close()
        for task in list(upstream.handlers):
            task.cancel()
        await asyncio.gather(*upstream.handlers, return_exceptions=True)
        # Waits for every connection to be gone, hence after the handlers.
        await upstream.server.wait_closed()


async def read_request_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST instead of a FIN: SO_LINGER on with a zero timeout."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def read_until_closed(reader: asyncio.StreamReader) -> None:
    """Wait for the proxy to hang up: the proof that it gave up on this request."""
    while await reader.read(65536):
        pass


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the proxy, and what "nothing leaked" means ----------------------------------------


@dataclass(frozen=True)
class Resources:
    acquired: int
    tasks: int
    fds: int


@dataclass
class Harness:
    client: TestClient[Any, Any]
    transport: str

    @property
    def state(self) -> ProxyState:
        return cast(ProxyState, self.client.app[STATE])

    def resources(self) -> Resources:
        connector = self.state.session.connector
        assert connector is not None
        runner = self.client.server.runner
        assert runner is not None
        assert runner.server is not None
        lean = cast(FrontDoorServer, runner.server).pool
        return Resources(
            acquired=len(connector._acquired) + lean.in_use,
            tasks=len(asyncio.all_tasks()),
            fds=len(os.listdir("/proc/self/fd")),
        )

    async def baseline(self) -> Resources:
        """Resources once both routes and the client connection are warm."""
        await self.assert_still_serving()
        return self.resources()

    async def assert_still_serving(self) -> None:
        # A request the front door serves: the proxy's own pages would hand this client
        # connection to aiohttp, and every request after it would miss the front door.
        healthy = await self.client.get("/healthy/ping", headers={"Origin": LOCAL})
        assert healthy.status == 200
        assert healthy.headers["Access-Control-Allow-Origin"] == LOCAL
        await healthy.read()

    async def assert_settled(self, baseline: Resources) -> None:
        """Every upstream connection released, no task and no socket left behind."""
        deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
        while True:
            now = self.resources()
            if now.acquired == 0 and now.tasks <= baseline.tasks and now.fds <= baseline.fds:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"resources did not return to {baseline} after the fault: {now}")
            await asyncio.sleep(0.02)

    def assert_recorded_as_client_disconnect(self, path: str) -> None:
        """The log line and the inspector must blame the client, not the upstream."""
        recorded = [item for item in self.state.exchanges.recent() if item.path == path]
        assert len(recorded) == 1
        assert recorded[0].error is not None
        assert "client disconnected" in recorded[0].error

    async def assert_recovered(self, baseline: Resources) -> None:
        await self.assert_still_serving()
        await self.assert_settled(baseline)

    def served_by_front_door(self) -> int:
        return self.state.front_door.served


class HarnessFactory(Protocol):
    async def __call__(self, faulty_url: str, *, handler_cancellation: bool = True) -> Harness: ...


@pytest.fixture
def harness(
    upstream: Upstream,
    transport: str,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> HarnessFactory:
    """The proxy with a faulty route on / and a healthy one on /healthy, on the test's
    transport (every fault runs through the front door and through aiohttp)."""

    async def start(faulty_url: str, *, handler_cancellation: bool = True) -> Harness:
        yaml_text = f"""
routes:
  - path: /healthy
    upstream: {upstream.url}
  - path: /
    upstream: {faulty_url}
    read_timeout: {READ_TIMEOUT}
rules:
  - origins: ["{LOCAL}"]
"""
        server = ProxyTestServer(
            create_app(config_from_yaml(yaml_text)),
            handler_cancellation=handler_cancellation,
            front_door=transport == FRONT_DOOR,
        )
        return Harness(await aiohttp_client(server, auto_decompress=False), transport)

    return start


CANCELLATION = pytest.mark.parametrize(
    "handler_cancellation",
    [
        pytest.param(False, id="as web.run_app runs the proxy"),
        pytest.param(True, id="as the aiohttp test server runs the proxy"),
    ],
)


# -- the fault matrix: what the upstream does, what the client gets ----------------------

DECLARED = 1_000_000
SENT = 64 * 1024


async def half_a_status_line_then_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    writer.write(b"HTTP/1.1 20")
    await writer.drain()
    await asyncio.sleep(0.05)
    reset(writer)


async def half_the_headers_then_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/pl")
    await writer.drain()
    await asyncio.sleep(0.05)
    reset(writer)


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    await read_until_closed(reader)


def send_garbage(garbage: bytes) -> Behaviour:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(garbage)
        await writer.drain()
        await read_until_closed(reader)

    return behaviour


async def part_of_the_body_then_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {DECLARED}\r\n\r\n".encode())
    writer.write(b"x" * SENT)
    await writer.drain()
    # Let the proxy read and forward what was sent before the RST discards it.
    await asyncio.sleep(0.2)
    reset(writer)


async def some_chunks_then_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        writer.write(b"400\r\n" + b"y" * 0x400 + b"\r\n")
    await writer.drain()
    await asyncio.sleep(0.2)
    reset(writer)


async def some_chunks_then_fin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    await writer.drain()


TRICKLED = b"0123456789"


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(TRICKLED)}\r\nConnection: close\r\n\r\n".encode()
    for start in range(0, len(head), 12):
        writer.write(head[start : start + 12])
        await writer.drain()
        await asyncio.sleep(0.1)
    for byte in TRICKLED:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.1)


# How the client must find the body: the proxy's own answer naming the cause, the
# upstream's body whole, or visibly cut short (never complete-looking).
Says = str
WHOLE = "whole"
TRUNCATED = "truncated"


@dataclass(frozen=True)
class Fault:
    behaviour: Behaviour | None  # None: nothing listens on the upstream's port
    status: int
    body: str  # Says(text it contains) | WHOLE | TRUNCATED
    # The proxy must hang up on an upstream that sent no usable answer.
    hung_up_on: bool = False


FAULTS = [
    pytest.param(Fault(None, 502, "cannot connect"), id="an upstream refusing connections is a 502"),
    pytest.param(
        Fault(half_a_status_line_then_reset, 502, "failed"),
        id="an upstream resetting mid status line is a 502",
    ),
    pytest.param(
        Fault(half_the_headers_then_reset, 502, "failed"), id="an upstream resetting mid headers is a 502"
    ),
    pytest.param(
        Fault(never_answer, 504, "timed out", hung_up_on=True),
        id="an upstream hanging before its headers is a 504 and is hung up on",
    ),
    pytest.param(
        Fault(send_garbage(b"HELLO WORLD\r\n\r\n"), 502, "failed", hung_up_on=True),
        id="a status line that is not HTTP is a 502",
    ),
    pytest.param(
        Fault(send_garbage(b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n"), 502, "failed", hung_up_on=True),
        id="a status code that is not a number is a 502",
    ),
    pytest.param(
        Fault(
            send_garbage(b"HTTP/1.1 200 OK\r\nContent-Length: banana\r\n\r\nhi"),
            502,
            "failed",
            hung_up_on=True,
        ),
        id="a non-numeric Content-Length is a 502",
    ),
    pytest.param(
        Fault(send_garbage(b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n"), 502, "failed", hung_up_on=True),
        id="a header line without a colon is a 502",
    ),
    pytest.param(
        Fault(send_garbage(b"\x00\xff\xfe binary noise\r\n\r\n"), 502, "failed", hung_up_on=True),
        id="binary noise is a 502",
    ),
    pytest.param(
        Fault(part_of_the_body_then_reset, 200, TRUNCATED),
        id="an upstream resetting mid body gives a visibly truncated body",
    ),
    pytest.param(
        Fault(some_chunks_then_reset, 200, TRUNCATED),
        id="an upstream resetting mid chunked body gives a visibly truncated body",
    ),
    pytest.param(
        Fault(some_chunks_then_fin, 200, TRUNCATED),
        id="an upstream closing cleanly mid chunked body gives a visibly truncated body",
    ),
    pytest.param(
        Fault(trickle, 200, WHOLE), id="an upstream trickling within the read timeout delivers the whole body"
    ),
]


async def body_verdict(response: aiohttp.ClientResponse) -> str:
    """What the client can tell of the body: whole (ending as declared) or truncated."""
    try:
        body = await response.read()
    except aiohttp.ClientPayloadError:
        return TRUNCATED
    if response.content_length is not None and len(body) < response.content_length:
        return TRUNCATED
    return WHOLE if body == TRICKLED else body.decode("utf-8", "replace")


@pytest.mark.parametrize("fault", FAULTS)
async def test_the_proxy_answers_what_it_can_and_gives_back_what_it_took(
    harness: HarnessFactory, raw_upstream: RawUpstreamFactory, transport: str, fault: Fault
) -> None:
    faulty = None if fault.behaviour is None else await raw_upstream(fault.behaviour)
    proxy = await harness(f"http://127.0.0.1:{closed_port()}" if faulty is None else faulty.url)
    baseline = await proxy.baseline()
    served_before = proxy.served_by_front_door()
    response = await proxy.client.get("/api", headers={"Origin": LOCAL})
    assert response.status == fault.status
    # CORS headers on every status, the proxy's own 502/504 included: the page can read it.
    assert response.headers["Access-Control-Allow-Origin"] == LOCAL
    verdict = await body_verdict(response)
    if fault.body in (WHOLE, TRUNCATED):
        assert verdict == fault.body
    else:
        assert fault.body in verdict
    # The faulty request went through the transport under test.
    assert proxy.served_by_front_door() - served_before == (1 if transport == FRONT_DOOR else 0)
    if faulty is not None and fault.hung_up_on:
        await faulty.wait_until(lambda: faulty.closed == 1, "saw its connection closed")
    await proxy.assert_recovered(baseline)


# -- keep-alive connections the upstream drops -------------------------------------------


def keep_alive_then_close(idle: float) -> Behaviour:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(idle)

    return behaviour


async def test_an_idle_keep_alive_connection_closed_by_the_upstream_is_not_reused(
    harness: HarnessFactory, raw_upstream: RawUpstreamFactory
) -> None:
    faulty = await raw_upstream(keep_alive_then_close(idle=0.05))
    proxy = await harness(faulty.url)
    baseline = await proxy.baseline()
    statuses = []
    for _ in range(3):
        response = await proxy.client.get("/api", headers={"Origin": LOCAL})
        await response.read()
        statuses.append(response.status)
        await faulty.wait_until(lambda: faulty.closed == faulty.opened, "closed its idle connection")
    assert statuses == [200, 200, 200]
    assert faulty.opened == 3
    await proxy.assert_recovered(baseline)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_a_keep_alive_connection_closed_right_after_its_response_does_not_fail_the_next_request(
    harness: HarnessFactory, raw_upstream: RawUpstreamFactory, method: str
) -> None:
    # The race a pool cannot avoid: the next request goes out on the connection as the
    # upstream's FIN arrives. RFC 9112 section 9.3.1 lets idempotent requests be retried.
    faulty = await raw_upstream(keep_alive_then_close(idle=0))
    proxy = await harness(faulty.url)
    baseline = await proxy.baseline()
    statuses = []
    for _ in range(3):
        response = await proxy.client.request(method, "/api", headers={"Origin": LOCAL})
        await response.read()
        statuses.append(response.status)
    assert statuses == [200, 200, 200]
    await proxy.assert_recovered(baseline)


# -- clients that go away ----------------------------------------------------------------


@CANCELLATION
async def test_a_client_disconnecting_mid_upload_cancels_the_upstream_request(
    harness: HarnessFactory, raw_upstream: RawUpstreamFactory, handler_cancellation: bool
) -> None:
    declared = 1_000_000

    async def read_the_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        while chunk := await reader.read(65536):
            faulty.body_received += len(chunk)
            faulty.changed.set()

    faulty = await raw_upstream(read_the_body)
    proxy = await harness(faulty.url, handler_cancellation=handler_cancellation)
    baseline = await proxy.baseline()
    half_sent = asyncio.Event()

    async def half_the_body() -> AsyncIterator[bytes]:
        yield b"u" * (declared // 2)
        half_sent.set()
        await asyncio.Event().wait()

    upload = asyncio.create_task(
        proxy.client.post(
            "/upload",
            data=half_the_body(),
            headers={"Origin": LOCAL, "Content-Length": str(declared)},
        )
    )
    await faulty.wait_until(lambda: faulty.body_received >= declared // 2, "received half the body")
    assert half_sent.is_set()
    upload.cancel()
    with suppress(asyncio.CancelledError):
        await upload
    await faulty.wait_until(lambda: faulty.closed == 1, "saw its connection closed")
    assert faulty.body_received == declared // 2
    await proxy.assert_recovered(baseline)
    if not handler_cancellation:
        proxy.assert_recorded_as_client_disconnect("/upload")


@CANCELLATION
async def test_a_client_disconnecting_mid_download_cancels_the_upstream_response(
    harness: HarnessFactory, raw_upstream: RawUpstreamFactory, handler_cancellation: bool
) -> None:
    sent = 0

    async def endless_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n")
        chunk = b"d" * 65536
        while True:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)

    faulty = await raw_upstream(endless_body)
    proxy = await harness(faulty.url, handler_cancellation=handler_cancellation)
    baseline = await proxy.baseline()
    response = await proxy.client.get("/download", headers={"Origin": LOCAL})
    assert response.status == 200
    assert len(await response.content.readexactly(100_000)) == 100_000
    response.close()
    await faulty.wait_until(lambda: faulty.closed == 1, "saw its connection closed")
    sent_at_close = sent
    await asyncio.sleep(0.1)
    assert sent == sent_at_close
    await proxy.assert_recovered(baseline)
    if not handler_cancellation:
        proxy.assert_recorded_as_client_disconnect("/download")
