"""Replay: which recorded entry of a HAR answers a request (README, "Replay").

The method must be equal, and the path and query must equal either the request's
proxy-side ones or those of its upstream target: hosts are ignored, so HARs recorded
through corsproxy (upstream URLs), by a browser's DevTools or by Playwright (the page's
URLs, often the proxy's own) all match. Paths are compared as routes and rules see them
(match_path), queries as their decoded pairs in any order. A request with a body matches
an entry with the same body, byte for byte or as equal JSON. Repeated identical requests
get the recorded answers in recorded order; after the last, the last repeats.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

from yarl import URL

from corsproxy.config.model import ReplayConfig, RouteConfig
from corsproxy.har.decode import decode
from corsproxy.har.reader import RecordedExchange
from corsproxy.headers import CACHE_VALIDATORS
from corsproxy.upstream.route import Route, match_path

Query = tuple[tuple[str, str], ...]
Key = tuple[str, str, Query]
EVENT_STREAM = "text/event-stream"
# The most of a request body decoded to compare it (app.py reads at most 16 MiB of it).
MAX_COMPARED_BODY = 64 * 1024 * 1024


def is_conditional(headers: Mapping[str, str]) -> bool:
    """A request a browser makes with a cached copy (RFC 9110 section 13.1)."""
    return any(name in headers for name in CACHE_VALIDATORS)


def query_key(query_string: str) -> Query:
    return tuple(sorted(parse_qsl(query_string, keep_blank_values=True)))


class Candidate(NamedTuple):
    """A recorded exchange, with what matching compares of its request."""

    recorded: RecordedExchange
    key: Key
    body: bytes  # b"" when the request had none


class Replay:
    """A HAR's entries, indexed for matching, and the position reached in each sequence
    of repeats. One per loaded config: a reload starts every sequence again."""

    def __init__(self, config: ReplayConfig) -> None:
        self.file = config.file
        self.answers_misses = config.miss == "404"
        self.candidates: dict[Key, list[Candidate]] = {}
        self.described: list[str] = []
        for recorded in config.entries:
            if not recorded.complete and not recorded.mime_type.startswith(EVENT_STREAM):
                # Cut at record.max_body or broken off: served whole, it would look complete.
                # An event stream is the exception: it ends, and the page reconnects.
                continue
            parts = urlsplit(recorded.url)
            key = (recorded.method, match_path(parts.path or "/"), query_key(parts.query))
            candidate = Candidate(recorded, key, recorded.request_body or b"")
            self.candidates.setdefault(key, []).append(candidate)
            shown = parts.path + (f"?{parts.query}" if parts.query else "")
            self.described.append(f"{recorded.method} {shown}")
        self.positions: dict[tuple[str | int, ...], int] = {}
        self.routes: dict[str, Route] = {}
        self._json: dict[int, str | None] = {}

    def __len__(self) -> int:
        return len(self.described)

    def lookup(self, method: str, path: str, query_string: str, target: URL | None) -> tuple[Candidate, ...]:
        """The entries whose method, path and query match, proxy-side or upstream-side, in
        recorded order; bodies are compared later, by ``take``."""
        query = query_key(query_string) if query_string else ()
        found = list(self.candidates.get((method, path, query), ()))
        if target is not None:
            upstream_key = (method, match_path(target.raw_path), query_key(target.raw_query_string))
            if upstream_key != (method, path, query):
                found += self.candidates.get(upstream_key, ())
        if not found and method == "HEAD":
            return self.lookup("GET", path, query_string, target)
        found.sort(key=lambda candidate: candidate.recorded.position)
        return tuple(found)

    def take(
        self,
        found: tuple[Candidate, ...],
        body: bytes,
        *,
        method: str = "GET",
        content_encoding: str | None = None,
        conditional: bool = False,
    ) -> RecordedExchange | None:
        """The next answer for a ``method`` request with ``body`` among ``found``, or None.
        A body sent with a Content-Encoding is compared decoded, as it was recorded. A 304
        answers only a conditional request (one a browser sends with a cached copy), and a
        conditional request gets the entries recorded for conditional ones when there are."""
        if content_encoding and body:
            body, _, _ = decode(body, content_encoding, MAX_COMPARED_BODY)
        canonical = _canonical_json(body) if body else None
        matching = tuple(
            candidate
            for candidate in found
            if (conditional or candidate.recorded.status != 304)
            and self._same_body(candidate, body, canonical)
        )
        if conditional and any(candidate.recorded.conditional for candidate in matching):
            # Asked with a cached copy: answered as such requests were when recorded.
            matching = tuple(candidate for candidate in matching if candidate.recorded.conditional)
        if not matching:
            return None
        # HEAD keeps its own place in a sequence it shares with GET.
        sequence: tuple[str | int, ...] = (method, *(candidate.recorded.position for candidate in matching))
        reached = self.positions.get(sequence, 0)
        self.positions[sequence] = reached + 1
        return matching[min(reached, len(matching) - 1)].recorded

    def _same_body(self, candidate: Candidate, body: bytes, canonical: str | None) -> bool:
        if candidate.body == body:
            return True
        if not candidate.body or canonical is None:
            return False
        position = candidate.recorded.position
        if position not in self._json:
            self._json[position] = _canonical_json(candidate.body)
        return self._json[position] == canonical

    def closest(self, method: str, path: str, query_string: str, count: int = 3) -> list[str]:
        """The recorded requests most like this one, for the miss's 404."""
        wanted = f"{method} {path}" + (f"?{query_string}" if query_string else "")
        return difflib.get_close_matches(wanted, list(dict.fromkeys(self.described)), n=count, cutoff=0.4)

    def route_for(self, recorded: RecordedExchange) -> Route:
        """A route to the recorded URL's origin, for adapting cookies and redirects when
        the request matches no configured route (a config with a replay alone)."""
        origin = str(URL(recorded.url).origin()) if recorded.url.startswith(("http:", "https:")) else ""
        route = self.routes.get(origin)
        if route is None:
            route = self.routes[origin] = Route.build(
                RouteConfig(path="/", upstream=origin or "http://localhost")
            )
        return route


def _canonical_json(body: bytes) -> str | None:
    """The body as JSON written one way (keys sorted, no spaces), or None when it is not
    JSON. Compared as text, so ``true`` never equals ``1`` as it does in Python."""
    try:
        return json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    except (ValueError, RecursionError):
        return None
