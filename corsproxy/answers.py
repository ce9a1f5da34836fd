"""Every answer the proxy sends is built here, once for both transports.

A preflight's answer, a refusal, the proxy's own failure (502, 503, 504) and an upstream's
decorated answer: the transports (server/) only turn these into bytes. CORS headers go on
every status (README, "How the proxy decides"), so the page reads the real error instead
of a misleading CORS error.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from multidict import CIMultiDict

from corsproxy.config.model import FailConfig
from corsproxy.cors.policy import ACEH, Decision
from corsproxy.cors.response import PREFLIGHT_VARY_TOKENS, VARY_ORIGIN, add_cors_headers
from corsproxy.errors import UpstreamError
from corsproxy.flow import Forward, Mock, Refuse, Replayed
from corsproxy.har.reader import RecordedExchange
from corsproxy.headers import split_list
from corsproxy.upstream.header_rules import returned_headers

TEXT_PLAIN = "text/plain; charset=utf-8"
# On every answer corsproxy makes itself instead of the upstream's (a refusal, a failure):
# tools (`corsproxy check`) tell them from the upstream's own 404s and 502s by it.
ANSWER_MARK = "Corsproxy-Answer"
REPLAY = "replay"
# A recorded answer's framing is the proxy's to set from the body it serves, and the body
# is stored decoded (HAR), so the recorded coding no longer applies.
RECORDED_FRAMING = frozenset({"content-length", "content-encoding", "transfer-encoding"})


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer the proxy makes itself: a short plain-text body that says why."""

    status: int
    headers: CIMultiDict[str]
    body: bytes


def text_answer(status: int, text: str, decision: Decision | None, kind: str) -> Answer:
    headers: CIMultiDict[str] = CIMultiDict()
    headers["Content-Type"] = TEXT_PLAIN
    headers[ANSWER_MARK] = kind
    if decision is not None:
        add_cors_headers(headers, decision, VARY_ORIGIN)
    return Answer(status, headers, (text + "\n").encode())


def refusal_answer(refuse: Refuse) -> Answer:
    return text_answer(refuse.status, refuse.reason, refuse.decision if refuse.cors else None, "refused")


def mock_answer(mocked: Mock) -> tuple[Answer, str | None]:
    """A mock's answer: its status, headers and body, with the rules' CORS headers as on
    every answer, so the page reads it as it would the real API's. A file that cannot
    be read gives a 500 that names it; the second value says so for the log."""
    mock = mocked.mock
    body = mock.body()
    if body.missing is not None:
        return text_answer(500, body.missing, mocked.decision, "failed"), body.missing
    headers: CIMultiDict[str] = CIMultiDict()
    if body.content_type is not None:
        headers["Content-Type"] = body.content_type
    for name, value in mock.config.headers:
        headers[name] = value
    headers[ANSWER_MARK] = mock.label
    add_cors_headers(headers, mocked.decision, VARY_ORIGIN)
    return Answer(mock.config.status, headers, body.content), None


def replay_answer(replayed: Replayed, recorded: RecordedExchange, *, scheme: str, authority: str) -> Answer:
    """A recorded answer shaped as a live one is (``decorate``): the recorded CORS,
    hop-by-hop and framing headers out, cookies and redirects adapted for the route (or
    for the recorded URL's origin when no route matches), the rules' CORS headers in."""
    route = replayed.route or replayed.replay.route_for(recorded)
    kept = [(name, value) for name, value in recorded.headers if name.lower() not in RECORDED_FRAMING]
    if not any(name.lower() == "content-type" for name, _ in kept) and recorded.mime_type and recorded.body:
        kept.append(("Content-Type", recorded.mime_type))
    headers = returned_headers(CIMultiDict(kept), route, scheme=scheme, host=authority)
    headers[ANSWER_MARK] = REPLAY
    add_cors_headers(headers, replayed.decision, VARY_ORIGIN)
    # RFC 9110 sections 15.3.5 and 15.4.5: a 204 or 304 has no content, whatever was stored.
    body = b"" if recorded.status in (204, 304) else recorded.body
    return Answer(recorded.status, headers, body)


def replay_miss_answer(replayed: Replayed, method: str, path: str, query_string: str) -> Answer:
    """replay.miss: 404. The request had no recorded answer: say which were the closest."""
    replay = replayed.replay
    shown = f"{method} {path}" + (f"?{query_string}" if query_string else "")
    text = f"no recorded answer in {replay.file} for {shown}"
    closest = replay.closest(method, path, query_string)
    if replayed.found:
        text += " with this body; the same request was recorded with another body"
    elif closest:
        text += "; closest recorded: " + ", ".join(closest)
    else:
        text += f" ({len(replay)} entries recorded, none like it)"
    return text_answer(404, text, replayed.decision, "replay-miss")


def simulated_failure_answer(fail: FailConfig, decision: Decision, said: str) -> Answer:
    """A simulated failure's answer: its status, with the rules' CORS headers so the page
    reads the status under test instead of a CORS error, and Retry-After when set."""
    answer = text_answer(fail.status, f"simulated by corsproxy: {said}", decision, "simulated")
    if fail.retry_after is not None:
        answer.headers["Retry-After"] = str(fail.retry_after)
        if decision.allowed:
            # Not a safelisted response header (Fetch standard): exposed, so the retry logic
            # under test can read it whatever the rule's expose_headers say.
            exposed = split_list(answer.headers.get(ACEH))
            if "retry-after" not in (name.lower() for name in exposed):
                answer.headers[ACEH] = ", ".join([*exposed, "Retry-After"])
    return answer


def failure_answer(error: UpstreamError, decision: Decision) -> Answer:
    """The proxy's answer when the upstream gave none: 502, 503 or 504 naming the cause."""
    return text_answer(error.status, error.message, decision, "failed")


@functools.lru_cache(maxsize=4096)
def preflight_answer(decision: Decision) -> tuple[int, tuple[tuple[str, str], ...], bytes | None]:
    """204 with the CORS headers, or 403 whose body says what failed. Decisions are cached
    per request shape, so their answers are built once too."""
    headers: CIMultiDict[str] = CIMultiDict()
    add_cors_headers(headers, decision, PREFLIGHT_VARY_TOKENS)
    if decision.allowed:
        return 204, tuple(headers.items()), None
    headers["Content-Type"] = TEXT_PLAIN
    headers[ANSWER_MARK] = "refused"
    body = f"CORS preflight refused by corsproxy: {decision.reason}\n".encode()
    return 403, tuple(headers.items()), body


def decorate(
    received: Mapping[str, str], forward: Forward, *, scheme: str, authority: str
) -> CIMultiDict[str]:
    """An upstream answer's headers as the client gets them: the upstream's own
    Access-Control-* and hop-by-hop headers out, cookies and redirects adapted, the
    decision's CORS headers in, Vary appended (docs/design.md)."""
    headers = returned_headers(received, forward.route, scheme=scheme, host=authority)
    add_cors_headers(headers, forward.decision, VARY_ORIGIN)
    return headers
