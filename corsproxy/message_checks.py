"""Request messages the proxy will not pass on, and why: checks on the message itself,
made by both transports before any routing or CORS decision.

A proxy's server side must not interpret a message on the upstream's behalf: what it
cannot pass on exactly as received, it refuses, naming the reason (docs/design.md lists
what is passed, changed and refused). Each check is a pure function of the parts it
reads and returns None or the refusal's reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from corsproxy.headers import split_list

# RFC 3986 section 5.2.4: "." and ".." segments are resolved by whoever reads the path,
# so "/api/../admin" forwarded to a route's base "/v1" becomes "/admin" upstream, out of
# the route and with its injected key. Browsers resolve them before sending (the URL
# standard counts "%2e" as "."), so only tools and attackers send them. Counted as a
# segment's end besides "/": an encoded slash (servers that decode before resolving),
# a backslash (servers that take it for a slash) and ";" (Tomcat drops path parameters
# before resolving, so "..;" is "..").
DOT_SEGMENT = re.compile(
    r"(?:^|/|\\|%2f|%5c)(?:\.|%2e){1,2}(?=$|/|\\|%2f|%5c|;|%3b)",
    re.IGNORECASE,
)

# What a header value decoded with "surrogateescape" turns non-UTF-8 bytes into.
UNDECODABLE_BYTE = re.compile("[\udc80-\udcff]")

# RFC 9112 section 6.1: chunked is the only transfer coding the proxy decodes (and
# re-encodes towards the upstream); any other would be dropped on the way.
SUPPORTED_TRANSFER_CODINGS = ("chunked",)


def dot_segment_refusal(raw_path: str) -> str | None:
    """Why a percent-encoded request path must not be forwarded, or None: it has a "." or
    ".." segment, plain or percent-encoded, that an upstream would resolve."""
    if DOT_SEGMENT.search(raw_path) is None:
        return None
    return (
        f"path {raw_path} has a dot segment ('.' or '..', perhaps percent-encoded): corsproxy "
        "does not forward paths that an upstream would resolve outside the route (RFC 3986 "
        "section 5.2.4); browsers resolve them before sending, so send the path as they would"
    )


def undecodable_header(headers: Iterable[tuple[str, str]]) -> str | None:
    """Why a request whose header bytes are not UTF-8 is refused, or None. aiohttp's client
    can send only UTF-8 header text, so both transports refuse such bytes alike rather
    than pass them on one path and drop them on the other."""
    for name, value in headers:
        if UNDECODABLE_BYTE.search(name) or UNDECODABLE_BYTE.search(value):
            shown = name.encode("utf-8", "surrogateescape").decode("latin-1")
            return (
                f"request header {shown} carries bytes that are not UTF-8: corsproxy forwards "
                "header values as UTF-8 text only; send them UTF-8 or percent-encoded"
            )
    return None


def transfer_coding_refusal(transfer_encoding: str | None) -> str | None:
    """Why a request body's transfer codings cannot be forwarded, or None (RFC 9112
    section 6.1: a server answers 501 to a transfer coding it does not understand)."""
    if transfer_encoding is None:
        return None
    codings = [coding.lower() for coding in split_list(transfer_encoding)]
    if codings == list(SUPPORTED_TRANSFER_CODINGS):
        return None
    return (
        f"Transfer-Encoding {transfer_encoding!r} is not supported: corsproxy forwards request "
        "bodies sent with Content-Length or chunked alone; send the body with "
        "Content-Encoding instead of a transfer coding"
    )
