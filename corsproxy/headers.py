"""Header names the proxy treats specially, and the parsing of comma-separated header lists."""

from __future__ import annotations

import re

# RFC 9110 section 7.6.1: connection-specific headers, never forwarded by a proxy.
# "Proxy-*" covers Proxy-Connection, Proxy-Authenticate and Proxy-Authorization.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
    }
)

# RFC 9110 section 10.1.1: the proxy's server side meets "Expect: 100-continue" itself
# (aiohttp sends the 100 before the body is read), so the expectation is not forwarded:
# the client side would otherwise wait for a second 100 that an upstream need not send.
MET_BY_PROXY = frozenset({"expect"})

# RFC 9110 section 13.1: what a browser sends with a cached copy, to which a 304 answers.
CACHE_VALIDATORS = ("if-none-match", "if-modified-since")

# RFC 9110 section 5.6.2: a header name is a token.
TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


def split_list(value: str | None) -> list[str]:
    """Split a comma-separated header value, ignoring spacing and empty items
    (Fetch standard, "get, decode, and split"; RFC 9110 section 5.6.1 allows empty elements)."""
    if not value:
        return []
    return [item.strip(" \t") for item in value.split(",") if item.strip(" \t")]


def connection_listed(value: str | None) -> set[str]:
    """The header names a ``Connection`` header declares hop-by-hop (RFC 9110 section 7.6.1)."""
    return {name.lower() for name in split_list(value)}


def is_hop_by_hop(name_lower: str, listed: set[str]) -> bool:
    return name_lower in HOP_BY_HOP or name_lower in listed or name_lower.startswith("proxy-")
