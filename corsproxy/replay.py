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
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from yarl import URL

from corsproxy.config.model import ReplayConfig, RouteConfig
from corsproxy.har.reader import RecordedExchange
from corsproxy.upstream.route import Route, match_path

Query = tuple[tuple[str, str], ...]
Key = tuple[str, str, Query]
NOT_JSON = object()


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
            parts = urlsplit(recorded.url)
            key = (recorded.method, match_path(parts.path or "/"), query_key(parts.query))
            candidate = Candidate(recorded, key, recorded.request_body or b"")
            self.candidates.setdefault(key, []).append(candidate)
            shown = parts.path + (f"?{parts.query}" if parts.query else "")
            self.described.append(f"{recorded.method} {shown}")
        self.positions: dict[tuple[int, ...], int] = {}
        self.routes: dict[str, Route] = {}
        self._json: dict[int, Any] = {}

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

    def take(self, found: tuple[Candidate, ...], body: bytes) -> RecordedExchange | None:
        """The next answer for a request with ``body`` among ``found``, or None."""
        matching = tuple(candidate for candidate in found if self._same_body(candidate, body))
        if not matching:
            return None
        sequence = tuple(candidate.recorded.position for candidate in matching)
        reached = self.positions.get(sequence, 0)
        self.positions[sequence] = reached + 1
        return matching[min(reached, len(matching) - 1)].recorded

    def _same_body(self, candidate: Candidate, body: bytes) -> bool:
        if candidate.body == body:
            return True
        if not candidate.body or not body:
            return False
        recorded = self._json.get(candidate.recorded.position)
        if recorded is None:
            recorded = self._json[candidate.recorded.position] = _parsed(candidate.body)
        return recorded is not NOT_JSON and recorded == _parsed(body)

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


def _parsed(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return NOT_JSON
