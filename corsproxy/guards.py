"""Who may use the proxy at all: checks made before any CORS decision or forwarding."""

from __future__ import annotations

from aiohttp import web

from corsproxy.config import ServerConfig

# RFC 6761 section 6.3: "localhost" and names under it always resolve to loopback.
LOOPBACK_HOSTS = ("localhost", "*.localhost", "127.0.0.1", "[::1]", "::1")
UNSPECIFIED = ("0.0.0.0", "::", "")
SEEN_LIMIT = 64


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
        self._seen: set[str | None] = set()

    def allows(self, host_header: str | None) -> bool:
        if self.open or host_header in self._seen:
            return True
        if not host_header:
            return False
        host = _hostname(host_header.lower())
        allowed = host in self.exact or host.endswith(self.suffixes)
        # The same few Host values arrive on every request: remember the good ones.
        if allowed and len(self._seen) < SEEN_LIMIT:
            self._seen.add(host_header)
        return allowed

    def refusal(self, host_header: str | None) -> web.Response:
        return web.Response(
            status=403,
            text=(
                f"corsproxy refused Host {host_header!r}: it is not one of the allowed hosts "
                f"({self.described}). This guards against DNS rebinding. If you reach the proxy by "
                "that name, add it to server.allowed_hosts (or CORSPROXY_ALLOWED_HOSTS).\n"
            ),
        )


def _hostname(host: str) -> str:
    """``Host`` without its port; IPv6 literals keep their brackets."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
