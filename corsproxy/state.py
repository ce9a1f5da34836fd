"""The state both transports share: the compiled configuration, counts, the exchange
record, and what happened to each request (an Outcome), logged and recorded once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from corsproxy.config.model import Config, ConfigError
from corsproxy.cors.policy import Decision, Policy
from corsproxy.errors import UpstreamBusy
from corsproxy.exchanges import Captured, Exchange, ExchangeLog
from corsproxy.log_writer import request_line, requests_logged
from corsproxy.message.host import HostGuard
from corsproxy.mocks import AddedMocks, Mocks
from corsproxy.recording import Recorder
from corsproxy.replay import Replay
from corsproxy.simulate import Simulator
from corsproxy.upstream.aiohttp_client import AiohttpClient
from corsproxy.upstream.route import Route, Router

log = logging.getLogger("corsproxy")


@dataclass(frozen=True)
class Runtime:
    """Everything compiled from one configuration; replaced whole, never edited."""

    config: Config
    policy: Policy
    router: Router
    host_guard: HostGuard
    mocks: Mocks
    # Recording and replay (recording.py, replay.py), each None when off.
    recorder: Recorder | None
    replay: Replay | None

    @classmethod
    def build(cls, config: Config, added_mocks: AddedMocks | None = None) -> Runtime:
        """``added_mocks``: those added for this run, shared by every Runtime of a proxy."""
        return cls(
            config,
            Policy(config.rules, config.source),
            Router(config.routes),
            HostGuard(config.server),
            Mocks(config.mocks, added_mocks),
            None if config.record is None else Recorder(config.record, config.secrets),
            None if config.replay is None else Replay(config.replay),
        )


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
    # Who answered, when not the upstream or the proxy's own CORS engine: "mock[0]".
    source: str | None = None
    # What a simulated bad network did to it (simulate.py): "latency 312ms, 503".
    simulated: str | None = None
    # The bodies as the inspector keeps them; a proxy-made answer's is taken from it.
    request_body: Captured | None = None
    response_body: Captured | None = None

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
        self.exchanges = ExchangeLog(max_body_bytes=runtime.config.inspector.max_total)
        # Lives as long as the proxy: its switches and added entries survive a reload.
        self.simulator = Simulator(runtime.config.simulate, runtime.config.seed)
        # Requests being forwarded now: the shutdown message counts them.
        self.in_flight = 0
        # The last config change hot reload refused, until a good one loads.
        self.rejected_reload: ConfigError | None = None
        self._session: aiohttp.ClientSession | None = None
        self._client: AiohttpClient | None = None
        # Requests forwarded at once; fixed at start (the client pool is sized with it).
        self.upstream_slots = asyncio.Semaphore(runtime.config.server.max_upstream_connections)

    def finish(self, outcome: Outcome) -> None:
        """One log line and one inspector record per request."""
        request, decision = outcome.request, outcome.decision
        elapsed = (time.perf_counter() - outcome.started) * 1000
        status = outcome.response.status
        if requests_logged():
            upstream_ms = "-" if outcome.upstream_ms is None else f"{outcome.upstream_ms:.1f}ms"
            request_line(
                f"{request.method} {request.path} origin={request.headers.get('Origin', '-')} "
                f"-> {status} {elapsed:.1f}ms upstream={upstream_ms}"
                f"{f' answered by {outcome.source}' if outcome.source else ''}"
                f"{' preflight' if outcome.preflight else ''} cors: {cors_verdict(decision)}"
                f"{f' simulated: {outcome.simulated}' if outcome.simulated else ''}"
                f"{f' error: {outcome.error}' if outcome.error else ''}"
            )
        # A refusal or failure the proxy answered itself is never shown as "allowed".
        proxy_answer = (
            outcome.error is not None
            and (status >= 400 or status == 0)
            and outcome.upstream_ms is None
            and not outcome.preflight
        )
        if proxy_answer:
            reason = f"{status} from corsproxy, not the upstream: {outcome.error}"
        else:
            reason = decision.browser_blocks or decision.reason
        response_body = outcome.response_body
        if response_body is None and outcome.upstream_url is None:
            # Not forwarded: an answer the proxy made, whose body is at hand.
            response_body = self._made_body(outcome.response)
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
                allowed=decision.allowed and decision.browser_blocks is None and not proxy_answer,
                reason=reason,
                rule=decision.rule,
                request_headers=request.headers,
                response_headers=outcome.response.headers,
                upstream_request_headers=outcome.upstream_headers,
                upstream_url=None if outcome.upstream_url is None else str(outcome.upstream_url),
                error=outcome.error,
                secrets=self.runtime.config.secrets,
                secret_names=self.runtime.config.secret_names,
                proxy_answer=proxy_answer,
                source=outcome.source or ("upstream" if outcome.upstream_url is not None else "corsproxy"),
                simulated=outcome.simulated,
                request_body=outcome.request_body,
                response_body=response_body,
            )
        )

    def _made_body(self, response: ResponseSeen) -> Captured | None:
        """The body of an answer the proxy made itself (a refusal, a mock, a replay)."""
        body = getattr(response, "body", None)
        if not body or not isinstance(body, bytes):
            return None  # a preflight, most often: nothing to keep
        limit = self.runtime.config.inspector.max_body
        if not limit:
            return None
        # Made by the proxy: never encoded, whatever the headers say.
        captured = Captured(limit, {"Content-Type": response.headers.get("Content-Type", "")})
        captured.add(body)
        return captured

    def capture(self, headers: Mapping[str, str]) -> Captured | None:
        """A new capture for a body with these headers, or None when capture is off."""
        limit = self.runtime.config.inspector.max_body
        if not limit:
            return None
        return Captured(limit, headers)

    def rejected_reload_summary(self) -> dict[str, object] | None:
        """The config edit hot reload refused, as /health and the inspector show it."""
        rejected = self.rejected_reload
        return None if rejected is None else {"source": rejected.source, "errors": rejected.errors}

    async def close_clients(self) -> None:
        """Close aiohttp's client session if shutdown was cut short before it could."""
        session, self._session, self._client = self._session, None, None
        if session is not None and not session.closed:
            await session.close()

    @property
    def client(self) -> AiohttpClient:
        """aiohttp's client over the session: the aiohttp transport's UpstreamClient."""
        if self._client is None:
            raise RuntimeError("the proxy's client session is not open: is the app running?")
        return self._client

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the proxy's client session is not open: is the app running?")
        return self._session


STATE = web.AppKey("corsproxy_state", ProxyState)


def cors_verdict(decision: Decision) -> str:
    """The log line's word on CORS: never "allowed" where the browser will block."""
    if decision.browser_blocks is not None:
        return "BLOCKED by the browser, " + decision.browser_blocks
    return decision.reason if decision.allowed else "REFUSED, " + decision.reason


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
        raise UpstreamBusy(
            f"too many requests in flight to upstreams (server.max_upstream_connections: {limit})"
        ) from None
