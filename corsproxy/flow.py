"""The request flow, written once for both transports: a request head in, a plan out.

    head ─► Host: well-formed, and one the proxy answers to        400 / 403 (message/host.py)
         ─► the message: dot segments, header bytes, codings        400 / 501 (message/checks.py)
         ─► classify (Fetch standard): OPTIONS with Origin and
            Access-Control-Request-Method is a preflight            Preflight(decision)
         ─► decide: the first rule whose path and origin match      (cors/policy.py, cached)
         ─► mock: the first mock whose path, method, query match    Mock(mock, decision)
         ─► replay: recorded entries for the method, path, query    Replayed(entries, decision)
            (the body is compared by the transport, which has it)
         ─► route: the longest prefix of the match path             404 naming the routes
         ─► guards: credentials, WebSocket origin, body size        403 / 413 / 411
         ─► Forward(route, decision, target URL, headers to send)

Pure: a head and the Runtime in, a plan out, no I/O. Heads and plans are values (named
tuples: immutable, and built in a fraction of a frozen dataclass's time on the hot path).
The transports (server/) turn a plan into bytes, and every answer they send is built by
answers.py, so a capability added here works on both at once.
"""

from __future__ import annotations

from typing import NamedTuple

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from corsproxy.cors.policy import NO_ORIGIN, Decision
from corsproxy.headers import split_list
from corsproxy.message.checks import dot_segment_refusal, transfer_coding_refusal, undecodable_header
from corsproxy.mocks import CompiledMock
from corsproxy.recording import Recorder
from corsproxy.replay import Candidate, Replay
from corsproxy.state import Runtime
from corsproxy.upstream.header_rules import forwarded_headers
from corsproxy.upstream.route import Route

# The proxy's own pages; never forwarded.
OWN_PREFIX = "/__corsproxy/"

Headers = CIMultiDict[str] | CIMultiDictProxy[str]


class RequestHead(NamedTuple):
    """What the flow reads of a request: both transports make one from what they parsed."""

    method: str
    path: str  # upstream/route.py match_path: routes and rules are matched on it
    raw_path: str  # as received, percent-encoded
    query_string: str  # as received
    headers: Headers
    authority: str | None  # an absolute-form target's, else Host (message/host.py)
    scheme: str  # how the client reached the proxy
    remote: str  # the client's address
    content_length: int | None
    has_body: bool
    # Every byte of the head is ASCII, as the front door sees from the raw bytes at once;
    # False when unknown (aiohttp's), and the header bytes are checked.
    ascii: bool = False


class Preflight(NamedTuple):
    """Answered by the proxy from the decision: 204 with CORS headers, or 403 saying why."""

    decision: Decision
    # Close the connection after the answer: a declined Upgrade (docs/design.md).
    close: bool = False


class Refuse(NamedTuple):
    """Not forwarded: ``status`` with ``reason`` as the body. The decision's CORS headers go
    on the answer, so the page can read why, unless ``cors`` is False (a Host refused
    before any CORS decision, a WebSocket, which browsers apply no CORS to)."""

    status: int
    reason: str
    decision: Decision
    cors: bool = True
    # Close the connection after the answer: the rest of the message cannot be trusted,
    # or an Upgrade was declined (docs/design.md).
    close: bool = False
    # Host refusals are not recorded: a rebinding page's requests are not the developer's.
    recorded: bool = True
    # What the log line and the inspector say beside the decision; None: the reason.
    error: str | None = None


class Forward(NamedTuple):
    """Sent to the route's upstream at ``target`` with ``headers``; the answer streamed back."""

    route: Route
    decision: Decision
    target: URL
    headers: CIMultiDict[str]
    websocket: bool
    # An Upgrade the proxy declines: the connection closes after the answer (docs/design.md).
    close: bool
    # Recording to HAR (recording.py), or None.
    recorder: Recorder | None = None


class Mock(NamedTuple):
    """Answered by the proxy from a mock (mocks.py), with the decision's CORS headers."""

    mock: CompiledMock
    decision: Decision
    close: bool = False


class Replayed(NamedTuple):
    """Answered from a recorded entry (replay.py) once the transport has compared the
    request's body with ``found``'s. On a miss, ``replay.answers_misses`` says what
    follows: the 404 naming the closest entries, or ``plan_route``'s plan, as without a
    replay."""

    replay: Replay
    found: tuple[Candidate, ...]
    decision: Decision
    route: Route | None
    close: bool


Plan = Preflight | Refuse | Mock | Replayed | Forward

# What a refusal of the Host is recorded as: no CORS decision was made.
HOST_REFUSED = Decision(False, "the Host is not one the proxy answers to")


def plan(head: RequestHead, runtime: Runtime) -> Plan:
    """What to do with a request, top to bottom as in the module's docstring."""
    guard = runtime.host_guard
    if not guard.allows(head.authority):
        status, text = guard.refusal(head.authority)
        return Refuse(status, text, HOST_REFUSED, cors=False, close=declined_upgrade(head), recorded=False)
    headers = head.headers
    origin = headers.get("Origin")
    method = head.method
    close = "Upgrade" in headers and declined_upgrade(head)

    raw_path = head.raw_path
    # Most requests have nothing the message checks could refuse: skip them at once.
    plain = head.ascii and "." not in raw_path and "%" not in raw_path and "Transfer-Encoding" not in headers
    refused = None if plain else _message_refusal(head)
    if refused is not None:
        status, reason = refused
        decision = NO_ORIGIN if origin is None else runtime.policy.actual(head.path, origin)
        return Refuse(status, reason, decision, close=close or status == 501)

    # Fetch standard, CORS-preflight request: OPTIONS carrying both Origin and
    # Access-Control-Request-Method. Any other OPTIONS is an ordinary request.
    requested_method = headers.get("Access-Control-Request-Method")
    if origin is not None and method == "OPTIONS" and requested_method is not None:
        decision = runtime.policy.preflight(
            head.path,
            origin,
            requested_method,
            headers.get("Access-Control-Request-Headers"),
            headers.get("Access-Control-Request-Private-Network") == "true",
        )
        return Preflight(decision, close)

    credentialed = origin is not None and "Cookie" in headers
    decision = NO_ORIGIN if origin is None else runtime.policy.actual(head.path, origin, credentialed)
    mocked = runtime.mocks.match(method, head.path, head.query_string)
    if mocked is not None:
        return Mock(mocked, decision, close)
    replay = runtime.replay
    # A WebSocket is never replayed: HAR holds no messages.
    if replay is not None and "Upgrade" not in headers:
        route = runtime.router.match(head.path)
        target = None if route is None else route.target(head.raw_path, head.query_string)
        found = replay.lookup(method, head.path, head.query_string, target)
        if found or replay.answers_misses:
            return Replayed(replay, found, decision, route, close)
    return plan_route(head, runtime, decision, close)


def plan_route(head: RequestHead, runtime: Runtime, decision: Decision, close: bool) -> Refuse | Forward:
    """What follows the mocks and the replay: the route, its guards, the forward."""
    route = runtime.router.match(head.path)
    if route is None:
        prefixes = ", ".join(r.prefix for r in runtime.router.routes)
        return Refuse(404, f"no route for {head.path} (routes: {prefixes})", decision, close=close)

    websocket = is_websocket_upgrade(head)
    refused_here = _guard_refusal(head, route, decision, runtime, websocket)
    if refused_here is not None:
        return refused_here
    sent = forwarded_headers(
        head.headers, route, remote=head.remote, scheme=head.scheme, host=head.authority or ""
    )
    target = route.target(head.raw_path, head.query_string)
    return Forward(route, decision, target, sent, websocket, close, None if websocket else runtime.recorder)


def declined_upgrade(head: RequestHead) -> bool:
    """An Upgrade the proxy does not take (anything but a WebSocket). aiohttp's parser stops
    at such a request and would take pipelined requests behind it for the new protocol, so
    the connection closes after the answer, as a client that pipelines expects it may
    (RFC 9112 section 9.3.2), and no request is silently lost. The upgrade itself is
    declined as RFC 9110 section 7.8 allows: Upgrade is not forwarded."""
    return "Upgrade" in head.headers and not is_websocket_upgrade(head)


def _message_refusal(head: RequestHead) -> tuple[int, str] | None:
    """A message the proxy cannot pass on as received (docs/design.md, "Refused")."""
    reason = dot_segment_refusal(head.raw_path)
    if reason is None and not head.ascii:
        reason = undecodable_header(head.headers.items())
    if reason is not None:
        return 400, reason
    reason = transfer_coding_refusal(head.headers.get("Transfer-Encoding"))
    if reason is not None:
        return 501, reason
    return None


def _guard_refusal(
    head: RequestHead, route: Route, decision: Decision, runtime: Runtime, websocket: bool
) -> Refuse | None:
    """Requests the proxy will not forward to this route, with a 4xx that says why."""
    close = declined_upgrade(head)
    refused = credentials_refusal(head, route, decision, runtime)
    if refused is not None:
        # The log line names a refused origin's reason already; any other reason is said here.
        error = f"not forwarded: route {route.prefix} injects credentials"
        if refused != decision.reason:
            error += f": {refused}"
        body = (
            f"corsproxy refused to forward: {refused}. Route {route.prefix} injects "
            "credentials (request_headers), so requests its rules do not allow are not "
            "forwarded; set refuse_disallowed_origins: false on the route to change that"
        )
        return Refuse(403, body, decision, close=close, error=error)
    if websocket and head.headers.get("Origin") is not None and not decision.allowed:
        # Browsers apply no CORS to WebSockets (RFC 6455 section 10.2): the proxy checks
        # Origin itself, before the upgrade.
        return Refuse(403, f"WebSocket refused by corsproxy: {decision.reason}", decision, cors=False)
    limit = route.config.max_body_size
    length = head.content_length
    if limit is not None and length is not None and length > limit:
        return Refuse(
            413,
            f"request body of {length} bytes is over route {route.prefix}'s max_body_size of {limit}",
            decision,
            close=close,
        )
    if limit is not None and length is None and head.has_body:
        return Refuse(
            411,
            f"route {route.prefix} has a max_body_size: send Content-Length with the body",
            decision,
            close=close,
        )
    return None


def credentials_refusal(head: RequestHead, route: Route, decision: Decision, runtime: Runtime) -> str | None:
    """Why a request must not reach a route that injects credentials, or None: a refused
    origin's reason, a method its rule does not list, or a cross-site request."""
    if not route.config.guards_credentials:
        return None
    # A simple request needs no preflight, so without this check any website could
    # spend the developer's injected API key (docs/design.md, "Refused"). Browsers send no
    # Origin on no-cors GETs, but they do send Sec-Fetch-Site (Fetch Metadata).
    headers = head.headers
    if headers.get("Origin") is not None:
        allowed = decision.allowed
        reason = runtime.policy.method_refusal(decision, head.method) if allowed else decision.reason
    elif headers.get("Sec-Fetch-Site") == "cross-site":
        reason = "a cross-site request without Origin"
    else:
        reason = None
    return reason


def is_websocket_upgrade(head: RequestHead) -> bool:
    """A GET asking to switch to the WebSocket protocol (RFC 6455 section 4.1, items 2, 5
    and 6: GET, ``Upgrade: websocket`` and a ``Connection`` header listing ``upgrade``,
    both case-insensitive)."""
    if head.method != "GET":
        return False
    headers = head.headers
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        return False
    connection = ",".join(headers.getall("Connection", ()))
    return "upgrade" in (token.lower() for token in split_list(connection))
