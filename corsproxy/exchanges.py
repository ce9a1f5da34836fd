"""The record of recent exchanges through the proxy, for the inspector and its API.

A bounded ring buffer: recording is an append of references to header objects that
are no longer edited once the response is sent, so it costs next to nothing on the
request path. Listeners (the inspector's live stream) get each new exchange.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from corsproxy.secrets import redact

DEFAULT_CAPACITY = 500


class Captured:
    """A body as the inspector keeps it: its bytes as they went over the wire, up to
    ``limit``, and how many there were in all. Decoded only when shown (inspector/bodies.py)."""

    __slots__ = ("data", "headers", "limit", "size")

    def __init__(self, limit: int, headers: Mapping[str, str] | None = None) -> None:
        self.limit = limit
        self.data = bytearray()
        self.size = 0
        # The headers the body came with, looked at only when it is shown.
        self.headers = headers

    @property
    def content_type(self) -> str | None:
        return None if self.headers is None else self.headers.get("Content-Type")

    @property
    def content_encoding(self) -> str | None:
        return None if self.headers is None else self.headers.get("Content-Encoding")

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room] if len(chunk) > room else chunk

    @property
    def cut(self) -> bool:
        return self.size > len(self.data)


@dataclass(slots=True)
class Exchange:
    id: int
    started: float  # wall-clock seconds
    method: str
    path: str
    query: str
    origin: str | None
    preflight: bool
    status: int
    duration_ms: float
    upstream_ms: float | None
    allowed: bool
    reason: str
    rule: int | None
    request_headers: Mapping[str, str]
    response_headers: Mapping[str, str]
    # Headers as they were sent upstream (None when the request was not forwarded).
    upstream_request_headers: Mapping[str, str] | None = None
    upstream_url: str | None = None
    error: str | None = None
    secrets: frozenset[str] = field(default_factory=frozenset)
    # The answer is corsproxy's own (a refusal, or a failure to reach the upstream), not
    # the upstream's: whatever its CORS headers, it is not the answer the page asked for.
    proxy_answer: bool = False
    # Who answered: "upstream", "corsproxy" (a preflight, a refusal, a failure) or "mock[0]".
    source: str = "upstream"
    # What a simulated bad network did to this request, if anything: "latency 312ms, 503".
    simulated: str | None = None
    # The bodies, as far as the inspector keeps them (inspector.max_body).
    request_body: Captured | None = None
    response_body: Captured | None = None
    # (value, VAR) of each injected value: a copied command shows $VAR in its place.
    secret_names: tuple[tuple[str, str], ...] = ()

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.started,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "origin": self.origin,
            "preflight": self.preflight,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 2),
            "upstream_ms": None if self.upstream_ms is None else round(self.upstream_ms, 2),
            "cors": {"allowed": self.allowed, "reason": self.reason, "rule": self.rule},
            "error": self.error,
            "source": self.source,
            "simulated": self.simulated,
        }

    def browser_verdict(self) -> dict[str, Any] | None:
        """What the browser concludes from the response the proxy sent, by the same checks
        as `corsproxy check` (browser.py). Computed when asked for, never on the request path."""
        if self.origin is None:
            return None
        from corsproxy.check.browser import BrowserRequest, check_preflight, check_response
        from corsproxy.headers import split_list

        answer = list(self.response_headers.items())
        requested = split_list(self.request_headers.get("Access-Control-Request-Headers"))
        method = self.request_headers.get("Access-Control-Request-Method", "")
        if self.preflight:
            # A preflight carries no cookies, so whether the page will use credentials is unknown.
            credentials = False
            request = BrowserRequest.from_preflight(self.origin, method, requested, credentials)
            findings = check_preflight(request, self.status, answer)
        else:
            # A browser sends Cookie only in credentials mode "include" (or same-site "same-origin").
            credentials = "Cookie" in self.request_headers
            findings = check_response(BrowserRequest(self.origin, self.method, (), credentials), answer)
        listed = [{"code": str(f.code), "message": f.message} for f in findings]
        if self.proxy_answer:
            # Readable or not, it is not the answer the page asked for: never a green verdict.
            message = f"corsproxy answered {self.status} itself, not the upstream: {self.error}"
            listed.append({"code": "answered-by-corsproxy", "message": message})
        verdict: dict[str, Any] = {
            "allowed": not listed,
            "credentials_assumed": credentials,
            "findings": listed,
        }
        if not credentials:
            # No Cookie says the page did not use credentials, or had none yet: the proxy
            # cannot know the mode, so the other one is judged too.
            if self.preflight:
                request = BrowserRequest.from_preflight(self.origin, method, requested, True)
                other = check_preflight(request, self.status, answer)
            else:
                other = check_response(BrowserRequest(self.origin, self.method, (), True), answer)
            verdict["with_credentials"] = {
                "allowed": not other and not self.proxy_answer,
                "findings": [{"code": str(f.code), "message": f.message} for f in other],
            }
        return verdict

    def detail(self) -> dict[str, Any]:
        data = self.summary()
        data["browser"] = self.browser_verdict()
        data["request_headers"] = _redacted(self.request_headers.items(), self.secrets)
        data["response_headers"] = _redacted(self.response_headers.items(), self.secrets)
        data["upstream_request"] = (
            None
            if self.upstream_request_headers is None
            else {
                "url": redact(self.upstream_url or "", self.secrets),
                "headers": _redacted(self.upstream_request_headers.items(), self.secrets),
                # For "copy as cURL": each injected value as a reference to its variable.
                "url_with_references": _referenced(self.upstream_url or "", self.secret_names),
                "headers_with_references": [
                    [name, _referenced(value, self.secret_names)]
                    for name, value in self.upstream_request_headers.items()
                ],
            }
        )
        return data


def _referenced(text: str, names: tuple[tuple[str, str], ...]) -> str:
    """``text`` with each injected value replaced by ``$VAR``, longest value first."""
    for value, name in sorted(names, key=lambda pair: len(pair[0]), reverse=True):
        if value and value in text:
            text = text.replace(value, f"${name}")
    return text


def _redacted(items: Iterable[tuple[str, str]], secrets: frozenset[str]) -> list[list[str]]:
    return [[name, redact(value, secrets)] for name, value in items]


Listener = Callable[[Exchange], None]


class ExchangeLog:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, max_body_bytes: int = 64 * 1024 * 1024) -> None:
        self._items: deque[Exchange] = deque(maxlen=capacity)
        self._ids = itertools.count(1)
        self._listeners: list[Listener] = []
        # Bodies kept in all, at most max_body_bytes: the oldest exchanges lose theirs first.
        self.max_body_bytes = max_body_bytes
        self.body_bytes = 0
        self._with_bodies: deque[Exchange] = deque()

    def next_id(self) -> int:
        return next(self._ids)

    def add(self, exchange: Exchange) -> None:
        if len(self._items) == self._items.maxlen:
            oldest = self._items[0]
            # Both are in the order exchanges came: the oldest is first in each.
            if self._with_bodies and self._with_bodies[0] is oldest:
                self._with_bodies.popleft()
            self._drop_bodies(oldest)
        self._items.append(exchange)
        if exchange.request_body is None and exchange.response_body is None:
            kept = 0
        else:
            kept = _body_bytes(exchange)
        if kept:
            self.body_bytes += kept
            self._with_bodies.append(exchange)
            while self.body_bytes > self.max_body_bytes and self._with_bodies:
                self._drop_bodies(self._with_bodies.popleft())
        for listener in self._listeners:
            listener(exchange)

    def _drop_bodies(self, exchange: Exchange) -> None:
        self.body_bytes -= _body_bytes(exchange)
        exchange.request_body = exchange.response_body = None

    def clear(self) -> None:
        """Forget every exchange (the inspector's "clear"); ids go on counting."""
        self._items.clear()
        self._with_bodies.clear()
        self.body_bytes = 0

    def recent(self, limit: int | None = None) -> list[Exchange]:
        """Newest first."""
        items = list(reversed(self._items))
        return items if limit is None else items[:limit]

    def get(self, exchange_id: int) -> Exchange | None:
        for exchange in self._items:
            if exchange.id == exchange_id:
                return exchange
        return None

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)


def _body_bytes(exchange: Exchange) -> int:
    request, response = exchange.request_body, exchange.response_body
    return (0 if request is None else len(request.data)) + (0 if response is None else len(response.data))


def now() -> float:
    return time.time()
