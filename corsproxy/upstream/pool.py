"""A lean keep-alive HTTP/1.1 client for the front door's forwarding (frontdoor.py).

aiohttp's client costs a third of a small proxied GET in request objects, automatic
headers, timers and stream readers. The front door forwards body-less requests to
upstreams here instead (http or https): each upstream (host, port, TLS) keeps a stack of idle
connections, responses are parsed by httptools, and each body chunk is handed to the
caller's sink as it arrives. Flow control runs both ways: the caller pauses the
upstream connection while its client's socket is full, and the read timeout does not
run meanwhile. Request bodies and WebSockets stay with aiohttp's client (upstream.py).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools
from multidict import CIMultiDict

# Idle upstream connections are closed after this long, as aiohttp's client does.
IDLE_TIMEOUT = 15.0
# RFC 9110 section 9.2.2: idempotent methods may be retried automatically. Only these
# are re-sent when a kept-alive connection turns out to have been closed by the upstream.
RETRY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Bytes read from an upstream at a time: body chunks reach the client in pieces of at
# most this size, equal-sized buffers that keep memory flat (as upstream.py's READ_CHUNK).
READ_SIZE = 64 * 1024
# Body bytes that may wait for the caller to attach its sink before reading pauses.
PENDING_LIMIT = 256 * 1024

# (host, port, TLS context for https or None for plain http)
Address = tuple[str, int, ssl.SSLContext | None]


class UpstreamBroke(Exception):
    """The upstream connection failed. ``timed_out`` for the read timeout; ``before_response``
    when no byte of an answer had arrived (a stale kept-alive connection looks like this)."""

    def __init__(self, message: str, *, timed_out: bool = False, before_response: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out
        self.before_response = before_response


@dataclass(slots=True)
class ResponseHead:
    status: int
    reason: str
    headers: CIMultiDict[str]


BodySink = Callable[[bytes], None]


class UpstreamConnection(asyncio.BufferedProtocol):
    """One connection to an upstream, carrying one exchange at a time. Reads land in the
    pool's one buffer of READ_SIZE, so a large body never costs a large allocation."""

    def __init__(self, pool: ConnectionPool, address: Address) -> None:
        self.pool = pool
        self.address = address
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        # As lenient as aiohttp's client, which takes a bare LF as a line end.
        self.parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self.closed = False
        self.idle_since = 0.0
        self.head: asyncio.Future[ResponseHead] | None = None
        self.done: asyncio.Future[None] | None = None
        self._sink: BodySink | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._reason = b""
        self._header_lines: list[tuple[bytes, bytes]] = []
        self._status = 0
        self._until_close = False
        self._keep_alive = False
        self._complete = False
        self._received = False
        # Reading stops while the client cannot take more, or while body bytes wait for a sink.
        self._held_by_client = False
        self._held_for_sink = False
        self._paused = False
        self._read_timeout: float | None = None
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def start(self, request: bytes, read_timeout: float | None) -> None:
        """Send one request head; ``head`` resolves with the answer's head, ``done`` when
        its body is complete."""
        loop = self.loop
        self.head = loop.create_future()
        self.done = loop.create_future()
        self._sink = None
        self._pending = []
        self._pending_size = 0
        self._complete = False
        self._received = False
        self._read_timeout = read_timeout
        self._last_read = loop.time()
        if read_timeout is not None:
            self._timer = loop.call_at(self._last_read + read_timeout, self._check_read_timeout)
        assert self.transport is not None
        self.transport.write(request)

    def take_pending(self) -> list[bytes]:
        """The body chunks that arrived before a sink was attached."""
        pending, self._pending, self._pending_size = self._pending, [], 0
        return pending

    def attach(self, sink: BodySink) -> None:
        """Where body chunks go from now on; any not taken yet are passed first."""
        for chunk in self.take_pending():
            sink(chunk)
        self._sink = sink
        if self._complete:
            self._finish()
        elif self._held_for_sink:
            self._held_for_sink = False
            self._regulate_reading()

    def pause(self) -> None:
        """The client cannot take more: stop reading (and timing) the upstream."""
        self._held_by_client = True
        self._regulate_reading()

    def resume(self) -> None:
        self._held_by_client = False
        self._regulate_reading()

    def _regulate_reading(self) -> None:
        held = self._held_by_client or self._held_for_sink
        if self._paused == held or self.transport is None or self.closed:
            return
        self._paused = held
        if held:
            self.transport.pause_reading()
        else:
            self._last_read = self.loop.time()
            self.transport.resume_reading()

    def make_idle(self) -> None:
        """Back to the pool: no exchange, reading on, so a close by the upstream is seen."""
        self._sink = None
        self._held_by_client = self._held_for_sink = False
        self._regulate_reading()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    @property
    def reusable(self) -> bool:
        return self._complete and not self.closed and not self._until_close and self._keep_alive

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        # Shared by every connection of the pool: the event loop fills it and calls
        # buffer_updated at once, and the parser copies out what it keeps.
        return self.pool.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.pool.read_buffer[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        if self._complete or self.head is None:
            # Bytes nobody asked for (after a complete answer, or on an idle connection):
            # never passed to a client; the connection is not trusted again.
            self.abort()
            return
        self._received = True
        self._last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as error:
            self._fail(f"malformed response: {error or type(error).__name__}")
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self._until_close and self.head is not None and self.head.done() and not self._complete:
            # A response without Content-Length or chunked coding ends when the upstream
            # closes the connection (RFC 9112 section 6.3, rule 8).
            self.on_message_complete()
            return
        reason = f"connection closed: {exc}" if exc else "the upstream closed the connection"
        self._fail(reason)

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._complete:
            raise UpstreamBroke("more than one answer to one request")
        self._header_lines = []
        self._reason = b""

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_lines.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self._status = status
        if 100 <= status < 200:
            return  # an interim answer (103 Early Hints): the final one follows
        headers: CIMultiDict[str] = CIMultiDict(
            (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
            for name, value in self._header_lines
        )
        # Read here: llhttp resets the connection flags once the message is complete.
        self._keep_alive = self.parser.should_keep_alive()
        framed = "Content-Length" in headers or "Transfer-Encoding" in headers
        self._until_close = not framed and status not in (204, 304)
        if self.head is not None and not self.head.done():
            self.head.set_result(ResponseHead(status, self._reason.decode("latin-1"), headers))

    def on_body(self, chunk: bytes) -> None:
        if self._sink is not None:
            self._sink(chunk)
            return
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size > PENDING_LIMIT and not self._held_for_sink:
            self._held_for_sink = True
            self._regulate_reading()

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:
            return
        self._complete = True
        self._stop_timer()
        if self._sink is None and self._pending:
            return  # done is set once the sink has taken the pending chunks
        self._finish()

    # internals

    def _finish(self) -> None:
        self._sink = None
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def _fail(self, reason: str, *, timed_out: bool = False) -> None:
        self._stop_timer()
        if self._complete:
            return  # the answer is whole (perhaps still waiting for its sink); only the connection is lost
        before = not self._received
        for waiter in (self.head, self.done):
            if waiter is not None and not waiter.done():
                waiter.set_exception(UpstreamBroke(reason, timed_out=timed_out, before_response=before))
                # Retrieved by whoever awaits it; if nobody does, it must not be logged as lost.
                waiter.exception()

    def _check_read_timeout(self) -> None:
        self._timer = None
        timeout = self._read_timeout
        if timeout is None or self._complete or self.closed:
            return
        now = self.loop.time()
        due = self._last_read + timeout
        if self._held_by_client or self._held_for_sink or now < due:
            self._timer = self.loop.call_at(max(due, now + 0.05), self._check_read_timeout)
            return
        self._fail(f"no data for {timeout:g} s (read_timeout)", timed_out=True)
        self.abort()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class ConnectionPool:
    """Idle connections per upstream address, most recently used first."""

    def __init__(self) -> None:
        self.read_buffer = memoryview(bytearray(READ_SIZE))
        self._idle: dict[Address, list[UpstreamConnection]] = {}
        self._open: set[UpstreamConnection] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    async def exchange(
        self,
        address: Address,
        request: bytes,
        method: str,
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> tuple[UpstreamConnection, ResponseHead]:
        """Send ``request`` and wait for the answer's head. A kept-alive connection the
        upstream had closed is replaced once, for idempotent methods, as aiohttp's client does."""
        retried = False
        while True:
            connection, reused = await self._acquire(address, connect_timeout)
            connection.start(request, read_timeout)
            assert connection.head is not None
            try:
                return connection, await connection.head
            except UpstreamBroke as broke:
                stale = reused and broke.before_response and not broke.timed_out
                if stale and not retried and method in RETRY_METHODS:
                    retried = True
                    continue
                raise
            except asyncio.CancelledError:
                connection.abort()
                raise

    @property
    def in_use(self) -> int:
        """Open connections carrying an exchange (not idle in the pool)."""
        return len(self._open) - sum(len(stack) for stack in self._idle.values())

    def release(self, connection: UpstreamConnection) -> None:
        if not connection.reusable:
            connection.abort()
            return
        connection.make_idle()
        connection.idle_since = connection.loop.time()
        self._idle.setdefault(connection.address, []).append(connection)
        if self._sweeper is None:
            self._sweeper = connection.loop.call_later(IDLE_TIMEOUT, self._sweep)

    def forget(self, connection: UpstreamConnection) -> None:
        self._open.discard(connection)
        stack = self._idle.get(connection.address)
        if stack and connection in stack:
            stack.remove(connection)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in list(self._open):
            connection.abort()
        self._idle.clear()

    async def _acquire(
        self, address: Address, connect_timeout: float | None
    ) -> tuple[UpstreamConnection, bool]:
        stack = self._idle.get(address)
        loop = asyncio.get_running_loop()
        while stack:
            connection = stack.pop()
            if not connection.closed and loop.time() - connection.idle_since < IDLE_TIMEOUT:
                return connection, True
            connection.abort()
        host, port, tls = address
        # The connect timeout covers the TLS handshake too, as aiohttp's does.
        async with asyncio.timeout(connect_timeout):
            _, connection = await loop.create_connection(
                lambda: UpstreamConnection(self, address),
                host,
                port,
                ssl=tls,
                server_hostname=host if tls is not None else None,
            )
        self._open.add(connection)
        return connection, False

    def _sweep(self) -> None:
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        kept = 0
        for stack in self._idle.values():
            for connection in [c for c in stack if now - c.idle_since >= IDLE_TIMEOUT]:
                stack.remove(connection)
                connection.abort()
            kept += len(stack)
        if kept:
            self._sweeper = loop.call_later(IDLE_TIMEOUT, self._sweep)
