"""The bytes the front door writes that must match aiohttp's, header for header: response
heads, reason phrases, Date, and the proxy's own answers. tests/test_frontdoor.py
compares both transports' answers to the same requests (the parity test)."""

from __future__ import annotations

import functools
import time
from email.utils import formatdate
from http import HTTPStatus

from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict, CIMultiDictProxy

from corsproxy.answers import Answer, preflight_answer
from corsproxy.cors.policy import Decision

_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The Date header (RFC 9110 section 6.6.1), formatted once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def reason_phrase(status: int) -> str:
    """The reason phrase aiohttp sends for a status it makes itself."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def serialize_head(status: int, reason: str, headers: CIMultiDict[str], close: bool) -> tuple[bytes, bool]:
    """The response head as aiohttp's StreamResponse.prepare writes it for HTTP/1.1, and
    whether the body is sent chunked. ``headers`` gets the headers added, as aiohttp's do."""
    empty = status in (204, 304) or 100 <= status < 200
    chunked = False
    if empty:
        # RFC 9112 section 6.1 and 6.3: no body, so no body framing either.
        headers.popall("Transfer-Encoding", None)
        if status != 304:
            headers.popall("Content-Length", None)
    else:
        chunked = "Content-Length" not in headers
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        if headers.get("Content-Length") != "0":
            # RFC 9110 section 8.3: a body without a type is application/octet-stream.
            headers.setdefault("Content-Type", "application/octet-stream")
    if "Date" not in headers:
        headers["Date"] = http_date()
    headers.setdefault("Server", SERVER_SOFTWARE)
    if close and "Connection" not in headers:
        headers["Connection"] = "close"
    lines = [f"HTTP/1.1 {status} {reason}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    lines.append("\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape"), chunked


def answer_bytes(answer: Answer, close: bool) -> bytes:
    """One of the proxy's own answers (answers.py) as aiohttp's web.Response sends it."""
    headers = answer.headers.copy()
    if answer.status not in (204, 304):
        # RFC 9110 section 8.6: never on a 204; a 304's would describe the cached copy.
        headers["Content-Length"] = str(len(answer.body))
    head, _ = serialize_head(answer.status, reason_phrase(answer.status), headers, close)
    return head + answer.body


@functools.lru_cache(maxsize=4096)
def preflight_bytes(decision: Decision) -> tuple[int, CIMultiDictProxy[str], bytes, bytes]:
    """The preflight answer as the status, its headers as aiohttp sends them (less Date),
    the head's bytes up to Date, and the body: built once per cached decision."""
    status, pairs, body = preflight_answer(decision)
    headers: CIMultiDict[str] = CIMultiDict(pairs)
    if body:
        headers["Content-Length"] = str(len(body))
    headers["Server"] = SERVER_SOFTWARE
    head = f"HTTP/1.1 {status} {reason_phrase(status)}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    return status, CIMultiDictProxy(headers), head.encode("utf-8", "surrogateescape"), body or b""


def chunk(data: bytes) -> tuple[bytes, bytes, bytes]:
    """RFC 9112 section 7.1: chunk size in hex, CRLF, data, CRLF."""
    return b"%x\r\n" % len(data), data, b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"
