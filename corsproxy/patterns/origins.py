"""Origins: what they look like, how patterns match them, and when two URLs share one.

An origin is the triple (scheme, host, port). Browsers serialise it as
``scheme://host[:port]`` in lower case, with no path and no trailing slash
(HTML Standard, "ASCII serialization of an origin"), or as the opaque ``null``.
Because the browser compares ``Access-Control-Allow-Origin`` byte for byte with
that serialisation (Fetch standard, "CORS check"), exact patterns are compared as
strings, never normalised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# The local-development origins that quick mode allows when no --allow-origin is given.
LOCAL_DEV_ORIGINS = ("http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*")

_HOST = r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])"
_PATTERN_SHAPE = re.compile(
    rf"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<wild>\*\.)?(?P<host>{_HOST})(?::(?P<port>\d{{1,5}}|\*))?$"
)


class OriginPatternError(ValueError):
    """An origin pattern from the configuration that can never match what a browser sends."""


@dataclass(frozen=True)
class OriginPattern:
    """One entry of a rule's ``origins`` list, checked and compiled once at load."""

    text: str
    kind: str  # "any", "exact", "wildcard" or "regex"
    regex: re.Pattern[str] | None = None

    def matches(self, origin: str) -> bool:
        if self.kind == "any":
            return True
        if self.kind == "exact":
            return origin == self.text
        # Every wildcard and regex pattern has its regex; anything else matches nothing.
        return self.regex is not None and self.regex.fullmatch(origin) is not None


def parse_origin_pattern(text: str) -> OriginPattern:
    """Compile one pattern: ``*``, ``null``, an exact origin, ``https://*.example.com``,
    ``http://localhost:*`` or ``regex:<full match>``.

    Raises OriginPatternError with a suggestion for the classic mistakes (trailing
    slash, path, upper case, no scheme).
    """
    if text == "*":
        return OriginPattern(text, "any")
    if text == "null":
        return OriginPattern(text, "exact")
    if text.startswith("regex:"):
        source = text.removeprefix("regex:")
        try:
            return OriginPattern(text, "regex", re.compile(source))
        # Huge repeat counts and deep nesting fail with these rather than re.error.
        except (re.error, OverflowError, RecursionError) as error:
            raise OriginPatternError(f"regex {source!r} does not compile: {error}") from error
    _explain_malformed(text)
    shape = _PATTERN_SHAPE.fullmatch(text)
    if shape is None:
        raise OriginPatternError(
            f"{text!r} is not an origin: expected scheme://host[:port], e.g. 'https://app.example.com'"
        )
    if shape["wild"] is None and shape["port"] != "*":
        return OriginPattern(text, "exact")
    host = re.escape(shape["host"])
    if shape["wild"]:
        # One or more whole labels before the domain: never the apex, never a suffix
        # trick such as "evilexample.com" or "example.com.evil.net".
        host = r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+" + host
    port = shape["port"]
    if port == "*":
        # A port is 1-65535 written without leading zeros (URL Standard, port state).
        port_part = r"(?::(?:6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}|[1-9]\d{0,3}))?"
    elif port is None:
        port_part = ""
    else:
        port_part = ":" + port
    regex = re.compile(re.escape(shape["scheme"]) + "://" + host + port_part)
    return OriginPattern(text, "wildcard", regex)


def likely_scheme(authority: str) -> str:
    """The scheme a URL without one most likely meant: http for loopback names, where dev
    servers listen without TLS; https anywhere else."""
    host = authority.strip("/").split("/", 1)[0].lower()
    host = host.split("]", 1)[0] + "]" if host.startswith("[") else host.rsplit(":", 1)[0]
    loopback = host in ("localhost", "[::1]") or host.endswith(".localhost") or host.startswith("127.")
    return "http" if loopback else "https"


def _explain_malformed(text: str) -> None:
    """Raise with a fix for the mistakes people make when copying an origin from a URL bar."""
    if "://" not in text:
        guess = f"{likely_scheme(text)}://{text.strip('/')}"
        raise OriginPatternError(f"{text!r} has no scheme: origins look like {guess!r}")
    scheme, _, rest = text.partition("://")
    if rest.endswith("/") and "/" not in rest.rstrip("/"):
        raise OriginPatternError(
            f"{text!r} ends with '/': browsers never send a trailing slash, use {text.rstrip('/')!r}"
        )
    if "/" in rest:
        bare = scheme + "://" + rest.split("/", 1)[0]
        raise OriginPatternError(f"{text!r} has a path: an origin is only scheme://host[:port], use {bare!r}")
    if text != text.lower():
        raise OriginPatternError(
            f"{text!r} has upper-case letters: browsers send origins in lower case, use {text.lower()!r}"
        )


@dataclass(frozen=True)
class OriginParts:
    scheme: str
    host: str
    port: int | None


def origin_of(url: str) -> OriginParts:
    """The (scheme, host, port) of a URL, with case folded, IDN hosts in their ASCII
    (punycode) form and default ports made explicit, so equal origins compare equal."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if host and not host.isascii():
        host = host.encode("idna").decode("ascii")
    port = parts.port if parts.port is not None else DEFAULT_PORTS.get(scheme)
    return OriginParts(scheme, host.lower(), port)


def same_origin(url_a: str, url_b: str) -> bool:
    """True when two URLs share scheme, host and port (HTML Standard, "same origin").

    >>> same_origin("https://example.com/page1", "https://EXAMPLE.com:443/page2")
    True
    >>> same_origin("http://example.com", "https://example.com")
    False
    """
    return origin_of(url_a) == origin_of(url_b)


def near_misses(origin: str, candidates: tuple[str, ...]) -> list[str]:
    """Configured exact origins that differ from ``origin`` only by case, a trailing
    slash, the port or the scheme: the tutorial's "origin mismatch" error."""
    found: list[str] = []
    try:
        sent = origin_of(origin)
    except ValueError:  # not even URL-shaped (a bad port, an unclosed "[")
        return found
    for candidate in candidates:
        if candidate in ("*", "null") or candidate.startswith("regex:") or "*" in candidate:
            continue
        if candidate == origin:
            continue
        same_text = origin.rstrip("/").lower() == candidate.rstrip("/").lower()
        if same_text or origin_of(candidate).host == sent.host:
            found.append(candidate)
    return found
