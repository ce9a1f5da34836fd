"""The aiohttp transport: the handler that turns a plan (flow.py) into an aiohttp answer.

It serves what the front door hands it: request bodies, WebSockets, HEAD, HTTP/1.0, the
proxy's own pages, and heads the front door does not parse. The flow, the answers and the
record are the ones the front door uses (flow.py, answers.py, state.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import NamedTuple

from aiohttp import StreamReader, web
from aiohttp.http import HttpVersion11

from corsproxy.answers import (
    Answer,
    decorate,
    failure_answer,
    mock_answer,
    preflight_answer,
    refusal_answer,
    replay_answer,
    replay_miss_answer,
)
from corsproxy.config.model import Config, ConfigError
from corsproxy.config.reload import watch_config
from corsproxy.errors import UpstreamBrokeOff, UpstreamError
from corsproxy.exchanges import Captured
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
from corsproxy.inspector.routes import add_inspector_routes
from corsproxy.message.host import host_refusal, request_authority
from corsproxy.recording import Tape
from corsproxy.replay import is_conditional
from corsproxy.server import simulation
from corsproxy.simulate import Simulated
from corsproxy.state import STATE, Outcome, ProxyState, Runtime, take_upstream_slot
from corsproxy.upstream.aiohttp_client import AiohttpAnswer, AiohttpClient, create_session
from corsproxy.upstream.route import match_path
from corsproxy.upstream.websocket import proxy_websocket
from corsproxy.version import __version__

log = logging.getLogger("corsproxy")


def create_app(
    config: Config, watch: Path | None = None, adjust: Callable[[Config], Config] | None = None
) -> web.Application:
    """The proxy as an aiohttp application, ready for ``web.run_app`` or a test server.
    With ``watch``, that config file is reloaded when it changes, each new config passed
    through ``adjust`` (what the command line sets on top of the file)."""
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
        app.cleanup_ctx.append(_config_watcher(watch, adjust or (lambda loaded: loaded)))
    app.router.add_get(OWN_PREFIX + "health", health)
    add_inspector_routes(app)
    app.router.add_route("*", OWN_PREFIX + "{tail:.*}", own_not_found)
    app.router.add_route("*", "/{tail:.*}", proxy, expect_handler=expect_continue)
    return app


def _config_watcher(
    path: Path, adjust: Callable[[Config], Config]
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def run(app: web.Application) -> AsyncIterator[None]:
        state = app[STATE]

        def apply(config: Config) -> None:
            # Swapped whole: a request in flight keeps the Runtime it started with.
            state.runtime = Runtime.build(config, state.runtime.mocks.added)
            state.simulator.load(config.simulate, config.seed)
            state.rejected_reload = None

        def reject(error: ConfigError) -> None:
            state.rejected_reload = error

        watching = watch_config(path, state.runtime.config, apply, reject=reject, adjust=adjust)
        task = asyncio.create_task(watching)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return run


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    state._session = create_session(app[STATE].runtime.config.server.max_upstream_connections)
    state._client = AiohttpClient(state._session)
    yield
    await state._session.close()
    state._session = state._client = None


async def health(request: web.Request) -> web.Response:
    refused = host_refusal(request.app[STATE].runtime.host_guard, request)
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
            "routes": [
                {"path": route.path, "upstream": route.upstream, "strip_prefix": route.strip_prefix}
                for route in config.routes
            ],
            "uptime_seconds": round(time.time() - state.started, 3),
            "front_door": {"served": state.front_door.served, "handed_off": state.front_door.handed_off},
            # A config change that hot reload refused: the proxy still serves the last good one.
            "rejected_reload": state.rejected_reload_summary(),
        }
    )


async def own_not_found(request: web.Request) -> web.Response:
    refused = host_refusal(request.app[STATE].runtime.host_guard, request)
    if refused is not None:
        return refused
    return web.Response(
        status=404,
        text=f"{request.path}: no such corsproxy endpoint; /__corsproxy/ belongs to the proxy itself\n",
    )


def request_head(request: web.Request) -> RequestHead:
    """What the flow reads of an aiohttp request."""
    raw_path = request.rel_url.raw_path
    return RequestHead(
        method=request.method,
        path=match_path(raw_path),
        raw_path=raw_path,
        query_string=request.rel_url.raw_query_string,
        headers=request.headers,
        authority=request_authority(request),
        scheme=request.scheme,
        remote=request.remote or "",
        content_length=request.content_length,
        has_body=request.body_exists,
    )


async def expect_continue(request: web.Request) -> None:
    """RFC 9110 section 10.1.1: "100 Continue" asks for the body, so it is sent only for a
    request the proxy will forward; a refusal is answered without reading the body.
    An expectation the proxy does not know is answered 417, as aiohttp does."""
    expect = request.headers.get("Expect", "")
    if request.version != HttpVersion11:
        return
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
    if isinstance(plan(request_head(request), request.app[STATE].runtime), Forward | Replayed):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # aiohttp's own handler does this too: the answer's body has not started yet.
        request.writer.output_size = 0


def as_response(answer: Answer) -> web.Response:
    return web.Response(status=answer.status, headers=answer.headers, body=answer.body)


async def proxy(request: web.Request) -> web.StreamResponse:
    """Every request that is not the proxy's own page: the flow's plan, carried out."""
    started = time.perf_counter()
    state = request.app[STATE]
    head = request_head(request)
    decided = plan(head, state.runtime)
    simulated = None
    simulator = state.simulator
    if simulator.active and not isinstance(decided, Refuse):
        preflight = isinstance(decided, Preflight)
        simulated = simulator.draw(head.method, head.path, preflight)
        if simulated is not None and simulated.fail is not None:
            return await simulation.fail(
                request, state, head, decided.decision, simulated, started, preflight
            )
    read: BodyStart | None = None
    if isinstance(decided, Replayed):
        read = await read_start(request.content) if head.has_body else BodyStart(b"", True)
        replayed = answer_replayed(head, decided, read, started)
        if replayed is not None:
            return await simulation.deliver(request, state, *replayed, simulated)
        decided = plan_route(head, state.runtime, decided.decision, decided.close)
    if isinstance(decided, Preflight):
        status, headers, body = preflight_answer(decided.decision)
        response = web.Response(status=status, headers=headers, body=body)
        if decided.close:
            response.force_close()
        outcome = Outcome(head, response, started, decided.decision, preflight=True)
        return await simulation.deliver(request, state, response, outcome, simulated)
    if isinstance(decided, Refuse):
        response = as_response(refusal_answer(decided))
        if decided.close:
            response.force_close()
        if decided.recorded:
            state.finish(
                Outcome(head, response, started, decided.decision, error=decided.error or decided.reason)
            )
        return response
    if isinstance(decided, Mock):
        answer, error = mock_answer(decided)
        response = as_response(answer)
        if decided.close:
            response.force_close()
        outcome = Outcome(head, response, started, decided.decision, error=error, source=decided.mock.label)
        return await simulation.deliver(request, state, response, outcome, simulated)
    state.in_flight += 1
    try:
        if decided.websocket:
            if simulated is not None and simulated.latency:
                await asyncio.sleep(simulated.latency)  # before the upgrade's answer
            return await open_websocket(request, state, head, decided, started)
        return await forward(request, state, head, decided, started, read, simulated)
    finally:
        state.in_flight -= 1


# The most of a request body read to compare it with recorded ones; a longer body matches
# no entry and is forwarded as it streams.
REPLAY_BODY_LIMIT = 16 * 1024 * 1024


class BodyStart(NamedTuple):
    """The start of a request body read ahead: all of it when ``complete``."""

    data: bytes
    complete: bool


async def read_start(content: StreamReader) -> BodyStart:
    data = bytearray()
    while len(data) <= REPLAY_BODY_LIMIT:
        piece = await content.readany()
        if not piece:
            return BodyStart(bytes(data), True)
        data += piece
    return BodyStart(bytes(data), False)


def answer_replayed(
    head: RequestHead, replayed: Replayed, body: BodyStart, started: float
) -> tuple[web.Response, Outcome] | None:
    """A recorded answer, or replay.miss's 404, and its record; None for a miss that goes
    on as usual."""
    recorded = None
    if body.complete:
        recorded = replayed.replay.take(
            replayed.found,
            body.data,
            method=head.method,
            content_encoding=head.headers.get("Content-Encoding"),
            conditional=is_conditional(head.headers),
        )
    if recorded is not None:
        answer = replay_answer(replayed, recorded, scheme=head.scheme, authority=head.authority or "")
        error = None
    elif replayed.replay.answers_misses:
        answer = replay_miss_answer(replayed, head.method, head.path, head.query_string)
        error = "no recorded answer (replay.miss: 404)"
    else:
        return None
    response = as_response(answer)
    if replayed.close:
        response.force_close()
    return response, Outcome(head, response, started, replayed.decision, error=error, source="replay")


async def request_body(
    request: web.Request,
    head: RequestHead,
    read: BodyStart | None,
    tape: Tape | None,
    captured: Captured | None,
) -> StreamReader | bytes | AsyncIterator[bytes] | None:
    """What is sent upstream as the body: the client's stream, after what was read ahead,
    copied to the recording and the inspector's capture as it goes."""
    if not head.has_body:
        return None
    if read is not None and read.complete:
        if tape is not None:
            tape.request_chunk(read.data)
        if captured is not None:
            captured.add(read.data)
        return read.data
    if read is None and tape is None and captured is None:
        return request.content

    def copy(piece: bytes) -> None:
        if tape is not None:
            tape.request_chunk(piece)
        if captured is not None:
            captured.add(piece)

    async def chunks() -> AsyncIterator[bytes]:
        if read is not None:
            copy(read.data)
            yield read.data
        async for piece in request.content.iter_any():
            copy(piece)
            yield piece

    return chunks()


async def forward(
    request: web.Request,
    state: ProxyState,
    head: RequestHead,
    forwarding: Forward,
    started: float,
    read: BodyStart | None = None,
    simulated: Simulated | None = None,
) -> web.StreamResponse:
    """Send the request upstream and stream its answer back, decorated (answers.py)."""
    recorder = forwarding.recorder
    tape = None if recorder is None else recorder.tape(head.method, forwarding.target, forwarding.headers)
    request_capture = None
    if head.has_body and forwarding.route.config.inspector.bodies:
        request_capture = state.capture(head.headers)
    try:
        await take_upstream_slot(state, forwarding.route)
        try:
            answer = await state.client.send(
                forwarding.route,
                head.method,
                forwarding.target,
                forwarding.headers,
                await request_body(request, head, read, tape, request_capture),
                client_closed=lambda: request.transport is None or request.transport.is_closing(),
            )
            return await relay(
                request, state, head, forwarding, answer, started, tape, simulated, request_capture
            )
        finally:
            state.upstream_slots.release()
    except UpstreamError as error:
        return answer_failure(state, head, forwarding, error, started)


def answer_failure(
    state: ProxyState, head: RequestHead, forwarding: Forward, error: UpstreamError, started: float
) -> web.Response:
    """The proxy's own answer when the upstream gave none (answers.py), logged and recorded."""
    response = as_response(failure_answer(error, forwarding.decision))
    if forwarding.close:
        response.force_close()  # a declined Upgrade (docs/design.md)
    log.warning("%s %s: %s", head.method, head.path, error.message)
    outcome = Outcome(head, response, started, forwarding.decision, error=error.message)
    state.finish(outcome.forwarded(forwarding.target, forwarding.headers, None))
    return response


async def relay(
    request: web.Request,
    state: ProxyState,
    head: RequestHead,
    forwarding: Forward,
    answer: AiohttpAnswer,
    started: float,
    tape: Tape | None = None,
    simulated: Simulated | None = None,
    request_capture: Captured | None = None,
) -> web.StreamResponse:
    """Stream the upstream's answer back with our CORS headers in place of its own."""
    upstream_ms = (time.perf_counter() - started) * 1000
    pacer = None
    if simulated is not None:
        # After the upstream's head, so upstream= in the log stays the upstream's own time.
        if simulated.latency:
            await asyncio.sleep(simulated.latency)
        if simulated.throttle is not None:
            pacer = simulation.Pacer(simulated.throttle)
    if tape is not None:
        tape.answered(answer.status, answer.reason, answer.headers)
    headers = decorate(answer.headers, forwarding, scheme=head.scheme, authority=head.authority or "")
    streamed = web.StreamResponse(status=answer.status, reason=answer.reason, headers=headers)
    if forwarding.close:
        streamed.force_close()
    outcome = Outcome(head, streamed, started, forwarding.decision, request_body=request_capture)
    outcome.forwarded(forwarding.target, forwarding.headers, upstream_ms)
    if simulated is not None:
        outcome.simulated = simulated.said
    captured = outcome.response_body = state.capture(answer.headers)
    try:
        await streamed.prepare(request)
        async for chunk in answer.chunks():
            if tape is not None:
                tape.chunk(chunk)
            if captured is not None:
                captured.add(chunk)
            if pacer is None:
                await streamed.write(chunk)
            else:
                await pacer.write(streamed.write, chunk)
        await streamed.write_eof()
        if tape is not None:
            tape.finish()
    except UpstreamBrokeOff as broke:
        if tape is not None:
            tape.finish(str(broke))
        # The client must see a truncated body, never a complete-looking one.
        outcome.error = str(broke)
        log.warning("%s %s: %s", head.method, head.path, outcome.error)
        if request.transport is not None:
            request.transport.abort()
    except asyncio.CancelledError:
        # Shutdown's grace period ran out mid-body: what arrived is recorded, marked.
        if tape is not None:
            tape.finish("cut short: corsproxy shut down mid-body")
        raise
    except ConnectionResetError:
        if tape is not None:
            tape.finish("the client disconnected before the body ended")
        # The client went away: stop reading the upstream and drop that connection.
        outcome.error = "client disconnected"
        log.warning("%s %s: %s", head.method, head.path, outcome.error)
        answer.abort()
    finally:
        answer.release()
    state.finish(outcome)
    return streamed


async def open_websocket(
    request: web.Request, state: ProxyState, head: RequestHead, forwarding: Forward, started: float
) -> web.StreamResponse:
    """Relay a WebSocket (the flow has checked its Origin: browsers apply no CORS to them)."""
    try:
        response = await proxy_websocket(
            request, state.session, forwarding.target, forwarding.headers, forwarding.route
        )
    except UpstreamError as error:
        return answer_failure(state, head, forwarding, error, started)
    outcome = Outcome(head, response, started, forwarding.decision)
    state.finish(outcome.forwarded(forwarding.target, forwarding.headers, None))
    return response
