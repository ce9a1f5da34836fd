"""The front door: where every client connection starts.

aiohttp's web layer spends most of a preflight's time on machinery that a proxy's
commonest requests do not need. The front door parses each request head with httptools,
asks the flow (flow.py) for its plan, and carries out itself every plan for a head it can
take: preflights (the answer's bytes built once per decision), refusals, and body-less
forwards over the lean keep-alive client, streamed back with flow control both ways.
One FrontExchange (exchange.py) per request it serves; the bytes that must match
aiohttp's are in wire.py.

Its one test of "is this one mine?" is ``_parse`` and ``_mine``: anything else (a body,
an upgrade or Expect, HTTP/1.0, HEAD, the proxy's own pages, a target that is not
origin-form, a route whose upstream URL carries credentials, a request a ``simulate``
entry matches, repeated headers, a head it cannot parse or one over the size limit) is
handed to aiohttp's request handler together with every byte received so far, and that
connection is aiohttp's from then on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any, cast

import httptools
from aiohttp.web_server import Server
from multidict import CIMultiDict
from yarl import URL

from corsproxy.flow import (
    OWN_PREFIX,
    Forward,
    Mock,
    Preflight,
    Refuse,
    Replayed,
    RequestHead,
    plan,
    plan_route,
)
from corsproxy.replay import is_conditional
from corsproxy.server.exchange import (
    FrontExchange,
    answer_mock,
    answer_preflight,
    answer_refusal,
    answer_replayed,
)
from corsproxy.server.wire import chunk
from corsproxy.state import ProxyState
from corsproxy.upstream.lean_client import LeanAnswer, LeanClient
from corsproxy.upstream.pool import ConnectionPool
from corsproxy.upstream.route import match_path

log = logging.getLogger("corsproxy")

# aiohttp's server default, so a connection ages the same on either side of a handoff.
KEEPALIVE_TIMEOUT = 3630.0
# The proxy's own pages, by either spelling of their path: aiohttp's.
OWN_PAGES = OWN_PREFIX[:-1]
# Bytes of further (pipelined) requests buffered while one is being served.
PIPELINE_LIMIT = 256 * 1024


@functools.lru_cache(maxsize=2048)
def split_target(target: str) -> tuple[str, str, str] | None:
    """(match path, raw path, raw query) of an origin-form request target, made as
    app.py makes them; None for any other form, which aiohttp handles. Cached: the same
    few targets arrive again and again."""
    if not target.startswith("/") or "#" in target:
        return None
    raw_path, _, query = target.partition("?")
    url = URL.build(path=raw_path, query_string=query, encoded=True)
    return match_path(url.raw_path), url.raw_path, url.raw_query_string


class FrontDoor(asyncio.Protocol):
    """One client connection, until it is handed to aiohttp (if ever)."""

    def __init__(self, server: FrontDoorServer) -> None:
        self.server = server
        self.state = server.state
        self.lean = server.lean
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.buffer = bytearray()
        self.remote = ""
        self.scheme = "http"
        self.busy = False
        self.closing = False
        self.lost = False
        self.write_paused = False
        self.read_paused = False
        self.exchange: FrontExchange | None = None  # the forward in flight
        self.task: asyncio.Task[None] | None = None
        self.last_active = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None
        self._url = b""
        self._header_lines: list[tuple[bytes, bytes]] = []
        self._complete = False
        self._keep_alive = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else ""
        self.scheme = "https" if transport.get_extra_info("sslcontext") is not None else "http"
        self.server.doors.add(self)
        self._idle_since_now()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._serve_buffered()
        self._regulate_reading()

    def _regulate_reading(self) -> None:
        """Stop reading while unserved bytes pile up (pipelined requests, or a client that
        sends but does not read its answers), so memory stays bounded."""
        transport = self.transport
        if transport is None or self.lost:
            return
        over = len(self.buffer) > PIPELINE_LIMIT
        if over and not self.read_paused:
            self.read_paused = True
            transport.pause_reading()
        elif not over and self.read_paused:
            self.read_paused = False
            transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.doors.discard(self)
        self._stop_idle_timer()
        relayed = self._relayed()
        if relayed is not None:
            relayed.abort()
        elif self.task is not None and not self.task.done():
            self.task.cancel()

    def _relayed(self) -> LeanAnswer | None:
        """The upstream answer being relayed to this client, if any."""
        return None if self.exchange is None else self.exchange.answer

    def pause_writing(self) -> None:
        self.write_paused = True
        relayed = self._relayed()
        if relayed is not None:
            relayed.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        relayed = self._relayed()
        if relayed is not None:
            relayed.resume()
        elif not self.busy:
            self._serve_buffered()
            self._regulate_reading()

    # httptools callbacks

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_lines.append((name, value))

    def on_headers_complete(self) -> None:
        # Read here: llhttp resets the connection flags once the message is complete.
        self._keep_alive = self.parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self._complete = True

    # serving

    def _serve_buffered(self) -> None:
        limit = self.state.runtime.config.server.max_header_size
        while self.buffer and not (self.busy or self.closing or self.write_paused or self.transport is None):
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0 and len(self.buffer) <= limit and b"\n\n" not in self.buffer:
                return  # the rest of the head is on its way
            if end < 0 or end + 4 > limit:
                # aiohttp answers an oversized head with a 400 naming the limit, and one
                # whose lines end in a bare LF with a 400 too.
                self._hand_off()
                return
            started = time.perf_counter()
            head = bytes(self.buffer[: end + 4])
            # RFC 9112 section 2.2: lines end in CRLF; a bare LF is aiohttp's to judge.
            parsed = self._parse(head) if head.count(b"\n") == head.count(b"\r\n") else None
            served = parsed is not None and self._serve(*parsed, end + 4, started)
            if not served:
                self._hand_off()
                return

    def _parse(self, head: bytes) -> tuple[RequestHead, bool] | None:
        """The request head and whether the client keeps the connection alive, when it is
        one the front door may take: HTTP/1.1, no body, no upgrade, an origin-form target,
        a Host, no repeated header."""
        self._url = b""
        self._header_lines = []
        self._complete = False
        parser = self.parser
        try:
            parser.feed_data(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            # Upgrades (WebSockets) and anything the parser rejects are aiohttp's to answer.
            return None
        if not self._complete or parser.get_http_version() != "1.1" or parser.should_upgrade():
            return None
        parts = split_target(self._url.decode("utf-8", "surrogateescape"))
        if parts is None:
            return None
        # Values lose surrounding whitespace (RFC 9110 section 5.5), as aiohttp's parser does;
        # bytes that are not UTF-8 are decoded as aiohttp does, and the flow refuses them.
        # One loop, no generator: this runs for every request (about 2 µs less than a
        # generator into CIMultiDict plus a second pass for repeats).
        lines: list[tuple[str, str]] = []
        names: set[str] = set()
        for raw_name, raw_value in self._header_lines:
            name = raw_name.decode("utf-8", "surrogateescape")
            names.add(name.lower())
            lines.append((name, raw_value.decode("utf-8", "surrogateescape").strip(" \t")))
        if len(names) != len(lines):
            # A repeated header: aiohttp refuses repeated Host, Content-Type and the like
            # (RFC 9110 section 5.3), so it decides.
            return None
        headers: CIMultiDict[str] = CIMultiDict(lines)
        host = headers.get("Host")
        # A body follows, or the connection changes: aiohttp's to serve.
        if not host or "Upgrade" in headers or "Expect" in headers or "Transfer-Encoding" in headers:
            return None
        path, raw_path, query = parts
        request = RequestHead(
            parser.get_method().decode("ascii"),
            path,
            raw_path,
            query,
            headers,
            host,
            self.scheme,
            self.remote,
            None,  # a Content-Length here is 0: the head is the whole message
            False,
            head.isascii(),
        )
        return request, self._keep_alive

    def _serve(self, request: RequestHead, keep_alive: bool, head_length: int, started: float) -> bool:
        """Carry out the flow's plan for the request; False hands it to aiohttp. Not the
        front door's: HEAD (llhttp cannot be told that an answer belongs to a HEAD),
        CONNECT, the proxy's own pages, forwards to a WebSocket or to a route whose upstream
        URL carries credentials."""
        method = request.method
        if method == "HEAD" or method == "CONNECT" or request.raw_path.startswith(OWN_PAGES):
            return False
        if request.path.startswith(OWN_PAGES):
            return False
        simulator = self.state.simulator
        if simulator.active and simulator.matches(method, request.path):
            # A simulated bad network is slow or failing on purpose: aiohttp carries it out
            # (server/simulation.py), written once.
            return False
        decided = plan(request, self.state.runtime)
        if isinstance(decided, Replayed):
            # The front door's requests have no body: compared as the empty one.
            recorded = decided.replay.take(
                decided.found, b"", method=method, conditional=is_conditional(request.headers)
            )
            if recorded is not None or decided.replay.answers_misses:
                self._take(head_length)
                close = answer_replayed(self, request, keep_alive, started, decided, recorded)
                self._request_done(close, serve_next=False)
                return True
            decided = plan_route(request, self.state.runtime, decided.decision, decided.close)
        if isinstance(decided, Preflight):
            self._take(head_length)
            # The loop in _serve_buffered goes on to any request already buffered.
            close = answer_preflight(self, request, keep_alive, started, decided)
            self._request_done(close, serve_next=False)
            return True
        if isinstance(decided, Refuse):
            self._take(head_length)
            close = answer_refusal(self, request, keep_alive, started, decided)
            self._request_done(close, serve_next=False)
            return True
        if isinstance(decided, Mock):
            self._take(head_length)
            close = answer_mock(self, request, keep_alive, started, decided)
            self._request_done(close, serve_next=False)
            return True
        if decided.websocket or not decided.route.lean:
            return False
        self._take(head_length)
        self.busy = True
        exchange = FrontExchange(self, request, keep_alive, started)
        self.exchange = exchange
        self.task = self.loop.create_task(self._forward(exchange, decided))
        return True

    def _take(self, head_length: int) -> None:
        """The front door serves the request whose head is first in the buffer."""
        del self.buffer[:head_length]
        self.state.front_door.served += 1

    async def _forward(self, exchange: FrontExchange, forwarding: Forward) -> None:
        close = True
        try:
            close = await exchange.forward(forwarding)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s %s: the front door failed", exchange.head.method, exchange.head.path)
            if self.transport is not None:
                self.transport.abort()
        finally:
            self.task = None
            self.exchange = None
        self._request_done(close)

    def write(self, data: bytes) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(data)

    def write_chunk(self, data: bytes) -> None:
        if data and not self.lost and self.transport is not None:
            self.transport.writelines(chunk(data))

    def _request_done(self, close: bool, serve_next: bool = True) -> None:
        self.busy = False
        transport = self.transport
        if self.lost or transport is None:
            return
        if close or self.closing:
            self.closing = True
            transport.close()
            return
        self._idle_since_now()
        if serve_next:
            if self.buffer:
                self._serve_buffered()
            self._regulate_reading()

    # handing over and closing

    def _hand_off(self) -> None:
        """aiohttp's request handler takes the connection, with the bytes not yet served."""
        transport = self.transport
        if transport is None:
            return
        self.transport = None
        self.state.front_door.handed_off += 1
        self.server.doors.discard(self)
        self._stop_idle_timer()
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        handler = self.server.inner()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        pending, self.buffer = bytes(self.buffer), bytearray()
        if pending:
            handler.data_received(pending)

    def close_when_idle(self) -> None:
        """Shutting down: close now if no request is in flight, else after it."""
        self.closing = True
        if not self.busy and self.transport is not None:
            self.transport.close()

    async def shutdown(self, timeout: float | None) -> None:  # noqa: ASYNC109 (aiohttp's interface)
        """Let the request in flight finish within ``timeout``, then close."""
        self.closing = True
        task = self.task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=timeout)
            if not task.done():
                task.cancel()
        if self.transport is not None:
            self.transport.close()

    def _idle_since_now(self) -> None:
        self.last_active = self.loop.time()
        if self.idle_timer is None:
            self.idle_timer = self.loop.call_at(self.last_active + KEEPALIVE_TIMEOUT, self._check_idle)

    def _check_idle(self) -> None:
        self.idle_timer = None
        if self.transport is None or self.lost:
            return
        due = self.last_active + KEEPALIVE_TIMEOUT
        if self.busy or self.loop.time() < due:
            self.idle_timer = self.loop.call_at(max(due, self.loop.time() + 1), self._check_idle)
            return
        self.transport.close()

    def _stop_idle_timer(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None


class FrontDoorServer:
    """aiohttp's low-level Server with every connection starting at a FrontDoor. Stands
    in for that Server in the runner, so aiohttp's own shutdown reaches both kinds."""

    def __init__(self, inner: Server, state: ProxyState, *, serving: bool = True) -> None:
        self.inner = inner
        self.state = state
        # False: every connection goes straight to aiohttp (tests run each forwarding
        # behaviour on both transports this way; the counts show which one served).
        self.serving = serving
        self.pool = ConnectionPool()
        self.lean = LeanClient(self.pool)
        self.doors: set[FrontDoor] = set()

    def __call__(self) -> asyncio.Protocol:
        if not self.serving:
            self.state.front_door.handed_off += 1
            return self.inner()
        return FrontDoor(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def pre_shutdown(self) -> None:
        self.inner.pre_shutdown()
        for door in list(self.doors):
            door.close_when_idle()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (aiohttp's interface)
        doors = [door.shutdown(timeout) for door in list(self.doors)]
        await asyncio.gather(self.inner.shutdown(timeout), *doors)
        self.pool.close()
