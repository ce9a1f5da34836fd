"""WebSocket proxying: one upstream connection per browser connection, messages relayed both ways.

The upstream is connected first, so an unreachable or refusing upstream gets an ordinary HTTP
502/504 answer the developer can read, instead of a browser-side socket that opens and dies.
Then the browser's upgrade is accepted and two pumps copy messages until either side closes:
text, binary, ping and pong frames are relayed as they are (nothing is answered locally), and
the close code and reason of whichever side closes first reach the other side.

Browsers apply no CORS to WebSockets (RFC 6455 section 10.2: the server must check ``Origin``
itself), so the caller refuses disallowed origins before calling :func:`proxy_websocket`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from corsproxy.errors import UpstreamFailed, UpstreamTimedOut, UpstreamUnreachable, connect_failure, describe
from corsproxy.headers import split_list
from corsproxy.upstream.route import Route

log = logging.getLogger("corsproxy")

BrowserSocket = web.WebSocketResponse[Literal[True]]
UpstreamSocket = aiohttp.ClientWebSocketResponse[Literal[True]]
Socket = BrowserSocket | UpstreamSocket

# aiohttp's own default, stated so it is a decision: each side assembles a whole message in
# memory before it can be relayed, so a limit bounds the proxy's memory per connection. A larger
# message closes the connection with 1009 (RFC 6455 section 7.4.1, "message too big").
MAX_MESSAGE_SIZE = 4 * 1024 * 1024

# How long a close handshake may wait for the other end's closing frame (RFC 6455 section 7.1.1:
# the side that sent Close waits for the answering Close before dropping the connection).
CLOSE_WAIT = 10.0

# The browser's handshake headers are answered by the proxy itself; aiohttp's client makes its
# own key and version for the upstream (RFC 6455 section 4.1), and the subprotocols are passed
# through ``protocols=`` so the client can check the upstream's choice.
HANDSHAKE_HEADERS = (
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Accept",
    "Sec-WebSocket-Protocol",
)

# RFC 6455 section 5.5: a control frame's payload is at most 125 bytes; the code takes 2.
MAX_REASON_BYTES = 123

# RFC 6455 section 7.4.1: 1005, 1006 and 1015 only describe a closure, they are never sent;
# 1004 is reserved. Section 7.4.2: codes from 5000 on are not defined.
UNSENDABLE_CODES = frozenset({1004, 1005, 1006, 1015})

GOING_AWAY_REASON = b"corsproxy: the browser went away or the proxy is stopping"

BROWSER = "browser"
UPSTREAM = "upstream"


async def proxy_websocket(
    request: web.Request,
    session: aiohttp.ClientSession,
    target: URL,
    headers: CIMultiDict[str],
    route: Route,
) -> web.StreamResponse:
    """Connect to the upstream, accept the browser's upgrade, relay until either side closes.

    Raises an UpstreamError (errors.py: 502, or 504 on a timeout) before anything is sent to the
    browser when the upstream cannot be reached or refuses the upgrade. Returns a plain 400 for
    a request that is not a valid WebSocket handshake, without contacting the upstream.
    """
    requested = split_list(",".join(request.headers.getall("Sec-WebSocket-Protocol", ())))
    # Validate the browser's handshake before opening anything upstream: offering every
    # requested subprotocol keeps aiohttp from logging a "no overlap" warning for this check.
    if not web.WebSocketResponse(protocols=requested).can_prepare(request).ok:
        return web.Response(status=400, text="not a valid WebSocket handshake (RFC 6455 section 4.1)\n")

    upstream = await _connect(session, target, headers, route, requested)
    try:
        # Answer with the subprotocol the upstream chose (RFC 6455 section 4.2.2: the server
        # picks one of the client's); none when it chose none, exactly as the upstream answered.
        browser: BrowserSocket = web.WebSocketResponse(
            protocols=() if upstream.protocol is None else (upstream.protocol,),
            # Pings and pongs are the two ends' business: relay them, never answer locally.
            autoping=False,
            # A received Close is forwarded first and echoed afterwards (see _relay).
            autoclose=False,
            heartbeat=None,
            # The browser-side hop is local: deflating it would only cost CPU.
            compress=False,
            max_msg_size=MAX_MESSAGE_SIZE,
            timeout=CLOSE_WAIT,
        )
        await browser.prepare(request)
        await _relay(request, browser, upstream)
        return browser
    finally:
        # Normally closed by now. Otherwise the handler was cancelled (the browser's connection
        # dropped while aiohttp's handler_cancellation is on, or the proxy is stopping) or failed:
        # tell the upstream, and release its connection in every case.
        if not upstream.closed:
            await upstream.close(code=WSCloseCode.GOING_AWAY, message=GOING_AWAY_REASON)


async def _connect(
    session: aiohttp.ClientSession,
    target: URL,
    headers: CIMultiDict[str],
    route: Route,
    protocols: list[str],
) -> UpstreamSocket:
    sent = headers.copy()
    for name in HANDSHAKE_HEADERS:
        sent.popall(name, None)
    url = target.with_scheme("wss" if target.scheme == "https" else "ws")
    upstream_name = route.config.upstream
    # ws_connect sends its upgrade request with the session's timeout and accepts no
    # ClientTimeout, so the route's limits bound the whole handshake from outside: the connect
    # limit plus the longest silence allowed while waiting for the 101. There is no total
    # limit on the socket afterwards: a WebSocket may live as long as both ends want.
    limit = _handshake_limit(route.timeout)
    try:
        async with asyncio.timeout(limit):
            return await session.ws_connect(
                url,
                protocols=protocols,
                headers=sent,
                autoping=False,
                autoclose=False,
                heartbeat=None,
                max_msg_size=MAX_MESSAGE_SIZE,
                ssl=route.ssl,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_WAIT),
            )
    except TimeoutError as error:
        raise UpstreamTimedOut(
            f"upstream {upstream_name} did not complete the WebSocket handshake within {limit:g}s"
        ) from error
    except aiohttp.WSServerHandshakeError as error:
        raise UpstreamFailed(
            f"upstream {upstream_name} refused the WebSocket upgrade: HTTP {error.status} ({error.message})",
        ) from error
    except aiohttp.ClientConnectorError as error:
        reason = connect_failure(error.os_error)
        raise UpstreamUnreachable(f"cannot connect to upstream {upstream_name}: {reason}") from error
    except aiohttp.ClientError as error:
        raise UpstreamFailed(
            f"upstream {upstream_name} failed during the WebSocket handshake: {describe(error)}"
        ) from error


def _handshake_limit(timeout: aiohttp.ClientTimeout) -> float | None:
    if timeout.connect is None and timeout.sock_read is None:
        return None
    return (timeout.connect or 0.0) + (timeout.sock_read or 0.0)


@dataclass(frozen=True)
class _Ending:
    """How the relay stopped: which side stopped it, and what the other side is told."""

    side: str
    code: int
    reason: str
    # The side sent a Close frame and waits for the answering one (RFC 6455 section 5.5.1).
    clean: bool


async def _relay(request: web.Request, browser: BrowserSocket, upstream: UpstreamSocket) -> None:
    to_upstream = asyncio.create_task(_pump(browser, upstream, BROWSER))
    to_browser = asyncio.create_task(_pump(upstream, browser, UPSTREAM))
    pumps = (to_upstream, to_browser)
    try:
        done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        # Both may have stopped in the same turn; a Close frame explains more than a lost socket.
        endings = sorted((task.result() for task in done), key=lambda ending: not ending.clean)
        ending = endings[0]
        stopped, other = (browser, upstream) if ending.side == BROWSER else (upstream, browser)
        if ending.clean:
            log.debug(
                "WebSocket %s: %s closed (%d %s)", request.path, ending.side, ending.code, ending.reason
            )
        else:
            log.warning("WebSocket %s: %s", request.path, ending.reason)
        # Close the other side first: its pump is parked in receive(), and aiohttp's close()
        # wakes it with CLOSING, so that pump ends on its own. Then answer the side that
        # closed, echoing its code (RFC 6455 section 5.5.1).
        await other.close(code=_sendable(ending.code), message=_reason_bytes(ending.reason))
        if ending.clean:
            await stopped.close(code=_sendable(ending.code))
        else:
            await stopped.close(code=WSCloseCode.GOING_AWAY)
        await asyncio.wait(pumps, timeout=CLOSE_WAIT)
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def _pump(source: Socket, sink: Socket, side: str) -> _Ending:
    """Copy messages from ``source`` to ``sink`` until ``source`` closes or either breaks."""
    other = UPSTREAM if side == BROWSER else BROWSER
    try:
        while True:
            message = await source.receive()
            kind = message.type
            if kind is WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif kind is WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            elif kind is WSMsgType.PING:
                # RFC 6455 section 5.5.3: a Pong echoes its Ping's payload. The far end answers
                # and its Pong is relayed back, so the round trip measures the whole path.
                await sink.ping(message.data)
            elif kind is WSMsgType.PONG:
                await sink.pong(message.data)
            elif kind is WSMsgType.CLOSE:
                return _Ending(side, message.data, message.extra or "", clean=True)
            elif kind is WSMsgType.ERROR:
                # aiohttp has already closed the source with the matching code (RFC 6455
                # section 7.4.1: 1002 protocol error, 1007 bad UTF-8, 1009 message too big);
                # the other side learns that this side failed, and why.
                return _lost(side, f"corsproxy: the {side} side failed: {message.data}")
            else:
                # CLOSED: the connection dropped without a Close frame. CLOSING: the proxy is
                # closing this side itself, and the ending that caused it is already decided.
                return _lost(side)
    except (ConnectionError, aiohttp.ClientError):
        # Writing to the sink failed: it is the sink's connection that is gone.
        return _lost(other)


def _lost(side: str, reason: str | None = None) -> _Ending:
    # RFC 6455 section 7.4.1: 1001 "going away", as when a browser navigates away from a page;
    # IANA registry (section 11.7): 1014 "bad gateway", the proxy's upstream failed.
    if side == BROWSER:
        return _Ending(side, WSCloseCode.GOING_AWAY, reason or "corsproxy: the browser went away", False)
    return _Ending(
        side, WSCloseCode.BAD_GATEWAY, reason or "corsproxy: the upstream connection was lost", False
    )


def _sendable(code: int) -> int:
    """A code that may go into a Close frame. A Close without a code (reported as 0, RFC 6455
    section 7.1.5 calls it 1005) and the codes no endpoint may send become 1000."""
    if code in UNSENDABLE_CODES or not 1000 <= code <= 4999:
        return WSCloseCode.OK
    return code


def _reason_bytes(reason: str) -> bytes:
    """The reason as UTF-8 (RFC 6455 section 5.5.1), cut to fit a control frame at a character
    boundary."""
    data = reason.encode()
    if len(data) <= MAX_REASON_BYTES:
        return data
    return data[:MAX_REASON_BYTES].decode("utf-8", "ignore").encode()
