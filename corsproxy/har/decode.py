"""A body as a HAR stores it: decoded from its Content-Encoding, as browsers store bodies,
bounded, and then text when it reads as text, base64 otherwise.

gzip and deflate are the standard library's (zlib); br is Google's Brotli package, zstd
the backport of Python 3.14's ``compression.zstd`` (backports.zstd). Decoding is bounded
by ``limit``: a small compressed body can expand to gigabytes.
"""

from __future__ import annotations

import base64
import sys
import zlib
from collections.abc import Callable
from typing import NamedTuple

import brotli

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

from corsproxy.headers import split_list

# Media types stored as text when their bytes are valid UTF-8 (or their charset's).
TEXT_TYPES = (
    "text/",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/x-www-form-urlencoded",
    "application/graphql",
    "image/svg+xml",
)
TEXT_SUFFIXES = ("+json", "+xml")
UTF8_NAMES = ("utf-8", "utf8", "us-ascii", "ascii")


class StoredBody(NamedTuple):
    """A body as HAR's ``content``/``postData`` hold it."""

    text: str
    base64: bool
    size: int  # decoded bytes stored
    truncated: bool
    # Why the body is stored as received instead of decoded (an unknown coding, a broken stream).
    problem: str | None = None


Decoder = Callable[[bytes, int], bytes]


def _zlib(wbits: int) -> Decoder:
    def decode(data: bytes, limit: int) -> bytes:
        decoder = zlib.decompressobj(wbits)
        return decoder.decompress(data, limit + 1)

    return decode


def _deflate(data: bytes, limit: int) -> bytes:
    # RFC 9110 section 8.4.1.2: "deflate" is zlib-wrapped, but some servers send it raw.
    try:
        return _zlib(zlib.MAX_WBITS)(data, limit)
    except zlib.error:
        return _zlib(-zlib.MAX_WBITS)(data, limit)


def _brotli(data: bytes, limit: int) -> bytes:
    decoder = brotli.Decompressor()
    return bytes(decoder.process(data, output_buffer_limit=limit + 1))


def _zstd(data: bytes, limit: int) -> bytes:
    decoder = zstd.ZstdDecompressor()
    return decoder.decompress(data, max_length=limit + 1)


DECODERS: dict[str, Decoder] = {
    "gzip": _zlib(16 + zlib.MAX_WBITS),
    "x-gzip": _zlib(16 + zlib.MAX_WBITS),
    "deflate": _deflate,
    "br": _brotli,
    "zstd": _zstd,
}


def decode(data: bytes, content_encoding: str | None, limit: int) -> tuple[bytes, bool, str | None]:
    """The decoded bytes (at most ``limit``), whether they were cut, and why they could not
    be decoded (the bytes are then as received). Codings are undone last one first
    (RFC 9110 section 8.4)."""
    codings = [coding.lower() for coding in split_list(content_encoding) if coding.lower() != "identity"]
    decoded = data
    for coding in reversed(codings):
        decoder = DECODERS.get(coding)
        if decoder is None:
            return data[:limit], len(data) > limit, f"stored as received: unknown content coding {coding!r}"
        try:
            decoded = decoder(decoded, limit)
        except (zlib.error, brotli.error, zstd.ZstdError) as error:
            return data[:limit], len(data) > limit, f"stored as received: cannot decode {coding}: {error}"
    return decoded[:limit], len(decoded) > limit, None


def is_text_type(mime_type: str) -> bool:
    essence = mime_type.split(";", 1)[0].strip().lower()
    return essence.startswith(TEXT_TYPES) or essence.endswith(TEXT_SUFFIXES)


def charset_of(mime_type: str) -> str:
    for parameter in mime_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return "utf-8"


def stored(data: bytes, mime_type: str, truncated: bool = False, problem: str | None = None) -> StoredBody:
    """Text when the media type is a text one and the bytes decode in its charset; base64
    otherwise (HAR 1.2, ``content.encoding``)."""
    # Text in UTF-8 only: a replay turns text back into UTF-8 bytes (HAR text has no
    # charset of its own), so a body in another charset is kept exact, as base64.
    if problem is None and is_text_type(mime_type) and charset_of(mime_type).lower() in UTF8_NAMES:
        try:
            # A cut may fall inside a multi-byte character: the incomplete tail is dropped.
            text = data.decode("utf-8", errors="strict" if not truncated else "ignore")
        except UnicodeDecodeError:
            pass
        else:
            return StoredBody(text, False, len(text.encode()), truncated, problem)
    return StoredBody(base64.b64encode(data).decode("ascii"), True, len(data), truncated, problem)


def stored_body(
    data: bytes, mime_type: str, content_encoding: str | None, limit: int, cut: bool = False
) -> StoredBody:
    """``data`` (as received, perhaps already cut at ``limit``: ``cut``) as HAR stores it."""
    decoded, truncated, problem = decode(data, content_encoding, limit)
    return stored(decoded, mime_type, truncated or cut, problem)


def body_bytes(text: str, encoding: str | None) -> bytes:
    """A stored body's bytes back (HAR 1.2: ``encoding`` "base64", else the text itself)."""
    if encoding == "base64":
        return base64.b64decode(text)
    return text.encode()
