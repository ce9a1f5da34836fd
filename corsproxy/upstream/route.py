"""Which route a request path belongs to, and the upstream URL it is forwarded to."""

from __future__ import annotations

import functools
import re
import ssl
from dataclasses import asdict, dataclass
from ssl import SSLContext
from urllib.parse import unquote

import aiohttp
from yarl import URL

from corsproxy.config.model import RouteConfig
from corsproxy.tls import client_ssl_context, connection_context
from corsproxy.upstream.rewrite import CookiePolicy


@dataclass(frozen=True)
class Route:
    """A route with its upstream parsed once at load."""

    config: RouteConfig
    prefix: str
    base: URL
    base_path: str  # the upstream's path without its trailing slash
    # Request headers never sent upstream: the injected ones (ours replace the client's)
    # and remove_request_headers, lower-cased.
    dropped_names: frozenset[str]
    timeout: aiohttp.ClientTimeout
    path_rewrites: tuple[tuple[re.Pattern[str], str], ...]
    upstream_origin: str
    cookie_policy: CookiePolicy
    # The ssl= argument for this upstream: True (verified, system CAs), False, or a context.
    ssl: ssl.SSLContext | bool
    # Where the front door's lean client connects (host, port, and the TLS context for
    # https or None for http), and the Host header it sends. ``lean`` is False for upstream
    # URLs carrying credentials, which aiohttp's client turns into an Authorization header.
    address: tuple[str, int, SSLContext | None]
    host_header: str
    lean: bool

    @classmethod
    def build(cls, config: RouteConfig) -> Route:
        base = URL(config.upstream)
        ssl_value = client_ssl_context(**asdict(config.tls))
        injected = frozenset(name.lower() for name, _ in config.request_headers)
        return cls(
            config=config,
            prefix=config.path,
            base=base,
            base_path=base.raw_path.rstrip("/"),
            dropped_names=injected | {name.lower() for name in config.remove_request_headers},
            path_rewrites=tuple((re.compile(match), replace) for match, replace in config.path_rewrites),
            upstream_origin=str(base.origin()),
            cookie_policy=CookiePolicy(**asdict(config.cookies)),
            ssl=ssl_value,
            address=(
                base.host or "",
                base.port or 80,
                connection_context(ssl_value) if base.scheme == "https" else None,
            ),
            host_header=base.host_port_subcomponent or "",
            lean=base.raw_user is None and base.raw_password is None,
            # No total limit: event streams and long downloads live as long as they talk.
            timeout=aiohttp.ClientTimeout(
                total=None, connect=config.connect_timeout, sock_read=config.read_timeout
            ),
        )

    def target(self, raw_path: str, raw_query: str) -> URL:
        """The upstream URL for a proxy-side path, kept percent-encoded as received so
        the upstream sees exactly what the client sent. The prefix was matched segment by
        segment on the decoded path (``match_path``), so as many raw segments are stripped."""
        rest = raw_path
        if self.config.strip_prefix and self.prefix != "/":
            rest = raw_path[_prefix_length(raw_path, self.prefix.count("/")) :]
        if not rest:
            path = self.base_path
        elif rest.startswith("/"):
            path = self.base_path + rest
        else:
            path = self.base_path + "/" + rest
        for pattern, replacement in self.path_rewrites:
            rewritten, count = pattern.subn(replacement, path, count=1)
            if count:
                path = rewritten
                break
        return URL.build(
            scheme=self.base.scheme,
            authority=self.base.raw_authority,
            path=path or "/",
            query_string=raw_query,
            encoded=True,
        )


def _prefix_length(raw_path: str, segments: int) -> int:
    """How many characters of ``raw_path`` its first ``segments`` segments take."""
    end = 0
    for _ in range(segments):
        found = raw_path.find("/", end + 1)
        if found < 0:
            return len(raw_path)
        end = found
    return end


@functools.lru_cache(maxsize=4096)
def match_path(raw_path: str) -> str:
    """The one path that routes and rules are both matched against, so they never disagree
    about a request: each segment percent-decoded (RFC 3986 section 6.2.2: "/%61pi" is
    "/api"), except that an encoded slash stays "%2F" inside its segment, so that "/api%2Fx"
    is one segment for routing and rules alike, as it is for the upstream."""
    if "%" not in raw_path:
        return raw_path
    return "/".join(
        unquote(segment, errors="surrogateescape").replace("/", "%2F") for segment in raw_path.split("/")
    )


class Router:
    """Longest matching prefix wins; prefixes match whole path segments only, on the
    request's ``match_path``."""

    def __init__(self, routes: tuple[RouteConfig, ...]) -> None:
        built = [Route.build(route) for route in routes]
        self.routes = tuple(sorted(built, key=lambda route: len(route.prefix), reverse=True))

    def match(self, path: str) -> Route | None:
        for route in self.routes:
            prefix = route.prefix
            if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
                return route
        return None
