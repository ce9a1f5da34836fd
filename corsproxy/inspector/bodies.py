"""Bodies as the inspector shows them: decoded from gzip, deflate, br or zstd for display
only (what went over the wire is never touched), secrets as ***, and what kind of view
suits them: JSON pretty-printed, text, an image, or a hex preview of anything else."""

from __future__ import annotations

from typing import Any

from corsproxy.exchanges import Captured
from corsproxy.har.decode import StoredBody, decode, is_text_type, stored
from corsproxy.secrets import redact_bytes

# Decoded for display up to this much: a small compressed body can expand to gigabytes.
DISPLAY_LIMIT = 8 * 1024 * 1024
# Images the page shows as pictures. SVG is not among them: it can carry script, so it is
# shown as the text it is.
PICTURES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp", "image/x-icon")


def kind_of(content_type: str | None) -> str:
    essence = (content_type or "").split(";", 1)[0].strip().lower()
    if essence == "application/json" or essence.endswith("+json"):
        return "json"
    if essence in PICTURES:
        return "image"
    if is_text_type(essence):
        return "text"
    return "binary"


def shown_bytes(captured: Captured, secrets: frozenset[str]) -> tuple[bytes, str | None]:
    """The decoded body (as received when it cannot be decoded, with the reason)."""
    data, _, problem = decode(bytes(captured.data), captured.content_encoding, DISPLAY_LIMIT)
    return redact_bytes(data, secrets), problem


def describe(captured: Captured | None, secrets: frozenset[str]) -> dict[str, Any] | None:
    """What the detail view says of a body before it fetches it."""
    if captured is None:
        return None
    data, problem = shown_bytes(captured, secrets)
    return {
        # Bytes as they went over the wire, all of them, and the part kept.
        "size": captured.size,
        "kept": len(captured.data),
        "cut": captured.cut,
        "content_type": captured.content_type,
        "content_encoding": captured.content_encoding,
        "decoded_size": len(data),
        "kind": kind_of(captured.content_type),
        "problem": problem,
    }


def media_type(kind: str, content_type: str | None) -> str:
    """What the body is served to the page as: never a type the browser would run."""
    if kind == "image":
        return (content_type or "application/octet-stream").split(";", 1)[0]
    if kind == "json":
        return "application/json"
    if kind == "text":
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


def har_body(captured: Captured | None, secrets: frozenset[str]) -> StoredBody | None:
    """A captured body as HAR stores it: decoded, text or base64, marked when cut."""
    if captured is None:
        return None
    data, problem = shown_bytes(captured, secrets)
    return stored(data, captured.content_type or "", truncated=captured.cut, problem=problem)
