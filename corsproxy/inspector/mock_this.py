"""The inspector's "mock this response": a mock for this run made from a recorded
exchange (its method, path, query, status, headers and body), checked as a config file's
mocks are, and the YAML to paste into the config file to keep it."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import yaml

from corsproxy.exchanges import Exchange
from corsproxy.headers import HOP_BY_HOP
from corsproxy.inspector.bodies import kind_of, shown_bytes
from corsproxy.mocks import CompiledMock

# Headers a mock cannot set (the rules and the framing are the proxy's) or should not
# repeat (they describe one answer, not every answer).
NOT_COPIED = (
    frozenset(
        {"content-length", "content-encoding", "date", "server", "vary", "corsproxy-answer", "age", "etag"}
    )
    | HOP_BY_HOP
)


class NotMockable(Exception):
    """An exchange no mock can stand for, and why."""


def entry_from(exchange: Exchange) -> dict[str, Any]:
    """The mocks entry that answers the next identical request as this one was answered."""
    if exchange.preflight:
        raise NotMockable("a preflight is answered by the rules, not by a mock")
    if exchange.status == 0:
        raise NotMockable("this request got no answer to mock")
    entry: dict[str, Any] = {"path": exchange.path, "method": exchange.method}
    if exchange.query:
        entry["query"] = dict(parse_qsl(exchange.query, keep_blank_values=True))
    entry["status"] = exchange.status
    headers = {
        name: value
        for name, value in exchange.response_headers.items()
        if name.lower() not in NOT_COPIED and not name.lower().startswith("access-control-")
    }
    if headers:
        entry["headers"] = headers
    captured = exchange.response_body
    if captured is not None and captured.size and exchange.status not in (204, 304):
        if captured.cut:
            raise NotMockable(
                f"the body was kept only in part ({len(captured.data)} of {captured.size} bytes)"
            )
        data, problem = shown_bytes(captured, exchange.secrets)
        if problem is not None:
            raise NotMockable(f"the body cannot be decoded: {problem}")
        kind = kind_of(captured.content_type)
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise NotMockable("a binary body: save it to a file and give the mock `file:`") from None
        if kind == "json":
            try:
                entry["json"] = json.loads(text)
            except ValueError:
                entry["body"] = text
        else:
            entry["body"] = text
    return entry


def as_yaml(entry: dict[str, Any]) -> str:
    """The entry as it goes under ``mocks:`` in the config file."""
    dumped = yaml.safe_dump([entry], sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)
    return "mocks:\n" + "".join(f"  {line}\n" for line in dumped.splitlines())


def describe(mock: CompiledMock) -> dict[str, Any]:
    config = mock.config
    entry: dict[str, Any] = {"path": config.path}
    if config.method:
        entry["method"] = config.method[0] if len(config.method) == 1 else list(config.method)
    if config.query:
        entry["query"] = dict(config.query)
    entry["status"] = config.status
    if config.headers:
        entry["headers"] = dict(config.headers)
    if config.json is not None:
        entry["json"] = json.loads(config.json)
    elif config.body is not None:
        entry["body"] = config.body
    elif config.file is not None:
        entry["file"] = config.file
    return {"number": mock.index, "label": mock.label, "entry": entry, "yaml": as_yaml(entry)}
