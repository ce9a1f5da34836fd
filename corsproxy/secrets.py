"""How values injected from ``${VAR}`` are hidden wherever the proxy shows or writes
traffic: the log, the inspector, its HAR export, recordings."""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ***, wherever it appears."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_bytes(data: bytes, secrets: Iterable[str]) -> bytes:
    """The same for a body's bytes."""
    for secret in secrets:
        encoded = secret.encode()
        if encoded and encoded in data:
            data = data.replace(encoded, REDACTED.encode())
    return data
