"""One request the front door serves itself, from its plan to exactly one record.

The connection (frontdoor.py) parses the head and asks the flow for a plan; an exchange
carries the plan out: a preflight or a refusal answered at once, or a forward over the lean
client, streamed back with flow control, or the proxy's own failure answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from multidict import CIMultiDict

from corsproxy.answers import (
    Answer,
    decorate,
    failure_answer,
    mock_answer,
    refusal_answer,
    replay_answer,
    replay_miss_answer,
)
from corsproxy.cors.policy import Decision
from corsproxy.errors import ProxyStopping, UpstreamBrokeOff, UpstreamError
from corsproxy.exchanges import Captured
from corsproxy.flow import Forward, Mock, Preflight, Refuse, Replayed, RequestHead
from corsproxy.har.reader import RecordedExchange
from corsproxy.recording import Tape
from corsproxy.server.wire import LAST_CHUNK, answer_bytes, chunk, http_date, preflight_bytes, serialize_head
from corsproxy.state import Outcome, ProxyState, take_upstream_slot
from corsproxy.upstream.lean_client import LeanAnswer, LeanClient

log = logging.getLogger("corsproxy")

# aiohttp's client sends Content-Length: 0 for any other method when there is no body;
# so does the front door, so the upstream sees the same request either way.
BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class Connection(Protocol):
    """What an exchange needs of its client connection (frontdoor.py's FrontDoor)."""

    state: ProxyState
    lean: LeanClient
    transport: asyncio.Transport | None
    lost: bool
    closing: bool
    write_paused: bool

    def write(self, data: bytes) -> None: ...
    def write_chunk(self, data: bytes) -> None: ...


@dataclass(slots=True)
class FrontAnswer:
    """What the record needs of an answer the front door sent."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""  # an answer the proxy made: the inspector keeps it


def answer_preflight(
    door: Connection, head: RequestHead, keep_alive: bool, started: float, preflight: Preflight
) -> bool:
    """Write the cached answer to a preflight; True when the connection must close after it."""
    status, headers, answer_head, body = preflight_bytes(preflight.decision)
    close = preflight.close or not keep_alive or door.closing
    ending = b"Connection: close\r\n\r\n" if close else b"\r\n"
    door.write(b"%sDate: %s\r\n%s%s" % (answer_head, http_date().encode(), ending, body))
    outcome = Outcome(head, FrontAnswer(status, headers), started, preflight.decision, preflight=True)
    door.state.finish(outcome)
    return close


def answer_refusal(
    door: Connection, head: RequestHead, keep_alive: bool, started: float, refuse: Refuse
) -> bool:
    """Write a refusal (answers.py); True when the connection must close after it."""
    answer = refusal_answer(refuse)
    close = refuse.close or not keep_alive or door.closing
    door.write(answer_bytes(answer, close))
    if refuse.recorded:
        outcome = Outcome(
            head, FrontAnswer(answer.status, answer.headers, answer.body), started, refuse.decision
        )
        outcome.error = refuse.error or refuse.reason
        door.state.finish(outcome)
    return close


def answer_mock(door: Connection, head: RequestHead, keep_alive: bool, started: float, mocked: Mock) -> bool:
    """Write a mock's answer (answers.py); True when the connection must close after it."""
    answer, error = mock_answer(mocked)
    decision, close = mocked.decision, mocked.close
    return answer_standing_in(
        door, head, keep_alive, started, answer, decision, close, error=error, source=mocked.mock.label
    )


def answer_replayed(
    door: Connection,
    head: RequestHead,
    keep_alive: bool,
    started: float,
    replayed: Replayed,
    recorded: RecordedExchange | None,
) -> bool:
    """Write a recorded answer, or replay.miss's 404 (answers.py); True when the
    connection must close after it."""
    if recorded is not None:
        answer = replay_answer(replayed, recorded, scheme=head.scheme, authority=head.authority or "")
        error = None
    else:
        answer = replay_miss_answer(replayed, head.method, head.path, head.query_string)
        error = "no recorded answer (replay.miss: 404)"
    decision, close = replayed.decision, replayed.close
    return answer_standing_in(
        door, head, keep_alive, started, answer, decision, close, error=error, source="replay"
    )


def answer_standing_in(
    door: Connection,
    head: RequestHead,
    keep_alive: bool,
    started: float,
    answer: Answer,
    decision: Decision,
    plan_close: bool,
    *,
    error: str | None,
    source: str,
) -> bool:
    """Write an answer that stands in for the upstream's (a mock's, a recorded one) and
    record it with who gave it; True when the connection must close after it."""
    close = plan_close or not keep_alive or door.closing
    door.write(answer_bytes(answer, close))
    sent = FrontAnswer(answer.status, answer.headers, answer.body)
    door.state.finish(Outcome(head, sent, started, decision, error=error, source=source))
    return close


class FrontExchange:
    """One request the front door forwards, from the plan to exactly one record."""

    __slots__ = ("answer", "answered", "door", "head", "keep_alive", "started", "state", "tape")

    def __init__(self, door: Connection, head: RequestHead, keep_alive: bool, started: float) -> None:
        self.door = door
        self.state = door.state
        self.head = head
        self.keep_alive = keep_alive
        self.started = started
        self.answer: LeanAnswer | None = None  # the upstream answer being relayed
        self.answered = False  # the answer's head has gone to the client
        self.tape: Tape | None = None  # recording to HAR (recording.py)

    def must_close(self, plan_close: bool = False) -> bool:
        return plan_close or not self.keep_alive or self.door.closing

    # forwarded

    async def forward(self, forwarding: Forward) -> bool:
        """Forward over the lean client and relay the answer; True when the connection
        must close after it. Exactly one record, whatever happens."""
        head, state = self.head, self.state
        sent = forwarding.headers
        if head.method not in BODYLESS_METHODS and "Content-Length" not in sent:
            sent["Content-Length"] = "0"
        close = self.must_close(forwarding.close)
        recorder = forwarding.recorder
        if recorder is not None:
            self.tape = recorder.tape(head.method, forwarding.target, sent)
        state.in_flight += 1
        try:
            await take_upstream_slot(state, forwarding.route)
            try:
                answer = await self.door.lean.send(
                    forwarding.route, head.method, forwarding.target, sent, None
                )
                close = await self.relay(forwarding, answer) or close
            finally:
                state.upstream_slots.release()
        except UpstreamError as error:
            close = self.answer_failure(forwarding, error) or close
        except asyncio.CancelledError:
            # The client went away, or shutdown's grace period ran out before the answer.
            if not self.answered:
                if self.door.lost:
                    self.record_disconnect(forwarding)
                else:
                    stopping = ProxyStopping("corsproxy shut down before the upstream answered")
                    self.answer_failure(forwarding, stopping)
            raise
        finally:
            state.in_flight -= 1
        return close

    async def relay(self, forwarding: Forward, answer: LeanAnswer) -> bool:
        """Stream the answer back; True when the client connection must close."""
        head, door = self.head, self.door
        upstream_ms = (time.perf_counter() - self.started) * 1000
        headers = decorate(answer.headers, forwarding, scheme=head.scheme, authority=head.authority or "")
        close = self.must_close(forwarding.close)
        response_head, chunked = serialize_head(answer.status, answer.reason, headers, close)
        outcome = Outcome(head, FrontAnswer(answer.status, headers), self.started, forwarding.decision)
        outcome.forwarded(forwarding.target, forwarding.headers, upstream_ms)
        transport = door.transport
        if door.lost or transport is None:
            answer.abort()
            answer.release()
            outcome.error = "client disconnected"
            self.state.finish(outcome)
            return True
        # The head and the body bytes already here in one gathered write: one send() for a
        # small answer, and no copy into one buffer for a large one.
        tape = self.tape
        parts = [response_head]
        if tape is not None:
            tape.answered(answer.status, answer.reason, answer.headers)
        captured = outcome.response_body = self.state.capture(answer.headers)
        for piece in answer.take_pending():
            if tape is not None:
                tape.chunk(piece)
            if captured is not None:
                captured.add(piece)
            parts += chunk(piece) if chunked else (piece,)
        transport.writelines(parts)
        self.answered = True
        self.answer = answer
        if door.write_paused:
            answer.pause()
        sink: Callable[[bytes], None] = door.write_chunk if chunked else door.write
        if tape is not None or captured is not None:
            sink = tapped_sink(sink, tape, captured)
        try:
            answer.attach(sink)
            await answer.finished()
            if chunked and not door.lost:
                transport.write(LAST_CHUNK)
            if tape is not None:
                tape.finish()
        except asyncio.CancelledError:
            outcome.error = "client disconnected" if door.lost else "cut short: corsproxy shut down mid-body"
            if tape is not None:
                tape.finish(outcome.error)
            if not door.lost:
                transport.abort()  # visibly truncated, never complete-looking
            self.state.finish(outcome)
            raise
        except UpstreamBrokeOff as broke:
            if tape is not None:
                tape.finish(str(broke))
            close = True
            if door.lost:
                outcome.error = "client disconnected"
            else:
                # The client must see a truncated body, never a complete-looking one.
                outcome.error = str(broke)
                log.warning("%s %s: %s", head.method, head.path, outcome.error)
                transport.abort()
        finally:
            self.answer = None
            answer.release()
        self.state.finish(outcome)
        return close

    def answer_failure(self, forwarding: Forward, error: UpstreamError) -> bool:
        """The proxy's own answer when the upstream gave none (answers.py)."""
        answer = failure_answer(error, forwarding.decision)
        close = self.must_close(forwarding.close)
        log.warning("%s %s: %s", self.head.method, self.head.path, error.message)
        if not self.door.lost:
            self.door.write(answer_bytes(answer, close))
        outcome = Outcome(
            self.head,
            FrontAnswer(answer.status, answer.headers, answer.body),
            self.started,
            forwarding.decision,
        )
        outcome.error = error.message
        self.state.finish(outcome.forwarded(forwarding.target, forwarding.headers, None))
        return close

    def record_disconnect(self, forwarding: Forward) -> None:
        # 499: nginx's "client closed request"; no answer was sent.
        outcome = Outcome(self.head, FrontAnswer(499, CIMultiDict()), self.started, forwarding.decision)
        outcome.error = "client disconnected"
        self.state.finish(outcome.forwarded(forwarding.target, forwarding.headers, None))


def tapped_sink(
    sink: Callable[[bytes], None], tape: Tape | None, captured: Captured | None
) -> Callable[[bytes], None]:
    """``sink``, with each piece also given to the recording and the inspector's capture."""
    if tape is None and captured is not None:
        add = captured.add

        def capture_and_write(data: bytes) -> None:
            add(data)
            sink(data)

        return capture_and_write

    def write(data: bytes) -> None:
        if tape is not None:
            tape.chunk(data)
        if captured is not None:
            captured.add(data)
        sink(data)

    return write
