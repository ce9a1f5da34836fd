"""Request messages the proxy will not pass on, and why: checks on the message itself,
made by both transports before any routing or CORS decision.

A proxy's server side must not interpret a message on the upstream's behalf: what it
cannot pass on exactly as received, it refuses, naming the reason (docs/design.md lists
what is passed, changed and refused). Each check is a pure function of the parts it
reads and returns None or the refusal's reason.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from urllib.parse import unquote

from corsproxy.headers import split_list

# RFC 3986 section 5.2.4: "." and ".." segments are resolved by whoever reads the path,
# so "/api/../admin" forwarded to a route's base "/v1" becomes "/admin" upstream, out of
# the route and with its injected key. Browsers resolve them before sending (the URL
# standard counts "%2e" as "."), so only tools and attackers send them. Upstreams differ
# in what they decode first, so a segment counts as a dot segment after up to this many
# rounds of percent-decoding ("%252e" is "%2e" to one that decodes twice)...
DECODING_ROUNDS = 3
# ...split at a slash, encoded or not, or a backslash (servers that take it for a slash),
SEPARATORS = re.compile(r"[/\\]")
# ...with what follows a ";" dropped (Tomcat drops path parameters before resolving, so
# "..;" is ".."), and a trailing NUL or space too (servers that cut or trim there).
DOT_SEGMENTS = frozenset({".", ".."})

# What a header value decoded with "surrogateescape" turns non-UTF-8 bytes into.
UNDECODABLE_BYTE = re.compile("[\udc80-\udcff]")

# RFC 9112 section 6.1: chunked is the only transfer coding the proxy decodes (and
# re-encodes towards the upstream); any other would be dropped on the way.
SUPPORTED_TRANSFER_CODINGS = ("chunked",)


@functools.lru_cache(maxsize=4096)
def dot_segment_refusal(raw_path: str) -> str | None:
    """Why a percent-encoded request path must not be forwarded, or None: it has a "." or
    ".." segment, plain or percent-encoded, that an upstream would resolve."""
    if "." not in raw_path and "%" not in raw_path:
        return None
    text = raw_path
    for _ in range(DECODING_ROUNDS + 1):
        if _has_dot_segment(text):
            return (
                f"path {raw_path} has a dot segment ('.' or '..', perhaps percent-encoded): corsproxy "
                "does not forward paths that an upstream would resolve outside the route (RFC 3986 "
                "section 5.2.4); browsers resolve them before sending, so send the path as they would"
            )
        decoded = unquote(text, encoding="latin-1")
        if decoded == text:
            return None
        text = decoded
    return None


def _has_dot_segment(path: str) -> bool:
    for segment in SEPARATORS.split(path):
        if "." in segment and segment.partition(";")[0].rstrip("\x00 ") in DOT_SEGMENTS:
            return True
    return False


def undecodable_header(headers: Iterable[tuple[str, str]]) -> str | None:
    """Why a request whose header bytes are not UTF-8 is refused, or None. aiohttp's client
    can send only UTF-8 header text, so both transports refuse such bytes alike rather
    than pass them on one path and drop them on the other."""
    for name, value in headers:
        if value.isascii() and name.isascii():
            continue
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
