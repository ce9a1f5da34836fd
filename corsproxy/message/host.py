"""Who may use the proxy at all: checks made before any CORS decision or forwarding."""

from __future__ import annotations

import re

from aiohttp import web
from yarl import URL

from corsproxy.config.model import ServerConfig

# RFC 6761 section 6.3: "localhost" and names under it always resolve to loopback.
LOOPBACK_HOSTS = ("localhost", "*.localhost", "127.0.0.1", "[::1]", "::1")
UNSPECIFIED = ("0.0.0.0", "::", "")
SEEN_LIMIT = 64

# RFC 9112 section 3.2 and RFC 3986 section 3.2.2: Host is uri-host [ ":" port ], where
# uri-host is an IP literal in brackets, or a reg-name of unreserved characters,
# percent-escapes and sub-delims. Anything else ("localhost:1, evil.example",
# "localhost:1@evil.example") is an invalid Host, which a server must answer with 400.
VALID_HOST = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+)(?::[0-9]*)?"
)


def valid_host(host: str | None) -> bool:
    """Whether a Host value (or an absolute-form target's authority) is well-formed."""
    return host is not None and VALID_HOST.fullmatch(host) is not None


def request_authority(request: web.Request) -> str | None:
    """The one authority a request names: an absolute-form target's (RFC 9112 section
    3.2.2: the server then ignores Host), else its Host header. The guard checks it and
    X-Forwarded-Host carries it, so what is checked is what is used."""
    target = request.raw_path  # the request-target as received
    if not target.startswith("/") and "://" in target:
        return URL(target, encoded=True).raw_authority
    return request.headers.get("Host")


class HostGuard:
    """DNS-rebinding guard: a page on evil.example can make its own name resolve to
    127.0.0.1 and then read from the proxy as same-origin. The browser still sends
    ``Host: evil.example``, so only requests naming a known host are served."""

    def __init__(self, server: ServerConfig) -> None:
        names = [*LOOPBACK_HOSTS, *server.allowed_hosts]
        if server.host not in UNSPECIFIED:
            names.append(server.host)
        self.open = "*" in names
        self.exact = frozenset(name.lower() for name in names if not name.startswith("*."))
        self.suffixes = tuple(name[1:].lower() for name in names if name.startswith("*."))
        self.described = ", ".join(dict.fromkeys(names))
        self._seen: set[str] = set()

    def allows(self, host_header: str | None) -> bool:
        """Whether the authority the request names (its Host, or an absolute-form
        target's authority) is well-formed and one the proxy answers to."""
        if host_header in self._seen:
            return True
        if host_header is None or not valid_host(host_header):
            return False
        host = _hostname(host_header.lower())
        allowed = self.open or host in self.exact or host.endswith(self.suffixes)
        # The same few Host values arrive on every request: remember the good ones.
        if allowed and len(self._seen) < SEEN_LIMIT:
            self._seen.add(host_header)
        return allowed

    def refusal(self, host_header: str | None) -> tuple[int, str]:
        """The status and the reason for a Host that ``allows`` refused."""
        if host_header is None:
            return 400, "corsproxy needs a Host header to serve a request (RFC 9112 section 3.2)"
        if not valid_host(host_header):
            return 400, (
                f"corsproxy refused Host {host_header!r}: it is not a valid host[:port] "
                "(RFC 9112 section 3.2)"
            )
        return 403, (
            f"corsproxy refused Host {host_header!r}: it is not one of the allowed hosts "
            f"({self.described}). This guards against DNS rebinding. If you reach the proxy by "
            "that name, add it to server.allowed_hosts (or CORSPROXY_ALLOWED_HOSTS)."
        )


def host_refusal(guard: HostGuard, request: web.Request) -> web.Response | None:
    """The guard for the proxy's own pages (aiohttp handlers): None, or the refusal."""
    host = request_authority(request)
    if guard.allows(host):
        return None
    status, text = guard.refusal(host)
    return web.Response(status=status, text=text + "\n")


def _hostname(host: str) -> str:
    """``Host`` without its port; IPv6 literals keep their brackets."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
