"""Mock answers: answered by the proxy, never forwarded, with the rules' CORS headers on
every status. Each test runs on both transports (the `transport` fixture)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from corsproxy import create_app
from corsproxy.config.checker import parse_config
from corsproxy.config.loader import load_config
from corsproxy.config.model import ConfigError
from corsproxy.state import STATE
from tests.conftest import FRONT_DOOR, ProxyFactory, ProxyTestServer, Upstream

LOCAL = "http://localhost:5173"
CREDENTIALED_RULES = (
    f"rules:\n  - origins: ['{LOCAL}']\n    allow_credentials: true\n"
    "    allow_headers: [X-Api-Key]\n    expose_headers: [X-Mock]\n"
)


def served_by_front_door(client: TestClient[Any, Any]) -> int:
    assert isinstance(client.server, ProxyTestServer)
    return int(client.server.app[STATE].front_door.served)


async def test_a_mock_answers_with_its_status_headers_and_json_and_nothing_is_forwarded(
    upstream: Upstream, make_proxy: ProxyFactory, transport: str
) -> None:
    client = await make_proxy(
        f"upstream: {upstream.url}\n{CREDENTIALED_RULES}"
        "mocks:\n  - path: /api/users/*\n    method: GET\n    status: 201\n"
        "    headers: {X-Mock: '1'}\n    json: {id: 1, name: Ada}\n"
    )
    response = await client.get("/api/users/7", headers={"Origin": LOCAL, "Cookie": "session=1"})
    assert response.status == 201
    assert json.loads(await response.read()) == {"id": 1, "name": "Ada"}
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Mock"] == "1"
    # The rule's CORS headers, as on a live answer: credentials, exposed headers, Vary.
    assert response.headers["Access-Control-Allow-Origin"] == LOCAL
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert response.headers["Access-Control-Expose-Headers"] == "X-Mock"
    assert "Origin" in response.headers["Vary"]
    assert response.headers["Corsproxy-Answer"] == "mock[0]"
    assert upstream.received == []
    if transport == FRONT_DOOR:
        assert served_by_front_door(client) == 1


async def test_a_preflight_for_a_mocked_path_is_answered_by_the_rules(make_proxy: ProxyFactory) -> None:
    client = await make_proxy(f"{CREDENTIALED_RULES}mocks:\n  - path: /api/**\n    json: []\n")
    response = await client.options(
        "/api/items",
        headers={
            "Origin": LOCAL,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-api-key",
        },
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Headers"] == "X-Api-Key"
    assert response.headers["Access-Control-Allow-Credentials"] == "true"


async def test_with_mocks_alone_a_path_no_mock_matches_gets_corsproxys_404(make_proxy: ProxyFactory) -> None:
    client = await make_proxy("mocks:\n  - path: /api/health\n    body: ok\n")
    answered = await client.get("/api/health", headers={"Origin": LOCAL})
    assert (answered.status, await answered.text()) == (200, "ok")
    assert answered.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert answered.headers["Access-Control-Allow-Origin"] == LOCAL
    missing = await client.get("/api/other", headers={"Origin": LOCAL})
    assert missing.status == 404
    assert "no route for /api/other" in await missing.text()
    assert missing.headers["Access-Control-Allow-Origin"] == LOCAL


@pytest.mark.parametrize(
    ("method", "target", "mocked"),
    [
        ("GET", "/api/users?page=2", True),
        ("GET", "/api/users?sort=name&page=2", True),
        ("HEAD", "/api/users?page=2", True),
        ("GET", "/api/users?page=3", False),
        ("GET", "/api/users", False),
        ("POST", "/api/users?page=2", False),
        ("GET", "/api/users/1?page=2", False),
    ],
)
async def test_requests_no_mock_matches_go_upstream(
    upstream: Upstream, make_proxy: ProxyFactory, method: str, target: str, mocked: bool
) -> None:
    client = await make_proxy(
        f"upstream: {upstream.url}\nmocks:\n  - path: /api/users\n    method: [GET]\n"
        "    query: {page: '2'}\n    json: {page: 2}\n"
    )
    response = await client.request(method, target, headers={"Origin": LOCAL})
    assert response.status == 200
    assert (response.headers.get("Corsproxy-Answer") == "mock[0]") is mocked
    assert len(upstream.received) == (0 if mocked else 1)


async def test_the_first_matching_mock_wins(make_proxy: ProxyFactory) -> None:
    client = await make_proxy(
        "mocks:\n  - path: /api/users/me\n    json: {me: true}\n"
        "  - path: /api/users/*\n    json: {me: false}\n"
    )
    assert json.loads(await (await client.get("/api/users/me")).read()) == {"me": True}
    assert json.loads(await (await client.get("/api/users/2")).read()) == {"me": False}


async def test_a_refused_origin_gets_the_mock_without_cors_headers_as_it_would_a_live_answer(
    make_proxy: ProxyFactory,
) -> None:
    client = await make_proxy(f"rules:\n  - origins: ['{LOCAL}']\nmocks:\n  - path: /**\n    json: 1\n")
    response = await client.get("/x", headers={"Origin": "https://evil.example"})
    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_a_mock_file_is_read_per_request_and_a_deleted_one_is_a_500_naming_it(
    make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    report = tmp_path / "report.csv"
    report.write_text("a,b\n")
    client = await make_proxy(f"mocks:\n  - path: /report\n    file: {report}\n")
    first = await client.get("/report", headers={"Origin": LOCAL})
    assert (first.status, await first.text()) == (200, "a,b\n")
    assert first.headers["Content-Type"] == "text/csv; charset=utf-8"
    report.write_text("a,b\n1,2\n")
    assert await (await client.get("/report")).text() == "a,b\n1,2\n"
    report.unlink()
    gone = await client.get("/report", headers={"Origin": LOCAL})
    assert gone.status == 500
    assert f"mock[0] cannot read its file '{report}'" in await gone.text()
    assert gone.headers["Access-Control-Allow-Origin"] == LOCAL


async def test_a_binary_file_keeps_its_bytes_and_its_type(make_proxy: ProxyFactory, tmp_path: Path) -> None:
    image = tmp_path / "pixel.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    client = await make_proxy(f"mocks:\n  - path: /pixel.png\n    file: {image}\n")
    response = await client.get("/pixel.png")
    assert await response.read() == b"\x89PNG\r\n\x1a\n\x00\xff"
    assert response.headers["Content-Type"] == "image/png"


async def test_a_mock_with_no_body_answers_its_status_empty(make_proxy: ProxyFactory) -> None:
    client = await make_proxy("mocks:\n  - path: /api/items/*\n    method: DELETE\n    status: 204\n")
    response = await client.delete("/api/items/3", headers={"Origin": LOCAL})
    assert response.status == 204
    assert await response.read() == b""
    assert response.headers["Access-Control-Allow-Origin"] == LOCAL


async def test_the_log_line_and_the_record_say_a_mock_answered(
    make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="corsproxy")
    client = await make_proxy("mocks:\n  - path: /api/me\n    json: {}\n")
    await client.get("/api/me", headers={"Origin": LOCAL})
    (line,) = [record.getMessage() for record in caplog.records if "GET /api/me" in record.getMessage()]
    assert "-> 200" in line
    assert "answered by mock[0]" in line
    (record,) = await (await client.get("/__corsproxy/api/exchanges")).json()
    assert record["source"] == "mock[0]"


@pytest.mark.parametrize(
    ("mocks", "error"),
    [
        (
            "  - path: /a\n    json: 1\n    body: x\n",
            "mocks[0].body: give one of json, body, file, not json and body (line 4)",
        ),
        (
            "  - path: /a\n    status: 700\n",
            "mocks[0].status: must be a status from 200 to 599, got 700 (line 3)",
        ),
        (
            "  - path: /a\n    status: 101\n",
            "mocks[0].status: must be a status from 200 to 599, got 101; 1xx are not final answers (line 3)",
        ),
        ("  - path: /a\n    status: 204\n    json: {}\n", "mocks[0].json: a 204 answer has no body (line 4)"),
        (
            "  - path: 'api/*'\n    json: 1\n",
            "mocks[0].path: must be a glob starting with '/', got 'api/*' (line 2)",
        ),
        ("  - path: ''\n    json: 1\n", "mocks[0].path: must be a glob starting with '/', got '' (line 2)"),
        (
            "  - json: 1\n",
            "mocks[0].path: missing: the path (a glob, as in rules) this mock answers (line 2)",
        ),
        ("  - path: /a\n    file: nowhere.json\n", "mocks[0].file: no such file:"),
        ("  - path: /a\n    jsno: 1\n", "mocks[0].jsno: unknown key; did you mean 'json'? (line 3)"),
        ("  - path: /a\n    method: 'GE T'\n", "mocks[0].method: 'GE T' is not an HTTP method (line 3)"),
        ("  - path: /a\n    query: [page]\n", "mocks[0].query: must be a mapping of parameter to value"),
        (
            "  - path: /a\n    headers: {Access-Control-Allow-Origin: '*'}\n",
            "mocks[0].headers.Access-Control-Allow-Origin: cannot be set on a mock: CORS headers come from "
            "the rules, as on every answer (line 3)",
        ),
        (
            "  - path: /a\n    headers: {Content-Length: '3'}\n",
            "mocks[0].headers.Content-Length: cannot be set on a mock: the proxy sets the message framing",
        ),
        ("  - path: /__corsproxy/x\n", "mocks[0].path: the /__corsproxy/ prefix belongs to the proxy itself"),
    ],
)
def test_every_mock_mistake_is_a_config_error_with_its_key_and_line(mocks: str, error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config("mocks:\n" + mocks, "test.yaml", {})
    assert any(error in text for text in raised.value.errors), raised.value.errors


def test_two_bad_mocks_are_both_reported() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config("mocks:\n  - path: /a\n    status: 1000\n  - path: b\n", "test.yaml", {})
    assert [text.split(":")[0] for text in raised.value.errors] == ["mocks[0].status", "mocks[1].path"]


def test_a_config_without_upstream_routes_or_mocks_says_all_three() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config("rules:\n  - origins: ['*']\n", "test.yaml", {})
    assert "missing: give `upstream: URL`, a list of `routes`, `mocks` or `replay`" in raised.value.errors[0]


def test_a_mock_file_is_found_beside_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "user.json").write_text('{"id": 1}')
    config_file = tmp_path / "corsproxy.yaml"
    config_file.write_text("mocks:\n  - path: /user\n    file: fixtures/user.json\n")
    assert load_config(config_file, {}).mocks[0].file == str(tmp_path / "fixtures" / "user.json")


async def test_hot_reload_applies_a_mock_edit(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], tmp_path: Path
) -> None:
    config_file = tmp_path / "corsproxy.yaml"
    config_file.write_text("mocks:\n  - path: /api/me\n    json: {name: before}\n")
    client = await aiohttp_client(
        ProxyTestServer(create_app(load_config(config_file, {}), watch=config_file))
    )
    assert json.loads(await (await client.get("/api/me")).read()) == {"name": "before"}
    config_file.write_text("mocks:\n  - path: /api/me\n    json: {name: after}\n")
    deadline = time.monotonic() + 5  # the watcher polls once a second
    while json.loads(await (await client.get("/api/me")).read()) != {"name": "after"}:
        assert time.monotonic() < deadline, "the edited mock was not reloaded"
        await asyncio.sleep(0.1)
