"""Carrying out a simulated bad network (simulate.py) on the aiohttp transport, which serves
every request a ``simulate`` entry matches (the front door hands them over): latency
before the answer's head, a body paced to the throttle, a failure instead of the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from corsproxy.answers import simulated_failure_answer
from corsproxy.cors.policy import Decision
from corsproxy.flow import RequestHead
from corsproxy.simulate import Simulated
from corsproxy.state import Outcome, ProxyState

# How often a throttled body is topped up: small enough that the rate is smooth, large
# enough that a fast rate is not a write per few bytes.
PACING_STEPS_PER_SECOND = 10


class Pacer:
    """Keeps a body at or under ``rate`` bytes a second: a piece goes out once the bytes
    sent so far and it are due, so by any moment t after the start at most rate x t bytes
    have been delivered, as over a link of that speed."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.step = max(1, rate // PACING_STEPS_PER_SECOND)
        self.began: float | None = None
        self.sent = 0

    async def write(self, write: Callable[[bytes], Awaitable[None]], data: bytes) -> None:
        loop = asyncio.get_running_loop()
        if self.began is None:
            self.began = loop.time()
        view = memoryview(data)
        for offset in range(0, len(data), self.step):
            piece = bytes(view[offset : offset + self.step])
            self.sent += len(piece)
            delay = self.began + self.sent / self.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await write(piece)


async def deliver(
    request: web.Request,
    state: ProxyState,
    response: web.Response,
    outcome: Outcome,
    simulated: Simulated | None,
) -> web.StreamResponse:
    """An answer the proxy made (a preflight, refusal, mock or replay), after the
    simulated latency and at the simulated rate; recorded once it is sent."""
    if simulated is None:
        state.finish(outcome)
        return response
    outcome.simulated = simulated.said
    if simulated.latency:
        await asyncio.sleep(simulated.latency)
    body = response.body
    if simulated.throttle is None or not isinstance(body, bytes) or not body or request.method == "HEAD":
        state.finish(outcome)
        return response
    paced = web.StreamResponse(status=response.status, reason=response.reason, headers=response.headers)
    paced.content_length = len(body)
    outcome.response = paced
    try:
        await paced.prepare(request)
        await Pacer(simulated.throttle).write(paced.write, body)
        await paced.write_eof()
    except ConnectionResetError:
        outcome.error = "client disconnected"
    state.finish(outcome)
    return paced


async def fail(
    request: web.Request,
    state: ProxyState,
    head: RequestHead,
    decision: Decision,
    simulated: Simulated,
    started: float,
    preflight: bool,
) -> web.StreamResponse:
    """A simulated failure instead of the answer: a status with CORS headers, a connection
    closed without an answer, or no answer until the client gives up."""
    failure = simulated.fail
    assert failure is not None
    if simulated.latency:
        await asyncio.sleep(simulated.latency)
    if failure.mode == "status":
        answer = simulated_failure_answer(failure, decision, simulated.said)
        response = web.Response(status=answer.status, headers=answer.headers, body=answer.body)
        outcome = Outcome(head, response, started, decision, preflight=preflight, simulated=simulated.said)
        outcome.error = f"simulated {failure.status}"
        state.finish(outcome)
        return response
    # Never sent: the connection is closed (reset) or the client is gone (hang).
    nothing = web.Response(status=499)
    outcome = Outcome(head, _NoAnswer(), started, decision, preflight=preflight, simulated=simulated.said)
    transport = request.transport
    if failure.mode == "reset":
        outcome.error = "simulated reset: closed without an answer"
        if transport is not None:
            transport.abort()
        state.finish(outcome)
        return nothing
    outcome.error = "simulated hang: no answer until the client gave up"
    try:
        # aiohttp tells a handler nothing when its client goes (handlers are not cancelled,
        # as under `corsproxy serve`): the transport is looked at five times a second.
        while transport is not None and not transport.is_closing():  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    except asyncio.CancelledError:
        # Cancelled because the client went (with handler cancellation on) or at shutdown.
        if transport is not None and not transport.is_closing():
            outcome.error = "simulated hang: no answer until corsproxy stopped"
        state.finish(outcome)
        raise
    state.finish(outcome)
    return nothing


class _NoAnswer:
    """What the record says of a request that got no answer: status 0, as browsers' HARs do."""

    status = 0
    headers: dict[str, str] = {}  # noqa: RUF012 (never written)
