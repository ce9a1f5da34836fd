"""HAR 1.2 entries built from what the proxy saw of an exchange (the spec's "entries",
"request", "response", "content" and "timings" objects). Plain dicts, ready for json."""

from __future__ import annotations

import datetime
import email.utils
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from corsproxy.har.decode import StoredBody
from corsproxy.version import __version__

HAR_VERSION = "1.2"
CREATOR = {"name": "corsproxy", "version": __version__}
# HAR 1.2: "-1 if the info is not available" (headersSize, bodySize, timings).
UNKNOWN = -1

Json = dict[str, Any]


def log_skeleton() -> Json:
    """A HAR's ``log`` without entries."""
    return {"version": HAR_VERSION, "creator": dict(CREATOR), "pages": []}


def iso_time(wall_seconds: float) -> str:
    """HAR 1.2 startedDateTime: ISO 8601 with milliseconds and the time zone."""
    moment = datetime.datetime.fromtimestamp(wall_seconds, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def name_values(pairs: Iterable[tuple[str, str]]) -> list[Json]:
    return [{"name": name, "value": value} for name, value in pairs]


def request_cookies(header: str | None) -> list[Json]:
    """The Cookie header's pairs (RFC 6265 section 5.4: "name=value; name=value")."""
    cookies = []
    for part in (header or "").split(";"):
        name, equals, value = part.strip().partition("=")
        if equals and name:
            cookies.append({"name": name, "value": value})
    return cookies


def response_cookies(set_cookies: Iterable[str]) -> list[Json]:
    """Each Set-Cookie's name, value and the attributes HAR names (RFC 6265 section 5.2)."""
    cookies = []
    for line in set_cookies:
        pair, *attributes = line.split(";")
        name, equals, value = pair.strip().partition("=")
        if not equals or not name:
            continue
        cookie: Json = {"name": name, "value": value}
        for attribute in attributes:
            key, _, given = attribute.strip().partition("=")
            key = key.lower()
            if key in ("path", "domain"):
                cookie[key] = given
            elif key == "expires":
                cookie[key] = _iso_expiry(given)
            elif key == "httponly":
                cookie["httpOnly"] = True
            elif key == "secure":
                cookie["secure"] = True
        cookies.append(cookie)
    return cookies


def _iso_expiry(http_date: str) -> str:
    """HAR 1.2 wants cookie expiry in ISO 8601; Set-Cookie gives an HTTP date."""
    try:
        return email.utils.parsedate_to_datetime(http_date).isoformat(timespec="milliseconds")
    except (TypeError, ValueError):
        return http_date


def content(body: StoredBody, mime_type: str, received_size: int) -> Json:
    """HAR ``content``: ``size`` is the decoded length, ``compression`` what the coding saved."""
    stored: Json = {"size": body.size, "mimeType": mime_type, "text": body.text}
    if body.base64:
        stored["encoding"] = "base64"
    if not body.truncated and received_size < body.size:
        stored["compression"] = body.size - received_size
    notes = []
    if body.truncated:
        notes.append(f"truncated at {body.size} bytes (record.max_body)")
        # Machine-readable, for replay (HAR custom fields start with an underscore).
        stored["_truncated"] = True
    if body.problem:
        notes.append(body.problem)
    if notes:
        stored["comment"] = "; ".join(notes)
    return stored


def post_data(body: StoredBody, mime_type: str) -> Json:
    data: Json = {"mimeType": mime_type, "text": body.text, "params": []}
    if body.base64:
        # Not in HAR 1.2 for postData, but what Chromium and Playwright write for binary bodies.
        data["_encoding"] = "base64"
    if body.truncated:
        data["comment"] = f"truncated at {body.size} bytes (record.max_body)"
    return data


def timings(wait_ms: float, receive_ms: float) -> Json:
    """What the proxy measures: the wait for the answer's head, and its body. Connection
    set-up is inside ``wait`` (the pool reuses connections, so it is usually none)."""
    return {
        "blocked": UNKNOWN,
        "dns": UNKNOWN,
        "connect": UNKNOWN,
        "ssl": UNKNOWN,
        "send": 0,
        "wait": round(max(wait_ms, 0.0), 3),
        "receive": round(max(receive_ms, 0.0), 3),
    }


def entry(
    *,
    started: float,
    method: str,
    url: str,
    request_headers: list[tuple[str, str]],
    request_body: StoredBody | None,
    status: int,
    status_text: str,
    response_headers: list[tuple[str, str]],
    response_body: StoredBody,
    response_body_size: int,
    wait_ms: float,
    receive_ms: float,
    extra: Json | None = None,
) -> Json:
    """One HAR entry. ``response_body_size``: bytes of body received (before decoding)."""
    lowered_request = {name.lower(): value for name, value in request_headers}
    lowered_response = {name.lower(): value for name, value in response_headers}
    request: Json = {
        "method": method,
        "url": url,
        "httpVersion": "HTTP/1.1",
        "cookies": request_cookies(lowered_request.get("cookie")),
        "headers": name_values(request_headers),
        "queryString": name_values(parse_qsl(urlsplit(url).query, keep_blank_values=True)),
        "headersSize": UNKNOWN,
        "bodySize": 0 if request_body is None else request_body.size,
    }
    if request_body is not None:
        request["postData"] = post_data(request_body, lowered_request.get("content-type", ""))
    mime_type = lowered_response.get("content-type", "")
    set_cookies = [value for name, value in response_headers if name.lower() == "set-cookie"]
    response: Json = {
        "status": status,
        "statusText": status_text,
        "httpVersion": "HTTP/1.1",
        "cookies": response_cookies(set_cookies),
        "headers": name_values(response_headers),
        "content": content(response_body, mime_type, response_body_size),
        "redirectURL": lowered_response.get("location", ""),
        "headersSize": UNKNOWN,
        "bodySize": response_body_size,
    }
    wait = round(max(wait_ms, 0.0), 3)
    receive = round(max(receive_ms, 0.0), 3)
    made: Json = {
        "startedDateTime": iso_time(started),
        "time": round(wait + receive, 3),
        "request": request,
        "response": response,
        "cache": {},
        "timings": timings(wait, receive),
    }
    if extra:
        made.update(extra)
    return made
