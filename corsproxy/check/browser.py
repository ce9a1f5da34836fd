"""What a browser decides about a cross-origin ``fetch()``: pure functions, no I/O.

One implementation of the WHATWG Fetch standard's CORS rules (https://fetch.spec.whatwg.org/):

- ``needs_preflight()``: would the browser send an OPTIONS preflight first, and why
  (Fetch, "main fetch": CORS-safelisted method, "CORS-unsafe request-header names").
- ``check_preflight()``: does the preflight's answer let the request through
  (Fetch, "CORS-preflight fetch").
- ``check_response()``: may the page read the response (Fetch, "CORS check").

Failures come back as Findings whose codes name the classic CORS errors developers
search for, so ``corsproxy check`` can say which one happened.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from corsproxy.headers import TOKEN, split_list
from corsproxy.patterns.origins import DEFAULT_PORTS, near_misses, origin_of

ACAO = "Access-Control-Allow-Origin"
ACAC = "Access-Control-Allow-Credentials"
ACAM = "Access-Control-Allow-Methods"
ACAH = "Access-Control-Allow-Headers"
ACAPN = "Access-Control-Allow-Private-Network"

HeaderList = Sequence[tuple[str, str]]
Stage = Literal["preflight", "response"]

# Fetch, "CORS-safelisted method". Compared byte for byte, after fetch() normalised the method.
SAFELISTED_METHODS = frozenset({"GET", "HEAD", "POST"})
# Fetch, "normalize a method": fetch() upper-cases only these, so "patch" is sent as "patch".
NORMALIZED_METHODS = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"})
# Fetch, "forbidden method": fetch() throws a TypeError instead of sending these.
FORBIDDEN_METHODS = frozenset({"CONNECT", "TRACE", "TRACK"})

# Fetch, "forbidden request-header": the browser sets these itself; a script cannot.
FORBIDDEN_HEADER_NAMES = frozenset(
    {
        "accept-charset",
        "accept-encoding",
        "access-control-request-headers",
        "access-control-request-method",
        "connection",
        "content-length",
        "cookie",
        "cookie2",
        "date",
        "dnt",
        "expect",
        "host",
        "keep-alive",
        "origin",
        "referer",
        "set-cookie",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "via",
    }
)

SAFELISTED_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
# Fetch, "CORS-safelisted request-header" step 1, and "CORS-unsafe request-header names" step 5.
MAX_SAFELISTED_VALUE_BYTES = 128
MAX_SAFELISTED_TOTAL_BYTES = 1024

# Fetch, "CORS-unsafe request-header byte": controls other than tab, and "():<>?@[\]{} and DEL.
_UNSAFE_BYTES = frozenset(b'"():<>?@[\\]{}\x7f') | frozenset(b for b in range(0x20) if b != 0x09)
# Fetch, CORS-safelisted Accept-Language and Content-Language: alphanumerics and " *,-.;=".
_LANGUAGE_BYTES = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz *,-.;=")
# Fetch, "parse a single range header value" without whitespace: one range, no list.
_SINGLE_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
_HTTP_WHITESPACE = " \t\r\n"


class Code(StrEnum):
    """Why the browser blocks: the tutorial's six classic CORS errors, then the rest."""

    MISSING_ALLOW_ORIGIN = "missing-allow-origin"
    WILDCARD_WITH_CREDENTIALS = "wildcard-with-credentials"
    PREFLIGHT_FAILED = "preflight-failed"
    HEADER_NOT_ALLOWED = "header-not-allowed"
    PROXY_NOT_ADDING_HEADERS = "proxy-not-adding-headers"
    ORIGIN_MISMATCH = "origin-mismatch"
    MULTIPLE_ALLOW_ORIGIN = "multiple-allow-origin"
    CREDENTIALS_NOT_ALLOWED = "credentials-not-allowed"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    INVALID_ALLOW_LIST = "invalid-allow-list"
    PRIVATE_NETWORK_NOT_ALLOWED = "private-network-not-allowed"
    # Not a browser check: the answer is corsproxy's own (a refusal, an unreachable
    # upstream), not the upstream's, so the request does not do what the page wants.
    ANSWERED_BY_CORSPROXY = "answered-by-corsproxy"


@dataclass(frozen=True)
class Finding:
    """One check the browser fails, on the preflight answer or on the response itself."""

    code: Code
    stage: Stage
    message: str


# 0x7F is a CORS-unsafe request-header byte and no safelisted MIME type or range.
UNSAFE_PLACEHOLDER = "\x7f"


@dataclass(frozen=True)
class BrowserRequest:
    """A cross-origin ``fetch()`` as the browser holds it before sending anything."""

    origin: str  # the page's serialised origin, as the Origin header carries it
    method: str  # after normalize_method(), as fetch() sends it
    headers: tuple[tuple[str, str], ...] = ()  # the headers the script set, in order
    credentials: bool = False  # credentials: "include"
    private_network: bool = False  # a public page calling a private address (Private Network Access)

    @property
    def unsafe_header_names(self) -> list[str]:
        return unsafe_header_names(self.headers)

    @classmethod
    def from_preflight(
        cls, origin: str, method: str, requested: list[str], credentials: bool = False
    ) -> BrowserRequest:
        """The request a preflight announces. A preflight names the headers but not their
        values; the browser lists only headers that are not CORS-safelisted (Fetch,
        "CORS-unsafe request-header names"), so each is given a value that is never safelisted."""
        return cls(origin, method, tuple((name, UNSAFE_PLACEHOLDER) for name in requested), credentials)


def is_forbidden_header_name(name: str) -> bool:
    """Fetch, "forbidden request-header" (by name): fetch() silently drops these."""
    lower = name.lower()
    return lower in FORBIDDEN_HEADER_NAMES or lower.startswith(("proxy-", "sec-"))


def normalize_method(method: str) -> str:
    """The method as fetch() sends it (Fetch, "normalize a method")."""
    upper = method.upper()
    return upper if upper in NORMALIZED_METHODS else method


def serialize_origin(url: str) -> str:
    """The Origin a page at ``url`` sends (HTML Standard, "ASCII serialization of an origin"):
    lower case, no path, no trailing slash, the default port left off."""
    parts = origin_of(url)
    host = f"[{parts.host}]" if ":" in parts.host else parts.host
    port = "" if parts.port in (None, DEFAULT_PORTS.get(parts.scheme)) else f":{parts.port}"
    return f"{parts.scheme}://{host}{port}"


def is_safelisted_header(name: str, value: str) -> bool:
    """Fetch, "CORS-safelisted request-header": may a script send this without a preflight?

    ``value`` is a byte string (code points up to U+00FF), as fetch() requires.
    """
    return _unsafe_reason(name, value) is None


def unsafe_header_names(headers: Mapping[str, str] | HeaderList) -> list[str]:
    """Fetch, "CORS-unsafe request-header names": sorted, lower-cased, each once. These are
    the names a preflight announces in Access-Control-Request-Headers."""
    return sorted({name.lower() for name, _ in _unsafe_headers(_as_list(headers))})


def needs_preflight(
    method: str, headers: Mapping[str, str] | HeaderList = (), *, private_network: bool = False
) -> list[str]:
    """Why the browser sends a preflight before this request; empty when it sends none.

    ``method`` and ``headers`` are what the script passes to fetch(). Credentials never
    cause a preflight by themselves: a credentialed GET goes straight out.

    >>> needs_preflight("GET", {"Accept": "application/json"})
    []
    >>> needs_preflight("PUT", {"X-API-Key": "k"})
    ['method PUT is not GET, HEAD or POST', 'header X-API-Key is not CORS-safelisted']
    """
    reasons = []
    sent = normalize_method(method)
    if sent not in SAFELISTED_METHODS:
        reason = f"method {sent} is not GET, HEAD or POST"
        if sent != sent.upper():
            upper_cased = ", ".join(sorted(NORMALIZED_METHODS))
            reason += f" (fetch() sends {sent!r} as written: it upper-cases only {upper_cased})"
        reasons.append(reason)
    reasons += dict.fromkeys(reason for _, reason in _unsafe_headers(_as_list(headers)))
    if private_network:
        # Private Network Access: a request to a more private address is always preflighted.
        reasons.append("the request asks for private network access")
    return reasons


def preflight_request_headers(request: BrowserRequest) -> list[tuple[str, str]]:
    """The headers of the OPTIONS request the browser sends first (Fetch, "CORS-preflight
    fetch" steps 1-5). Never credentials: a preflight carries no cookies."""
    headers = [
        ("Accept", "*/*"),
        ("Origin", request.origin),
        ("Access-Control-Request-Method", request.method),
    ]
    names = request.unsafe_header_names
    if names:
        # Fetch, "CORS-preflight fetch" step 5: joined by "," with no space.
        headers.append(("Access-Control-Request-Headers", ",".join(names)))
    if request.private_network:
        headers.append(("Access-Control-Request-Private-Network", "true"))
    return headers


def check_preflight(
    request: BrowserRequest, status: int, headers: HeaderList, *, via: str | None = None
) -> list[Finding]:
    """Every check the preflight's answer fails; empty when the browser goes on to send the
    request. ``via`` names a proxy the answer is known to have come through."""
    findings = []
    ok_status = 200 <= status <= 299
    if not ok_status:
        findings.append(
            Finding(
                Code.PREFLIGHT_FAILED,
                "preflight",
                f"the preflight (OPTIONS) got status {status}, not 2xx: the server must answer "
                "OPTIONS itself with 200 or 204 and the CORS headers",
            )
        )
    findings += _cors_check(request, headers, "preflight", via)
    if ok_status:
        # A server that does not answer OPTIONS with 2xx never read the preflight: its
        # method and header lists would only add noise to the one real problem.
        findings += _method_check(request, headers)
        findings += _header_check(request, headers)
    if request.private_network and _get(headers, ACAPN) != "true":
        findings.append(
            Finding(
                Code.PRIVATE_NETWORK_NOT_ALLOWED,
                "preflight",
                f"the preflight answer lacks '{ACAPN}: true', which Private Network Access requires",
            )
        )
    return findings


def check_response(request: BrowserRequest, headers: HeaderList, *, via: str | None = None) -> list[Finding]:
    """Every check the response fails (Fetch, "CORS check"); empty when the page may read it.
    The status does not matter: a 404 or 500 with the right headers is readable."""
    return _cors_check(request, headers, "response", via)


def _cors_check(request: BrowserRequest, headers: HeaderList, stage: Stage, via: str | None) -> list[Finding]:
    findings = []
    where = "preflight answer" if stage == "preflight" else "response"
    origins = _get_all(headers, ACAO)
    allowed = ", ".join(origins)
    if not origins:
        proxy = via or _get(headers, "Via")
        if proxy:
            findings.append(
                Finding(
                    Code.PROXY_NOT_ADDING_HEADERS,
                    stage,
                    f"no '{ACAO}' header on the {where}, which came through the proxy {proxy!r}: "
                    "a proxy that only forwards (webpack-dev-server, Vite, a CDN) adds no CORS headers; "
                    f"the API, or a CORS proxy told to allow {request.origin}, must add them",
                )
            )
        else:
            findings.append(
                Finding(
                    Code.MISSING_ALLOW_ORIGIN,
                    stage,
                    f"no '{ACAO}' header on the {where}: the server must send "
                    f"'{ACAO}: {request.origin}', or run behind a CORS proxy",
                )
            )
    elif len(origins) > 1 or "," in allowed:
        # Fetch, "CORS check": the combined value must equal the origin; two values never do.
        findings.append(
            Finding(
                Code.MULTIPLE_ALLOW_ORIGIN,
                stage,
                f"'{ACAO}' has several values ({allowed!r}) but only one is allowed: "
                "usually both the API and a proxy add it; keep one",
            )
        )
    elif allowed == "*" and request.credentials:
        findings.append(
            Finding(
                Code.WILDCARD_WITH_CREDENTIALS,
                stage,
                f"'{ACAO}' is '*', which browsers refuse when credentials are sent: answer with "
                f"the exact origin {request.origin!r}, or send the request without credentials",
            )
        )
    elif allowed not in ("*", request.origin):
        findings.append(
            Finding(Code.ORIGIN_MISMATCH, stage, _origin_mismatch(request.origin, allowed, where))
        )
    if request.credentials:
        credentials = _get(headers, ACAC)
        if credentials != "true":
            got = "is missing" if credentials is None else f"is {credentials!r}"
            findings.append(
                Finding(
                    Code.CREDENTIALS_NOT_ALLOWED,
                    stage,
                    f"'{ACAC}' {got} on the {where}; with credentials it must be exactly 'true'",
                )
            )
    return findings


def _origin_mismatch(origin: str, allowed: str, where: str) -> str:
    message = (
        f"'{ACAO}' on the {where} is {allowed!r} but the page's origin is {origin!r}; "
        "origins must match exactly"
    )
    try:
        if near_misses(origin, (allowed,)):
            message += ": " + _near_miss(origin, allowed)
    except ValueError:
        pass  # the header is not even a URL (a bad port, a broken IPv6 host): no near miss to name
    return message


def _near_miss(origin: str, allowed: str) -> str:
    """Name the one difference between an origin and its near miss."""
    stripped = allowed.rstrip("/")
    if stripped.lower() == origin:
        differences = []
        if stripped != allowed:
            differences.append("a trailing slash, which browsers never send")
        if stripped != origin:
            differences.append("upper-case letters, while browsers send origins in lower case")
        return "the header has " + " and ".join(differences)
    sent, got = origin_of(origin), origin_of(allowed)
    if sent == got:
        return "the header writes out the default port, which browsers leave off"
    if sent.scheme != got.scheme:
        return f"the scheme differs ({got.scheme}:// instead of {sent.scheme}://)"
    return f"the port differs ({got.port} instead of {sent.port})"


def _method_check(request: BrowserRequest, headers: HeaderList) -> list[Finding]:
    # Fetch, "CORS-preflight fetch" step 7.5: the method must be listed byte for byte,
    # unless it is safelisted, or "*" is listed and no credentials are sent.
    methods = _allow_list(headers, ACAM)
    if methods is None:
        return [_invalid_list(headers, ACAM)]
    method = request.method
    if method in methods or method in SAFELISTED_METHODS or ("*" in methods and not request.credentials):
        return []
    message = f"method {method} is not in '{ACAM}' ({', '.join(methods) or 'missing'})"
    if "*" in methods:
        message += f"; with credentials '*' is a literal method name, so list {method} itself"
    elif method.upper() in (listed.upper() for listed in methods):
        message += f"; methods are case-sensitive and fetch() sent {method!r} as written"
    return [Finding(Code.METHOD_NOT_ALLOWED, "preflight", message)]


def _header_check(request: BrowserRequest, headers: HeaderList) -> list[Finding]:
    allowed = _allow_list(headers, ACAH)
    if allowed is None:
        return [_invalid_list(headers, ACAH)]
    listed = {name.lower() for name in allowed}
    wildcard = "*" in listed and not request.credentials
    shown = ", ".join(allowed) or "missing"
    spelled = {name.lower(): name for name, _ in request.headers}
    findings = []
    for name in request.unsafe_header_names:
        # Fetch, "CORS-preflight fetch" steps 7.6 and 7.7: names compare case-insensitively;
        # "*" covers any name without credentials, but never Authorization.
        if name in listed or (wildcard and name != "authorization"):
            continue
        message = f"request header {spelled[name]} is not in '{ACAH}' ({shown})"
        if name == "authorization" and "*" in listed:
            message += "; '*' never covers Authorization, list it by name"
        elif "*" in listed:
            message += f"; with credentials '*' is a literal header name, so list {spelled[name]} itself"
        else:
            message += "; add it there"
        findings.append(Finding(Code.HEADER_NOT_ALLOWED, "preflight", message))
    return findings


def _invalid_list(headers: HeaderList, name: str) -> Finding:
    return Finding(
        Code.INVALID_ALLOW_LIST,
        "preflight",
        f"'{name}' is not a comma-separated list of tokens ({_get(headers, name)!r}), so the browser "
        "treats the preflight as failed",
    )


def _allow_list(headers: HeaderList, name: str) -> list[str] | None:
    """Fetch, "extract header list values": the items, [] when absent, None when unparsable."""
    items = split_list(_get(headers, name))
    return items if all(TOKEN.fullmatch(item) for item in items) else None


def _get_all(headers: HeaderList, name: str) -> list[str]:
    lower = name.lower()
    return [value for key, value in headers if key.lower() == lower]


def _get(headers: HeaderList, name: str) -> str | None:
    """Fetch, "get" a header: every line's value joined by ", ", or None when absent."""
    values = _get_all(headers, name)
    return ", ".join(values) if values else None


def _as_list(headers: Mapping[str, str] | HeaderList) -> HeaderList:
    return list(headers.items()) if isinstance(headers, Mapping) else headers


def _unsafe_headers(headers: HeaderList) -> list[tuple[str, str]]:
    """(name, reason) for each header that needs a preflight (Fetch, "CORS-unsafe
    request-header names"), including every safelisted one once their values pass 1024 bytes."""
    unsafe = []
    safelisted = []
    total = 0
    for name, value in headers:
        reason = _unsafe_reason(name, value)
        if reason is None:
            safelisted.append(name)
            total += len(value.encode("latin-1"))
        else:
            unsafe.append((name, reason))
    if total > MAX_SAFELISTED_TOTAL_BYTES:
        reason = (
            f"the safelisted header values add up to {total} bytes, "
            f"over the {MAX_SAFELISTED_TOTAL_BYTES}-byte limit"
        )
        unsafe += [(name, reason) for name in safelisted]
    return unsafe


def _unsafe_reason(name: str, value: str) -> str | None:
    """Why (name, value) is not a CORS-safelisted request-header, or None when it is."""
    data = value.encode("latin-1")
    lower = name.lower()
    if lower not in ("accept", "accept-language", "content-language", "content-type", "range"):
        return f"header {name} is not CORS-safelisted"
    if len(data) > MAX_SAFELISTED_VALUE_BYTES:
        limit = MAX_SAFELISTED_VALUE_BYTES
        return f"the {name} value is {len(data)} bytes, over the {limit} a safelisted value may have"
    if lower in ("accept", "content-type"):
        unsafe = [byte for byte in data if byte in _UNSAFE_BYTES]
        if unsafe:
            return f"the {name} value contains {chr(unsafe[0])!r}, which a safelisted value may not"
    if lower in ("accept-language", "content-language"):
        unsafe = [byte for byte in data if byte not in _LANGUAGE_BYTES]
        if unsafe:
            return (
                f"the {name} value contains {chr(unsafe[0])!r}: a safelisted {name} has only "
                "letters, digits, space and * , - . ; ="
            )
    if lower == "content-type":
        essence = _mime_essence(value)
        if essence is None:
            return f"Content-Type {value!r} is not a MIME type"
        if essence not in SAFELISTED_CONTENT_TYPES:
            return f"Content-Type {essence} is not one of {', '.join(SAFELISTED_CONTENT_TYPES)}"
    if lower == "range" and not _is_simple_range(value):
        return f"Range {value!r} is not a single range with a start, such as 'bytes=0-499'"
    return None


def _mime_essence(value: str) -> str | None:
    """The type/subtype of a MIME type, lower-cased (MIME Sniffing, "parse a MIME type");
    parameters never make it fail."""
    kind, slash, rest = value.strip(_HTTP_WHITESPACE).partition("/")
    subtype = rest.split(";", 1)[0].rstrip(_HTTP_WHITESPACE)
    if not slash or not TOKEN.fullmatch(kind) or not TOKEN.fullmatch(subtype):
        return None
    return f"{kind}/{subtype}".lower()


def _is_simple_range(value: str) -> bool:
    # Fetch, CORS-safelisted Range: one range that parses and has a start ("bytes=-500",
    # a suffix range, is not safelisted).
    match = _SINGLE_RANGE.fullmatch(value)
    if match is None or not match[1]:
        return False
    return not match[2] or int(match[1]) <= int(match[2])
