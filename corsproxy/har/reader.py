"""Reading a HAR's entries back, for replay: a HAR written by corsproxy, by Chromium's
DevTools ("Save all as HAR") or by Playwright's ``record_har_path``. Only what replay
needs is read; every entry that lacks it is named with its index."""

from __future__ import annotations

import binascii
import json
from pathlib import Path
from typing import Any, NamedTuple

from corsproxy.har.decode import body_bytes
from corsproxy.headers import CACHE_VALIDATORS


class HarError(Exception):
    """A file that cannot be replayed, with every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class RecordedExchange(NamedTuple):
    """One entry: the request it answers and the answer, body decoded."""

    position: int  # its index in log.entries
    method: str
    url: str
    request_body: bytes | None  # None: the request had none
    status: int
    status_text: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    mime_type: str
    # False when the body was cut at record.max_body or broke off (``_truncated``).
    complete: bool = True
    # The request was conditional (If-None-Match, ...): what a 304 answers.
    conditional: bool = False


def read_har(path: Path) -> tuple[RecordedExchange, ...]:
    try:
        data = json.loads(path.read_bytes())
    except OSError as error:
        raise HarError([f"cannot read {str(path)!r}: {error.strerror}"]) from error
    except ValueError as error:
        raise HarError([f"{str(path)!r} is not JSON: {error}"]) from error
    log = data.get("log") if isinstance(data, dict) else None
    entries = log.get("entries") if isinstance(log, dict) else None
    if not isinstance(entries, list):
        raise HarError([f"{str(path)!r} is not a HAR file: no log.entries list"])
    problems: list[str] = []
    recorded = []
    for index, item in enumerate(entries):
        try:
            found = _exchange(index, item)
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as error:
            problems.append(f"entries[{index}]: {_describe(error)}")
            continue
        if found is not None:
            recorded.append(found)
    if problems:
        raise HarError(problems[:10] + ([f"and {len(problems) - 10} more"] if len(problems) > 10 else []))
    return tuple(recorded)


def _describe(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"missing {error.args[0]!r}"
    return str(error) or type(error).__name__


def _mapping(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be an object")
    return value


def _exchange(index: int, entry: Any) -> RecordedExchange | None:
    entry = _mapping(entry, "the entry")
    request = _mapping(entry["request"], "request")
    response = _mapping(entry["response"], "response")
    status = int(response["status"])
    if status < 200:
        # 0: a request the browser never got an answer to (blocked, cancelled); 101: a
        # WebSocket, whose messages are not replayed. Neither is an answer to replay.
        return None
    content = _mapping(response.get("content") or {}, "response.content")
    text = content.get("text")
    body = b"" if text is None else body_bytes(str(text), content.get("encoding"))
    post = request.get("postData")
    request_body = None
    conditional = any(
        str(header.get("name", "")).lower() in CACHE_VALIDATORS
        for header in request.get("headers", [])
        if isinstance(header, dict)
    )
    if isinstance(post, dict) and post.get("text") is not None:
        request_body = body_bytes(str(post["text"]), post.get("_encoding") or post.get("encoding"))
    headers = tuple((str(header["name"]), str(header["value"])) for header in response.get("headers", []))
    method = request["method"]
    url = request["url"]
    if not isinstance(method, str) or not isinstance(url, str):
        raise TypeError("request.method and request.url must be strings")
    return RecordedExchange(
        position=index,
        method=method.upper(),
        url=url,
        request_body=request_body,
        status=status,
        status_text=str(response.get("statusText") or ""),
        headers=headers,
        body=body,
        mime_type=str(content.get("mimeType") or ""),
        complete=not content.get("_truncated"),
        conditional=conditional,
    )
