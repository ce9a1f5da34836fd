"""Forwarding: one pooled client session, headers filtered both ways, bodies streamed.

Bodies are never buffered: the request body is handed to the client as a stream and
the response body is written chunk by chunk as it arrives, with ``write`` waiting on
the client's socket, so memory stays flat for a 1 GB download or a slow reader.
The client never decompresses (``auto_decompress=False``): the bytes and their
``Content-Encoding``/``Content-Length`` reach the browser as the upstream sent them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from corsproxy.guards import request_authority
from corsproxy.headers import MET_BY_PROXY, connection_listed, is_hop_by_hop
from corsproxy.rewrite import restore_cookie_prefixes, rewrite_location, rewrite_set_cookie
from corsproxy.routing import Route

log = logging.getLogger("corsproxy")

# Read up to this much at a time: read(n) returns whatever has arrived, so event streams
# still flow event by event, while bounded, equal-sized buffers keep memory flat.
READ_CHUNK = 64 * 1024

# aiohttp's client adds these when absent; a proxy must not invent request headers.
SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


class UpstreamFailure(Exception):
    """The upstream could not give a response: 502 (unreachable, broken) or 504 (timed out)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_session(max_connections: int) -> aiohttp.ClientSession:
    """The app's one client session: a keep-alive pool shared by every request."""
    connector = aiohttp.TCPConnector(limit=max_connections, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        # Cookies belong to the browser, not to the proxy: never store or replay them.
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        # The upstream's Host, Location and redirects are the browser's business.
        trust_env=False,
    )


def upstream_headers(request: web.Request, route: Route) -> CIMultiDict[str]:
    """The request's headers as the upstream should see them (RFC 9110 section 7.6)."""
    return forwarded_headers(
        request.headers,
        route,
        remote=request.remote or "",
        scheme=request.scheme,
        host=request_authority(request) or "",
    )


def forwarded_headers(
    incoming: Mapping[str, str], route: Route, *, remote: str, scheme: str, host: str
) -> CIMultiDict[str]:
    """``upstream_headers`` for a request known by its parts: its headers, the client's
    address, the scheme and Host it reached the proxy with."""
    listed = connection_listed(incoming.get("Connection"))
    dropped = route.dropped_names
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        # Host is set from the upstream URL by the client: third-party APIs route on it.
        if lower == "host" or lower in MET_BY_PROXY or lower in dropped or is_hop_by_hop(lower, listed):
            continue
        if lower == "cookie":
            # Cookies whose __Host-/__Secure- prefix had to be set aside on the way out
            # get it back, so the upstream sees the names it set.
            value = restore_cookie_prefixes(value)
        headers.add(name, value)
    for name, value in route.config.request_headers:
        headers[name] = value
    rewrite = route.config.rewrite_origin
    if rewrite != "keep":
        _rewrite_origin(headers, rewrite, route)
    forwarded_for = incoming.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{forwarded_for}, {remote}" if forwarded_for else remote
    headers["X-Forwarded-Proto"] = scheme
    headers["X-Forwarded-Host"] = host
    return headers


def _rewrite_origin(headers: CIMultiDict[str], rewrite: str, route: Route) -> None:
    """Some APIs check Origin/Referer themselves; show them one they accept, or none."""
    if rewrite == "none":
        headers.popall("Origin", None)
        headers.popall("Referer", None)
        return
    origin = route.upstream_origin if rewrite == "upstream" else rewrite
    if "Origin" in headers:
        headers["Origin"] = origin
    if "Referer" in headers:
        headers["Referer"] = origin + "/"


async def open_upstream(
    session: aiohttp.ClientSession,
    request: web.Request,
    route: Route,
    target: URL,
    headers: CIMultiDict[str],
) -> aiohttp.ClientResponse:
    """Send the request upstream and return once the response headers have arrived."""
    body = request.content if request.body_exists else None
    try:
        return await session.request(
            request.method,
            target,
            headers=headers,
            data=body,
            allow_redirects=False,
            timeout=route.timeout,
            skip_auto_headers=SKIP_AUTO_HEADERS,
            ssl=route.ssl,
        )
    except aiohttp.ServerTimeoutError as error:
        raise UpstreamFailure(
            504, f"upstream {route.config.upstream} timed out ({_describe(error)})"
        ) from error
    except TimeoutError as error:
        raise UpstreamFailure(504, f"upstream {route.config.upstream} timed out") from error
    except aiohttp.ClientConnectorError as error:
        raise UpstreamFailure(
            502, f"cannot connect to upstream {route.config.upstream}: {_describe(error)}"
        ) from error
    except aiohttp.ClientError as error:
        if request.transport is None or request.transport.is_closing():
            # The client hung up before its body was complete: the upstream is not to blame.
            raise UpstreamFailure(502, "client disconnected before sending its whole body") from error
        raise UpstreamFailure(502, f"upstream {route.config.upstream} failed: {_describe(error)}") from error


def response_headers(
    upstream: aiohttp.ClientResponse, request: web.Request, route: Route
) -> CIMultiDict[str]:
    """The upstream's headers minus hop-by-hop ones and its own Access-Control-*,
    which the proxy replaces so the browser never sees two ACAO lines. Cookies and
    redirects are adapted so they work on the proxy's origin (rewrite.py)."""
    return returned_headers(
        upstream.headers, route, scheme=request.scheme, host=request_authority(request) or ""
    )


def returned_headers(
    received: Mapping[str, str], route: Route, *, scheme: str, host: str
) -> CIMultiDict[str]:
    """``response_headers`` for an upstream answer known by its headers, given the scheme
    and Host the client reached the proxy with."""
    listed = connection_listed(received.get("Connection"))
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in received.items():
        lower = name.lower()
        if lower.startswith("access-control-") or is_hop_by_hop(lower, listed):
            continue
        if lower == "set-cookie":
            value = rewrite_set_cookie(
                value,
                route.cookie_policy,
                proxy_is_https=scheme == "https",
                upstream_base_path=route.base_path,
                proxy_prefix=route.prefix,
                strip_prefix=route.config.strip_prefix,
            )
        elif lower == "location" and route.config.rewrite_redirects:
            value = (
                rewrite_location(
                    value,
                    upstream_base=route.base,
                    proxy_base=URL.build(scheme=scheme, authority=host),
                    proxy_prefix=route.prefix,
                    strip_prefix=route.config.strip_prefix,
                )
                or value
            )
        headers.add(name, value)
    return headers


async def stream_response(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    response: web.StreamResponse,
    on_failure: Callable[[str], None],
) -> None:
    """Copy the body chunk by chunk. If the upstream breaks mid-body the client
    connection is aborted, so the client sees a truncated body, never a complete-looking one."""
    try:
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(READ_CHUNK):
            await response.write(chunk)
        await response.write_eof()
    except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as error:
        on_failure(f"upstream body broke off: {_describe(error)}")
        upstream.close()
        if request.transport is not None:
            request.transport.abort()
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        # The client went away: stop reading the upstream and drop that connection.
        on_failure("client disconnected")
        upstream.close()
    finally:
        upstream.release()


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.replace("\n", " ")
