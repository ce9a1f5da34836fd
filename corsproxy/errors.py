"""The proxy's own failures: one tree for both upstream clients and the WebSocket relay.

Each client maps its own errors into this tree in one place (``upstream/aiohttp_client.py``,
``upstream/pool.py``, ``upstream/websocket.py``), so both transports answer a failure alike:
``answers.failure_answer`` turns one into the proxy's own answer, with CORS headers, so the
page reads "502 cannot connect" instead of a misleading CORS error.

    UpstreamError                  the upstream gave no answer the proxy can pass on
    ├── UpstreamUnreachable   502  no connection: refused, no such host, TLS handshake failed
    ├── UpstreamTimedOut      504  no connection, or no answer's head, within the route's timeouts
    ├── UpstreamFailed        502  the connection broke, or the answer was malformed, before its head
    ├── UpstreamBusy          503  every one of server.max_upstream_connections is in use
    ├── ClientGone            499  the client hung up before its request body was whole
    └── ProxyStopping         503  the proxy shut down before the upstream answered
    UpstreamBrokeOff               the answer's body broke off after its head went out: there is
                                   no answer left to give, so the client connection is aborted
                                   and the client sees a truncated body, never a complete one
"""

from __future__ import annotations

import os
import ssl


class UpstreamError(Exception):
    """The upstream could not give an answer; ``status`` is the proxy's answer instead."""

    status = 502

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UpstreamUnreachable(UpstreamError):
    status = 502


class UpstreamTimedOut(UpstreamError):
    status = 504


class UpstreamFailed(UpstreamError):
    status = 502


class UpstreamBusy(UpstreamError):
    status = 503


class ClientGone(UpstreamError):
    # nginx's "client closed request": nobody is left to read the answer.
    status = 499


class ProxyStopping(UpstreamError):
    status = 503


class UpstreamBrokeOff(Exception):
    """The body of an answer already on its way broke off; the message says how."""


def describe(error: BaseException) -> str:
    """An exception as one line of text for a failure message."""
    text = str(error) or type(error).__name__
    return text.replace("\n", " ")


def connect_failure(error: BaseException) -> str:
    """Why a connection could not be made, in the same words from either client:
    the operating system's reason ("connection refused", "name or service not known"),
    or the TLS handshake's."""
    if isinstance(error, ssl.SSLError):
        return describe(error)  # its errno is the TLS library's code, not the system's
    number = getattr(error, "errno", None)
    reason = getattr(error, "strerror", None)
    if isinstance(number, int) and number > 0:
        # asyncio words a refused connect "Connect call failed (address)"; errno says it plainly.
        reason = os.strerror(number)
    if not isinstance(reason, str) or not reason:
        return describe(error)
    return reason[:1].lower() + reason[1:]
