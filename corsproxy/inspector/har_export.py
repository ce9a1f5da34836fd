"""The exchange record as a HAR 1.2 log (``GET /__corsproxy/api/har``): what the browser
and the proxy said to each other, oldest first, secrets as ***, each entry carrying the
proxy's CORS verdict and who answered in a ``_corsproxy`` member (HAR custom fields start
with an underscore). The record keeps no bodies, so entries have none."""

from __future__ import annotations

from typing import Any

from corsproxy.exchanges import Exchange
from corsproxy.har.decode import StoredBody
from corsproxy.har.entries import entry, log_skeleton
from corsproxy.inspector.bodies import har_body
from corsproxy.secrets import redact

NO_BODY = StoredBody("", False, 0, False, "no body kept (inspector.max_body, max_total)")


def _redacted(items: list[tuple[str, str]], secrets: frozenset[str]) -> list[tuple[str, str]]:
    return [(name, redact(value, secrets)) for name, value in items]


def har_entry(exchange: Exchange, scheme: str) -> dict[str, Any]:
    host = exchange.request_headers.get("Host", "localhost")
    query = f"?{exchange.query}" if exchange.query else ""
    wait = exchange.upstream_ms if exchange.upstream_ms is not None else exchange.duration_ms
    length = exchange.response_headers.get("Content-Length", "")
    made = entry(
        started=exchange.started,
        method=exchange.method,
        url=f"{scheme}://{host}{exchange.path}{query}",
        request_headers=_redacted(list(exchange.request_headers.items()), exchange.secrets),
        request_body=har_body(exchange.request_body, exchange.secrets),
        status=exchange.status,
        status_text="",
        response_headers=_redacted(list(exchange.response_headers.items()), exchange.secrets),
        response_body=har_body(exchange.response_body, exchange.secrets) or NO_BODY,
        response_body_size=exchange.response_body.size
        if exchange.response_body is not None
        else (int(length) if length.isdigit() else -1),
        wait_ms=wait,
        receive_ms=exchange.duration_ms - wait,
    )
    made["_corsproxy"] = {
        "id": exchange.id,
        "source": exchange.source,
        "preflight": exchange.preflight,
        "cors": {"allowed": exchange.allowed, "reason": exchange.reason, "rule": exchange.rule},
        "error": exchange.error,
    }
    return made


def ring_as_har(exchanges: list[Exchange], scheme: str) -> dict[str, Any]:
    """``exchanges`` newest first, as the record lists them."""
    return {"log": {**log_skeleton(), "entries": [har_entry(item, scheme) for item in reversed(exchanges)]}}
