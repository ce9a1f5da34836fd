"""The aiohttp application: one handler that follows the request flow of the design.

route match ─► classify ─► policy decision ─► preflight answered here
                                           └► actual request forwarded, streamed back
and before any response is prepared: upstream Access-Control-* dropped, ours added,
Vary appended.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from corsproxy.config import Config
from corsproxy.cors_headers import PREFLIGHT_VARY_TOKENS, VARY_ORIGIN, add_cors_headers
from corsproxy.exchanges import Exchange, ExchangeLog
from corsproxy.guards import HostGuard, request_authority
from corsproxy.inspector import add_inspector_routes
from corsproxy.message_checks import dot_segment_refusal, transfer_coding_refusal, undecodable_header
from corsproxy.policy import NO_ORIGIN, Decision, Policy
from corsproxy.reload import watch_config
from corsproxy.routing import Route, Router, match_path
from corsproxy.upstream import (
    UpstreamFailure,
    create_session,
    open_upstream,
    response_headers,
    stream_response,
    upstream_headers,
)
from corsproxy.version import __version__
from corsproxy.websocket import is_websocket_upgrade, proxy_websocket

log = logging.getLogger("corsproxy")

OWN_PREFIX = "/__corsproxy/"


@dataclass(frozen=True)
class Runtime:
    """Everything compiled from one configuration; replaced whole, never edited."""

    config: Config
    policy: Policy
    router: Router
    host_guard: HostGuard

    @classmethod
    def build(cls, config: Config) -> Runtime:
        return cls(config, Policy(config.rules), Router(config.routes), HostGuard(config.server))


class RequestSeen(Protocol):
    """What the log line and the inspector need of a request: an aiohttp request, or
    one the front door served itself (frontdoor.py)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query_string(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...


class ResponseSeen(Protocol):
    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...


@dataclass
class Outcome:
    """What happened to one request, gathered for the log line and the inspector."""

    request: RequestSeen
    response: ResponseSeen
    started: float
    decision: Decision
    preflight: bool = False
    error: str | None = None
    upstream_url: URL | None = None
    upstream_headers: CIMultiDict[str] | None = None
    upstream_ms: float | None = None

    def forwarded(self, url: URL, headers: CIMultiDict[str], upstream_ms: float | None) -> Outcome:
        self.upstream_url, self.upstream_headers, self.upstream_ms = url, headers, upstream_ms
        return self


@dataclass
class FrontDoorCounts:
    """Requests the front door served itself, and connections it handed to aiohttp."""

    served: int = 0
    handed_off: int = 0


class ProxyState:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.front_door = FrontDoorCounts()
        self.started = time.time()
        self.exchanges = ExchangeLog()
        self._session: aiohttp.ClientSession | None = None
        # Requests forwarded at once; fixed at start (the client pool is sized with it).
        self.upstream_slots = asyncio.Semaphore(runtime.config.server.max_upstream_connections)

    def finish(self, outcome: Outcome) -> None:
        """One log line and one inspector record per request."""
        request, decision = outcome.request, outcome.decision
        elapsed = (time.perf_counter() - outcome.started) * 1000
        status = outcome.response.status
        if log.isEnabledFor(logging.INFO):
            log.info(
                "%s %s origin=%s -> %d %.1fms upstream=%s%s cors: %s%s",
                request.method,
                request.path,
                request.headers.get("Origin", "-"),
                status,
                elapsed,
                "-" if outcome.upstream_ms is None else f"{outcome.upstream_ms:.1f}ms",
                " preflight" if outcome.preflight else "",
                decision.reason if decision.allowed else "REFUSED, " + decision.reason,
                f" error: {outcome.error}" if outcome.error else "",
            )
        self.exchanges.add(
            Exchange(
                id=self.exchanges.next_id(),
                started=time.time() - elapsed / 1000,
                method=request.method,
                path=request.path,
                query=request.query_string,
                origin=request.headers.get("Origin"),
                preflight=outcome.preflight,
                status=status,
                duration_ms=elapsed,
                upstream_ms=outcome.upstream_ms,
                allowed=decision.allowed,
                reason=decision.reason,
                rule=decision.rule,
                request_headers=request.headers,
                response_headers=outcome.response.headers,
                upstream_request_headers=outcome.upstream_headers,
                upstream_url=None if outcome.upstream_url is None else str(outcome.upstream_url),
                error=outcome.error,
                secrets=self.runtime.config.secrets,
            )
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the proxy's client session is not open: is the app running?")
        return self._session


STATE = web.AppKey("corsproxy_state", ProxyState)


def create_app(config: Config, watch: Path | None = None) -> web.Application:
    """The proxy as an aiohttp application, ready for ``web.run_app`` or a test server.
    With ``watch``, that config file is reloaded when it changes."""
    state = ProxyState(Runtime.build(config))
    size = config.server.max_header_size
    app = web.Application(
        handler_args={
            # Longer request lines or header fields get a 400 naming the limit from the parser.
            "max_line_size": size,
            "max_field_size": size,
            # Request bodies reach the upstream byte for byte, whatever their
            # Content-Encoding: decoded here while the original Content-Length went on,
            # a body would end early and the upstream would read the next request on its
            # connection as the rest of it (request smuggling).
            "auto_decompress": False,
        },
    )
    app[STATE] = state
    app.cleanup_ctx.append(_client_session)
    if watch is not None:
        app.cleanup_ctx.append(_config_watcher(watch))
    app.router.add_get(OWN_PREFIX + "health", health)
    add_inspector_routes(app)
    app.router.add_route("*", OWN_PREFIX + "{tail:.*}", own_not_found)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def _config_watcher(path: Path) -> Callable[[web.Application], AsyncIterator[None]]:
    async def run(app: web.Application) -> AsyncIterator[None]:
        state = app[STATE]

        def apply(config: Config) -> None:
            # Swapped whole: a request in flight keeps the Runtime it started with.
            state.runtime = Runtime.build(config)

        task = asyncio.create_task(watch_config(path, state.runtime.config, apply))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return run


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    state._session = create_session(app[STATE].runtime.config.server.max_upstream_connections)
    yield
    await state._session.close()
    state._session = None


def host_refusal(request: web.Request) -> web.Response | None:
    """The DNS-rebinding guard, called first by every handler. A plain call rather than a
    middleware: aiohttp wraps the handler anew for every request when a middleware is set."""
    guard = request.app[STATE].runtime.host_guard
    host = request_authority(request)
    return None if guard.allows(host) else guard.refusal(host)


def message_refusal(request: web.Request) -> web.Response | None:
    """A request the proxy cannot pass on as received (message_checks.py), answered with a
    4xx or 501 that says why."""
    reason = dot_segment_refusal(request.rel_url.raw_path) or undecodable_header(request.headers.items())
    if reason is not None:
        return web.Response(status=400, text=reason + "\n")
    reason = transfer_coding_refusal(request.headers.get("Transfer-Encoding"))
    if reason is not None:
        response = web.Response(status=501, text=reason + "\n")
        response.force_close()
        return response
    return None


def declined_upgrade(request: web.Request) -> bool:
    """An Upgrade the proxy does not take (anything but a WebSocket). Its parser stops at
    such a request and would take pipelined requests behind it for the new protocol, so
    the connection closes after the answer, as a client that pipelines expects it may
    (RFC 9112 section 9.3.2), and no request is silently lost. The upgrade itself is
    declined as RFC 9110 section 7.8 allows: Upgrade is not forwarded."""
    return "Upgrade" in request.headers and not is_websocket_upgrade(request)


async def health(request: web.Request) -> web.Response:
    refused = host_refusal(request)
    if refused is not None:
        return refused
    state = request.app[STATE]
    config = state.runtime.config
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            # Tells --workers processes apart.
            "pid": os.getpid(),
            "config": config.source,
            "routes": [{"path": route.path, "upstream": route.upstream} for route in config.routes],
            "uptime_seconds": round(time.time() - state.started, 3),
            "front_door": {"served": state.front_door.served, "handed_off": state.front_door.handed_off},
        }
    )


async def own_not_found(request: web.Request) -> web.Response:
    refused = host_refusal(request)
    if refused is not None:
        return refused
    return web.Response(
        status=404,
        text=f"{request.path}: no such corsproxy endpoint; /__corsproxy/ belongs to the proxy itself\n",
    )


async def proxy(request: web.Request) -> web.StreamResponse:
    response = await forward_or_answer(request)
    if not response.prepared and declined_upgrade(request):
        response.force_close()
    return response


async def forward_or_answer(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    refused = host_refusal(request)
    if refused is not None:
        return refused
    state = request.app[STATE]
    runtime = state.runtime
    origin = request.headers.get("Origin")
    method = request.method
    # Routes and rules are matched on one path, so they never disagree about a request.
    path = match_path(request.rel_url.raw_path)

    refusal = message_refusal(request)
    if refusal is not None:
        decision = NO_ORIGIN if origin is None else runtime.policy.actual(path, origin)
        add_cors_headers(refusal.headers, decision, VARY_ORIGIN)
        state.finish(Outcome(request, refusal, started, decision, error=refusal.text))
        return refusal

    # Fetch standard, CORS-preflight request: OPTIONS carrying both Origin and
    # Access-Control-Request-Method. Any other OPTIONS is an ordinary request.
    requested_method = request.headers.get("Access-Control-Request-Method")
    if origin is not None and method == "OPTIONS" and requested_method is not None:
        private_network = request.headers.get("Access-Control-Request-Private-Network") == "true"
        decision = runtime.policy.preflight(
            path,
            origin,
            requested_method,
            request.headers.get("Access-Control-Request-Headers"),
            private_network,
        )
        response = answer_preflight(decision)
        state.finish(Outcome(request, response, started, decision, preflight=True))
        return response

    decision = NO_ORIGIN if origin is None else runtime.policy.actual(path, origin)
    route = runtime.router.match(path)
    if route is None:
        prefixes = ", ".join(r.prefix for r in runtime.router.routes)
        response = web.Response(status=404, text=f"no route for {request.path} (routes: {prefixes})\n")
        add_cors_headers(response.headers, decision, VARY_ORIGIN)
        state.finish(Outcome(request, response, started, decision, error="no route"))
        return response

    refusal = refuse_before_forwarding(request, route, decision)
    if refusal is not None:
        add_cors_headers(refusal.headers, decision, VARY_ORIGIN)
        state.finish(Outcome(request, refusal, started, decision, error=refusal.text))
        return refusal

    target = route.target(request.rel_url.raw_path, request.rel_url.raw_query_string)
    sent_headers = upstream_headers(request, route)
    try:
        if is_websocket_upgrade(request):
            return await open_websocket(request, state, route, decision, target, sent_headers, started)
        await take_upstream_slot(state, route)
        try:
            upstream = await open_upstream(state.session, request, route, target, sent_headers)
            return await relay(request, route, state, upstream, decision, started, target, sent_headers)
        finally:
            state.upstream_slots.release()
    except UpstreamFailure as failure:
        # CORS headers on the proxy's own errors too (README, "How the proxy decides"), so the page
        # can read "502 cannot connect" instead of a misleading CORS error.
        response = web.Response(status=failure.status, text=failure.message + "\n")
        add_cors_headers(response.headers, decision, VARY_ORIGIN)
        log.warning("%s %s: %s", method, request.path, failure.message)
        outcome = Outcome(request, response, started, decision, error=failure.message)
        state.finish(outcome.forwarded(target, sent_headers, None))
        return response


async def relay(
    request: web.Request,
    route: Route,
    state: ProxyState,
    upstream: aiohttp.ClientResponse,
    decision: Decision,
    started: float,
    target: URL,
    sent_headers: CIMultiDict[str],
) -> web.StreamResponse:
    """Stream the upstream's answer back with our CORS headers in place of its own."""
    method = request.method
    upstream_ms = (time.perf_counter() - started) * 1000
    headers = response_headers(upstream, request, route)
    add_cors_headers(headers, decision, VARY_ORIGIN)
    streamed = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    if declined_upgrade(request):
        streamed.force_close()
    outcome = Outcome(request, streamed, started, decision).forwarded(target, sent_headers, upstream_ms)

    def note_failure(reason: str) -> None:
        outcome.error = reason
        log.warning("%s %s: %s", method, request.path, reason)

    await stream_response(request, upstream, streamed, note_failure)
    state.finish(outcome)
    return streamed


async def open_websocket(
    request: web.Request,
    state: ProxyState,
    route: Route,
    decision: Decision,
    target: URL,
    sent_headers: CIMultiDict[str],
    started: float,
) -> web.StreamResponse:
    """WebSockets are not subject to CORS in the browser, so the proxy checks Origin
    itself: a page from a disallowed origin is refused before the upgrade."""
    if request.headers.get("Origin") is not None and not decision.allowed:
        refused = web.Response(status=403, text=f"WebSocket refused by corsproxy: {decision.reason}\n")
        state.finish(Outcome(request, refused, started, decision, error="websocket refused"))
        return refused
    response = await proxy_websocket(request, state.session, target, sent_headers, route)
    state.finish(Outcome(request, response, started, decision).forwarded(target, sent_headers, None))
    return response


def credentials_refusal(
    headers: Mapping[str, str], method: str, route: Route, decision: Decision, policy: Policy
) -> str | None:
    """Why a request must not reach a route that injects credentials, or None."""
    if not route.config.guards_credentials:
        return None
    # A simple request needs no preflight, so without this check any website could
    # spend the developer's injected API key (docs/design.md, "Refused"). Browsers send no
    # Origin on no-cors GETs, but they do send Sec-Fetch-Site (Fetch Metadata).
    origin = headers.get("Origin")
    if origin is not None:
        reason = decision.reason if not decision.allowed else policy.method_refusal(decision, method)
    elif headers.get("Sec-Fetch-Site") == "cross-site":
        reason = "a cross-site request without Origin"
    else:
        reason = None
    if reason is None:
        return None
    return (
        f"corsproxy refused to forward: {reason}. Route {route.prefix} injects "
        "credentials (request_headers), so requests its rules do not allow are not "
        "forwarded; set refuse_disallowed_origins: false on the route to change that\n"
    )


def refuse_before_forwarding(request: web.Request, route: Route, decision: Decision) -> web.Response | None:
    """Requests the proxy will not forward at all, with a 4xx that says why."""
    policy = request.app[STATE].runtime.policy
    refused = credentials_refusal(request.headers, request.method, route, decision, policy)
    if refused is not None:
        return web.Response(status=403, text=refused)
    limit = route.config.max_body_size
    length = request.content_length
    if limit is not None and length is not None and length > limit:
        return web.Response(
            status=413,
            text=f"request body of {length} bytes is over route {route.prefix}'s max_body_size of {limit}\n",
        )
    if limit is not None and length is None and request.body_exists:
        return web.Response(
            status=411,
            text=f"route {route.prefix} has a max_body_size: send Content-Length with the body\n",
        )
    return None


async def take_upstream_slot(state: ProxyState, route: Route) -> None:
    """One of server.max_upstream_connections; the caller releases it. When all are taken,
    wait up to the route's connect timeout, then answer 503."""
    slots = state.upstream_slots
    if not slots.locked():
        # A free slot is taken at once; a timeout would cost a timer on every request.
        await slots.acquire()
        return
    try:
        async with asyncio.timeout(route.config.connect_timeout):
            await slots.acquire()
    except TimeoutError:
        limit = state.runtime.config.server.max_upstream_connections
        raise UpstreamFailure(
            503, f"too many requests in flight to upstreams (server.max_upstream_connections: {limit})"
        ) from None


def answer_preflight(decision: Decision) -> web.Response:
    """204 with the CORS headers, or 403 whose body says what failed. Never forwarded."""
    status, headers, body = preflight_answer(decision)
    return web.Response(status=status, headers=headers, body=body)


@functools.lru_cache(maxsize=4096)
def preflight_answer(decision: Decision) -> tuple[int, tuple[tuple[str, str], ...], bytes | None]:
    """Decisions are cached per request shape, so their answers are built once too."""
    headers: CIMultiDict[str] = CIMultiDict()
    add_cors_headers(headers, decision, PREFLIGHT_VARY_TOKENS)
    if decision.allowed:
        return 204, tuple(headers.items()), None
    headers["Content-Type"] = "text/plain; charset=utf-8"
    body = f"CORS preflight refused by corsproxy: {decision.reason}\n".encode()
    return 403, tuple(headers.items()), body
