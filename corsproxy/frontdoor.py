"""The front door: where every client connection starts.

aiohttp's web layer spends most of a preflight's time on machinery that a proxy's two
commonest requests do not need. The front door parses each request head with httptools
and serves two kinds itself, by the same rules and the same code as app.py:

- CORS preflights, answered from the cached decision (the bytes built once per decision);
- body-less requests, forwarded over the lean keep-alive client (upstream_pool.py) and
  streamed back with flow control both ways.

Anything else (a body, a WebSocket or other upgrade, HTTP/1.0, HEAD, the proxy's own
pages, an upstream URL with credentials in it, a request to refuse, a head it cannot
parse or one over the size limit) is handed to aiohttp's request handler together with every byte received
so far, and that connection is aiohttp's from then on. So every answer aiohttp gave
before, its 400s and 4xx refusals included, it still gives.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, cast

import httptools
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.web_server import Server
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from corsproxy.app import (
    OWN_PREFIX,
    STATE,
    Outcome,
    ProxyState,
    credentials_refusal,
    preflight_answer,
    take_upstream_slot,
)
from corsproxy.cors_headers import VARY_ORIGIN, add_cors_headers
from corsproxy.message_checks import dot_segment_refusal
from corsproxy.policy import NO_ORIGIN, Decision
from corsproxy.routing import Route, match_path
from corsproxy.upstream import UpstreamFailure, forwarded_headers, returned_headers
from corsproxy.upstream_pool import ConnectionPool, UpstreamBroke, UpstreamConnection

log = logging.getLogger("corsproxy")

# aiohttp's server default, so a connection ages the same on either side of a handoff.
KEEPALIVE_TIMEOUT = 3630.0
# Bytes of further (pipelined) requests buffered while one is being served.
PIPELINE_LIMIT = 256 * 1024
# aiohttp's client sends Content-Length: 0 for any other method when there is no body;
# so does the front door, so the upstream sees the same request either way.
BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


@dataclass(slots=True)
class FrontRequest:
    """A parsed request head, with the parts app.py reads from an aiohttp request."""

    method: str
    path: str  # routing.match_path: routes and rules are matched on it
    raw_path: str
    query_string: str
    headers: CIMultiDict[str]
    host: str
    keep_alive: bool


@dataclass(slots=True)
class FrontAnswer:
    status: int
    headers: Mapping[str, str]


@functools.lru_cache(maxsize=2048)
def split_target(target: str) -> tuple[str, str, str] | None:
    """(match path, raw path, raw query) of an origin-form request target, made as
    app.py makes them; None for any other form, and for a path with a dot segment, which
    aiohttp handles (refuses). Cached: the same few targets arrive again and again."""
    if not target.startswith("/") or "#" in target:
        return None
    raw_path, _, query = target.partition("?")
    url = URL.build(path=raw_path, query_string=query, encoded=True)
    if dot_segment_refusal(url.raw_path) is not None:
        return None
    return match_path(url.raw_path), url.raw_path, url.raw_query_string


_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The Date header (RFC 9110 section 6.6.1), formatted once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


@functools.lru_cache(maxsize=4096)
def preflight_bytes(decision: Decision) -> tuple[int, CIMultiDictProxy[str], bytes, bytes]:
    """The preflight answer of app.py as the status, its headers as aiohttp sends them
    (less Date), the head's bytes up to Date, and the body."""
    status, pairs, body = preflight_answer(decision)
    headers: CIMultiDict[str] = CIMultiDict(pairs)
    if body:
        headers["Content-Length"] = str(len(body))
    headers["Server"] = SERVER_SOFTWARE
    reason = "No Content" if status == 204 else "Forbidden"
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    return status, CIMultiDictProxy(headers), head.encode("utf-8", "surrogateescape"), body or b""


def serialize_head(status: int, reason: str, headers: CIMultiDict[str], close: bool) -> tuple[bytes, bool]:
    """The response head as aiohttp's StreamResponse.prepare writes it for HTTP/1.1, and
    whether the body is sent chunked. ``headers`` gets the headers added, as aiohttp's do."""
    empty = status in (204, 304) or 100 <= status < 200
    chunked = False
    if empty:
        # RFC 9112 section 6.1 and 6.3: no body, so no body framing either.
        headers.popall("Transfer-Encoding", None)
        if status != 304:
            headers.popall("Content-Length", None)
    else:
        chunked = "Content-Length" not in headers
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        if headers.get("Content-Length") != "0":
            # RFC 9110 section 8.3: a body without a type is application/octet-stream.
            headers.setdefault("Content-Type", "application/octet-stream")
    if "Date" not in headers:
        headers["Date"] = http_date()
    headers.setdefault("Server", SERVER_SOFTWARE)
    if close and "Connection" not in headers:
        headers["Connection"] = "close"
    lines = [f"HTTP/1.1 {status} {reason}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    lines.append("\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape"), chunked


def request_head(method: str, target: URL, route: Route, headers: CIMultiDict[str]) -> bytes:
    """The request head as aiohttp's client writes it: Host first, from the upstream URL."""
    lines = [f"{method} {target.raw_path_qs} HTTP/1.1\r\nHost: {route.host_header}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    lines.append("\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


class FrontDoor(asyncio.Protocol):
    """One client connection, until it is handed to aiohttp (if ever)."""

    def __init__(self, server: FrontDoorServer) -> None:
        self.server = server
        self.state = server.state
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
        self.upstream: UpstreamConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.answered = False  # the current forward's head has gone to the client
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
        if self.upstream is not None:
            self.upstream.abort()
        elif self.task is not None and not self.task.done():
            self.task.cancel()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.upstream is not None:
            self.upstream.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.upstream is not None:
            self.upstream.resume()
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
            request = self._parse(head) if head.count(b"\n") == head.count(b"\r\n") else None
            served = request is not None and self._serve(request, end + 4, started)
            if not served:
                self._hand_off()
                return

    def _parse(self, head: bytes) -> FrontRequest | None:
        """The request, when it is one the front door may serve: HTTP/1.1, no body,
        no upgrade, an origin-form target and a Host header."""
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
        try:
            # Values lose surrounding whitespace (RFC 9110 section 5.5), as aiohttp's parser
            # does. Bytes that are not UTF-8 are refused by aiohttp (message_checks.py).
            headers: CIMultiDict[str] = CIMultiDict(
                (name.decode(), value.decode().strip(" \t")) for name, value in self._header_lines
            )
        except UnicodeDecodeError:
            return None
        if len(headers) != len({name.lower() for name in headers}):
            # A repeated header: aiohttp refuses repeated Host, Content-Type and the like
            # (RFC 9110 section 5.3), so it decides.
            return None
        host = headers.get("Host")
        if not host or "Upgrade" in headers or "Expect" in headers or "Transfer-Encoding" in headers:
            return None
        method = parser.get_method().decode("ascii")
        path, raw_path, query = parts
        return FrontRequest(method, path, raw_path, query, headers, host, self._keep_alive)

    def _serve(self, request: FrontRequest, head_length: int, started: float) -> bool:
        """Serve the request if it is the front door's to serve; False hands it to aiohttp."""
        method = request.method
        own = OWN_PREFIX[:-1]
        if method in ("HEAD", "CONNECT") or request.raw_path.startswith(own) or request.path.startswith(own):
            return False
        runtime = self.state.runtime
        headers = request.headers
        if not runtime.host_guard.allows(request.host):
            return False
        origin = headers.get("Origin")
        requested_method = headers.get("Access-Control-Request-Method")
        # Fetch standard, CORS-preflight request: OPTIONS carrying both Origin and
        # Access-Control-Request-Method. Any other OPTIONS is an ordinary request.
        if origin is not None and method == "OPTIONS" and requested_method is not None:
            decision = runtime.policy.preflight(
                request.path,
                origin,
                requested_method,
                headers.get("Access-Control-Request-Headers"),
                headers.get("Access-Control-Request-Private-Network") == "true",
            )
            self._take(head_length)
            self._answer_preflight(request, decision, started)
            return True
        route = runtime.router.match(request.path)
        if route is None or not route.lean:
            return False
        decision = NO_ORIGIN if origin is None else runtime.policy.actual(request.path, origin)
        if credentials_refusal(headers, method, route, decision, runtime.policy) is not None:
            return False
        self._take(head_length)
        self.busy = True
        self.task = self.loop.create_task(self._forward(request, route, decision, started))
        return True

    def _take(self, head_length: int) -> None:
        """The front door serves the request whose head is first in the buffer."""
        del self.buffer[:head_length]
        self.state.front_door.served += 1

    def _answer_preflight(self, request: FrontRequest, decision: Decision, started: float) -> None:
        status, headers, head, body = preflight_bytes(decision)
        close = not request.keep_alive or self.closing
        ending = b"Connection: close\r\n\r\n" if close else b"\r\n"
        assert self.transport is not None
        self.transport.write(b"%sDate: %s\r\n%s%s" % (head, http_date().encode(), ending, body))
        self.state.finish(Outcome(request, FrontAnswer(status, headers), started, decision, preflight=True))
        # The loop in _serve_buffered goes on to any request already buffered.
        self._request_done(close, serve_next=False)

    async def _forward(self, request: FrontRequest, route: Route, decision: Decision, started: float) -> None:
        state = self.state
        target = route.target(request.raw_path, request.query_string)
        sent = forwarded_headers(
            request.headers, route, remote=self.remote, scheme=self.scheme, host=request.host
        )
        if request.method not in BODYLESS_METHODS and "Content-Length" not in sent:
            sent["Content-Length"] = "0"
        close = not request.keep_alive
        self.answered = False
        try:
            await take_upstream_slot(state, route)
            try:
                close = await self._relay(request, route, decision, started, target, sent) or close
            finally:
                state.upstream_slots.release()
        except UpstreamFailure as failure:
            close = self._answer_failure(request, decision, started, target, sent, failure) or close
        except asyncio.CancelledError:
            # The client went away, or shutdown's grace period ran out before the answer.
            if not self.answered:
                if self.lost:
                    self._record_disconnect(request, decision, started, target, sent)
                else:
                    shut = UpstreamFailure(503, "corsproxy shut down before the upstream answered")
                    self._answer_failure(request, decision, started, target, sent, shut)
            raise
        except Exception:
            log.exception("%s %s: the front door failed", request.method, request.path)
            close = True
            if self.transport is not None:
                self.transport.abort()
        finally:
            self.task = None
        self._request_done(close)

    async def _relay(
        self,
        request: FrontRequest,
        route: Route,
        decision: Decision,
        started: float,
        target: URL,
        sent: CIMultiDict[str],
    ) -> bool:
        """Forward and stream the answer back; True when the client connection must close."""
        config = route.config
        pool = self.server.pool
        try:
            connection, answer = await pool.exchange(
                route.address,
                request_head(request.method, target, route, sent),
                request.method,
                config.connect_timeout,
                config.read_timeout,
            )
        except TimeoutError as error:
            raise UpstreamFailure(504, f"upstream {config.upstream} timed out (connect)") from error
        except OSError as error:
            raise UpstreamFailure(502, f"cannot connect to upstream {config.upstream}: {error}") from error
        except UpstreamBroke as broke:
            if broke.timed_out:
                raise UpstreamFailure(504, f"upstream {config.upstream} timed out ({broke})") from broke
            raise UpstreamFailure(502, f"upstream {config.upstream} failed: {broke}") from broke
        upstream_ms = (time.perf_counter() - started) * 1000
        headers = returned_headers(answer.headers, route, scheme=self.scheme, host=request.host)
        add_cors_headers(headers, decision, VARY_ORIGIN)
        close = not request.keep_alive or self.closing
        head, chunked = serialize_head(answer.status, answer.reason, headers, close)
        outcome = Outcome(request, FrontAnswer(answer.status, headers), started, decision)
        outcome.forwarded(target, sent, upstream_ms)
        transport = self.transport
        if self.lost or transport is None:
            connection.abort()
            outcome.error = "client disconnected"
            self.state.finish(outcome)
            return True
        # The head and the body bytes already here in one gathered write: one send() for a
        # small answer, and no copy into one buffer for a large one.
        parts = [head]
        for chunk in connection.take_pending():
            parts += (b"%x\r\n" % len(chunk), chunk, b"\r\n") if chunked else (chunk,)
        transport.writelines(parts)
        self.answered = True
        self.upstream = connection
        if self.write_paused:
            connection.pause()
        try:
            connection.attach(self._write_chunk if chunked else self._write)
            assert connection.done is not None
            await connection.done
            if chunked and not self.lost:
                transport.write(b"0\r\n\r\n")
        except asyncio.CancelledError:
            outcome.error = "client disconnected" if self.lost else "cut short: corsproxy shut down mid-body"
            if not self.lost:
                transport.abort()  # visibly truncated, never complete-looking
            self.state.finish(outcome)
            raise
        except UpstreamBroke as broke:
            close = True
            if self.lost:
                outcome.error = "client disconnected"
            else:
                # The client must see a truncated body, never a complete-looking one.
                outcome.error = f"upstream body broke off: {broke}"
                log.warning("%s %s: %s", request.method, request.path, outcome.error)
                transport.abort()
        finally:
            self.upstream = None
            pool.release(connection)
        self.state.finish(outcome)
        return close

    def _answer_failure(
        self,
        request: FrontRequest,
        decision: Decision,
        started: float,
        target: URL,
        sent: CIMultiDict[str],
        failure: UpstreamFailure,
    ) -> bool:
        """CORS headers on the proxy's own errors too (README, "How the proxy decides"), so the page
        can read "502 cannot connect" instead of a misleading CORS error."""
        body = (failure.message + "\n").encode()
        headers: CIMultiDict[str] = CIMultiDict()
        headers["Content-Type"] = "text/plain; charset=utf-8"
        add_cors_headers(headers, decision, VARY_ORIGIN)
        headers["Content-Length"] = str(len(body))
        close = not request.keep_alive or self.closing
        head, _ = serialize_head(failure.status, _REASONS.get(failure.status, "Error"), headers, close)
        log.warning("%s %s: %s", request.method, request.path, failure.message)
        if self.transport is not None and not self.lost:
            self.transport.write(head + body)
        outcome = Outcome(
            request, FrontAnswer(failure.status, headers), started, decision, error=failure.message
        )
        self.state.finish(outcome.forwarded(target, sent, None))
        return close

    def _record_disconnect(
        self, request: FrontRequest, decision: Decision, started: float, target: URL, sent: CIMultiDict[str]
    ) -> None:
        # 499: nginx's "client closed request"; no answer was sent.
        outcome = Outcome(
            request, FrontAnswer(499, CIMultiDict()), started, decision, error="client disconnected"
        )
        self.state.finish(outcome.forwarded(target, sent, None))

    def _write(self, chunk: bytes) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(chunk)

    def _write_chunk(self, chunk: bytes) -> None:
        # RFC 9112 section 7.1: chunk size in hex, CRLF, data, CRLF.
        if chunk and not self.lost and self.transport is not None:
            self.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))

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


_REASONS = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class FrontDoorServer:
    """aiohttp's low-level Server with every connection starting at a FrontDoor. Stands
    in for that Server in the runner, so aiohttp's own shutdown reaches both kinds."""

    def __init__(self, inner: Server, state: ProxyState) -> None:
        self.inner = inner
        self.state = state
        self.pool = ConnectionPool()
        self.doors: set[FrontDoor] = set()

    def __call__(self) -> FrontDoor:
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


class ProxyRunner(web.AppRunner):
    """aiohttp's AppRunner for the proxy app, serving through the front door."""

    async def _make_server(self) -> Server:
        inner = await super()._make_server()
        return cast(Server, FrontDoorServer(inner, self.app[STATE]))
