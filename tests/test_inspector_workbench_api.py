"""The inspector's workbench API: bodies kept and shown decoded, the record exported as
HAR (all or some), cleared, and "mock this" turning an exchange into a mock for this run.
Through the real proxy and a real upstream that answers in gzip, br and zstd."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from corsproxy.config.checker import parse_config
from tests.codings import ENCODERS, coded_json
from tests.conftest import ProxyFactory
from tests.har import schema_errors

LOCAL = "http://localhost:5173"
TOKEN = "tok-workbench-77"
DOCUMENT = {"user": {"id": 7, "name": "Ada"}, "token_seen": TOKEN}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


@pytest.fixture
def transport() -> str:
    """The inspector's API is aiohttp's; the exchanges go through the front door, as
    `corsproxy serve` serves them."""
    return "front door"


def api_app() -> web.Application:
    async def coded(request: web.Request) -> web.Response:
        coding = request.match_info["coding"]
        return coded_json(coding, json.dumps(DOCUMENT).encode())

    async def login(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True}, headers={"X-Request-Id": "login-1"})

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def big(request: web.Request) -> web.Response:
        return web.Response(text="b" * 5000)

    app = web.Application()
    app.router.add_get("/coded/{coding}", coded)
    app.router.add_post("/login", login)
    app.router.add_get("/logo.png", image)
    app.router.add_get("/big", big)
    return app


@pytest.fixture
async def api(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> str:
    return str((await aiohttp_server(api_app())).make_url("")).rstrip("/")


async def start(make_proxy: ProxyFactory, api: str, extra: str = "") -> TestClient[Any, Any]:
    return await make_proxy(
        f"routes:\n  - path: /\n    upstream: {api}\n    request_headers: {{X-Key: '${{API_TOKEN}}'}}\n"
        "  - path: /private\n    upstream: " + api + "\n    inspector: {bodies: false}\n"
        f"rules:\n  - origins: ['{LOCAL}']\n    allow_methods: [GET, POST]\n" + extra,
        API_TOKEN=TOKEN,
    )


async def latest(client: TestClient[Any, Any], path: str) -> dict[str, Any]:
    summaries = await (await client.get("/__corsproxy/api/exchanges")).json()
    summary = next(item for item in summaries if item["path"] == path)
    detail: dict[str, Any] = await (await client.get(f"/__corsproxy/api/exchanges/{summary['id']}")).json()
    return detail


@pytest.mark.parametrize("coding", list(ENCODERS))
async def test_a_coded_body_is_shown_decoded_with_both_sizes_and_the_wire_untouched(
    make_proxy: ProxyFactory, api: str, coding: str
) -> None:
    client = await start(make_proxy, api)
    response = await client.get(f"/coded/{coding}", headers={"Origin": LOCAL})
    wire = await response.read()
    assert response.headers["Content-Encoding"] == coding
    assert wire == ENCODERS[coding](json.dumps(DOCUMENT).encode())
    detail = await latest(client, f"/coded/{coding}")
    body = detail["response_body"]
    assert (body["size"], body["content_encoding"], body["kind"], body["cut"]) == (
        len(wire),
        coding,
        "json",
        False,
    )
    shown = await client.get(f"/__corsproxy/api/exchanges/{detail['id']}/body/response")
    assert shown.headers["Content-Type"] == "application/json"
    assert "sandbox" in shown.headers["Content-Security-Policy"]
    text = await shown.text()
    # Decoded, and the injected value the upstream echoed is hidden.
    assert json.loads(text) == {**DOCUMENT, "token_seen": "***"}
    assert body["decoded_size"] == len(text.encode())
    assert TOKEN not in text


async def test_request_bodies_are_kept_except_for_routes_that_say_not_to(
    make_proxy: ProxyFactory, api: str
) -> None:
    client = await start(make_proxy, api)
    await client.post(
        "/login", data='{"user": "ada", "password": "pw"}', headers={"Content-Type": "application/json"}
    )
    await client.post(
        "/private/login", data='{"password": "secret-pw"}', headers={"Content-Type": "application/json"}
    )
    kept = await latest(client, "/login")
    assert kept["request_body"]["kind"] == "json"
    shown = await client.get(f"/__corsproxy/api/exchanges/{kept['id']}/body/request")
    assert json.loads(await shown.text()) == {"user": "ada", "password": "pw"}
    private = await latest(client, "/private/login")
    assert private["request_body"] is None
    assert (await client.get(f"/__corsproxy/api/exchanges/{private['id']}/body/request")).status == 404


async def test_bodies_are_cut_at_max_body_and_the_oldest_lose_theirs_past_max_total(
    make_proxy: ProxyFactory, api: str
) -> None:
    client = await start(make_proxy, api, "inspector: {max_body: 1000, max_total: 2500}\n")
    for number in range(3):
        await client.get(f"/big?n={number}")
    summaries = await (await client.get("/__corsproxy/api/exchanges")).json()
    details = [
        await (await client.get(f"/__corsproxy/api/exchanges/{item['id']}")).json() for item in summaries
    ]
    newest = details[0]["response_body"]
    assert (newest["size"], newest["kept"], newest["cut"]) == (5000, 1000, True)
    # 3 x 1000 bytes is over 2500: the oldest exchange kept its headers, not its body.
    assert [detail["response_body"] is not None for detail in details] == [True, True, False]


async def test_the_record_exports_as_har_with_bodies_all_or_some(make_proxy: ProxyFactory, api: str) -> None:
    client = await start(make_proxy, api)
    await client.get("/coded/br")
    await client.get("/logo.png")
    await client.post("/login", data='{"user": "ada"}', headers={"Content-Type": "application/json"})
    everything = await (await client.get("/__corsproxy/api/har")).json()
    assert not schema_errors(everything)
    coded, picture, login = everything["log"]["entries"]
    assert json.loads(coded["response"]["content"]["text"])["user"]["name"] == "Ada"
    assert picture["response"]["content"]["encoding"] == "base64"
    assert json.loads(login["request"]["postData"]["text"]) == {"user": "ada"}
    assert TOKEN not in json.dumps(everything)
    some_id = login["_corsproxy"]["id"]
    some = await (await client.get(f"/__corsproxy/api/har?ids={some_id}")).json()
    assert [entry["request"]["method"] for entry in some["log"]["entries"]] == ["POST"]


async def test_clear_forgets_the_record(make_proxy: ProxyFactory, api: str) -> None:
    client = await start(make_proxy, api)
    await client.get("/big")
    cleared = await client.delete("/__corsproxy/api/exchanges")
    assert cleared.status == 200
    assert await (await client.get("/__corsproxy/api/exchanges")).json() == []


async def test_mock_this_answers_the_next_identical_request_and_gives_yaml_that_loads(
    make_proxy: ProxyFactory, api: str, tmp_path: Path
) -> None:
    client = await start(make_proxy, api)
    first = await client.get("/coded/gzip?page=2", headers={"Origin": LOCAL})
    await first.read()
    detail = await latest(client, "/coded/gzip")
    made = await client.post("/__corsproxy/api/mocks", json={"exchange": detail["id"]})
    assert made.status == 201
    mock = await made.json()
    assert mock["label"] == "mock[+0]"
    assert mock["entry"]["query"] == {"page": "2"}
    assert mock["entry"]["json"]["user"] == {"id": 7, "name": "Ada"}
    again = await client.get("/coded/gzip?page=2", headers={"Origin": LOCAL})
    assert again.headers["Corsproxy-Answer"] == "mock[+0]"
    assert again.headers["Access-Control-Allow-Origin"] == LOCAL
    assert (await again.json())["user"]["name"] == "Ada"
    # Another query is not the identical request: it goes upstream.
    assert "Corsproxy-Answer" not in (await client.get("/coded/gzip?page=3")).headers
    # The YAML to paste is a valid mocks section.
    config = parse_config(f"upstream: {api}\n" + mock["yaml"], "pasted.yaml", {})
    assert config.mocks[0].path == "/coded/gzip"
    assert yaml.safe_load(mock["yaml"])["mocks"][0]["status"] == 200
    listed = await (await client.get("/__corsproxy/api/mocks")).json()
    assert [item["label"] for item in listed["added"]] == ["mock[+0]"]
    assert (await client.delete("/__corsproxy/api/mocks/0")).status == 200
    assert "Corsproxy-Answer" not in (await client.get("/coded/gzip?page=2")).headers


async def test_a_mock_that_breaks_the_mock_rules_is_a_400_naming_the_key(
    make_proxy: ProxyFactory, api: str
) -> None:
    client = await start(make_proxy, api)
    bad = await client.post("/__corsproxy/api/mocks", json={"path": "/x", "status": 99})
    assert bad.status == 400
    assert (await bad.json())["problems"] == ["status: must be a status from 200 to 599, got 99"]
    await client.options("/x", headers={"Origin": LOCAL, "Access-Control-Request-Method": "GET"})
    preflight = await latest(client, "/x")
    refused = await client.post("/__corsproxy/api/mocks", json={"exchange": preflight["id"]})
    assert "a preflight is answered by the rules" in (await refused.json())["error"]


async def test_the_upstream_copy_shows_injected_values_as_variable_references(
    make_proxy: ProxyFactory, api: str
) -> None:
    client = await start(make_proxy, api)
    await client.get("/big")
    upstream = (await latest(client, "/big"))["upstream_request"]
    assert ["X-Key", "$API_TOKEN"] in upstream["headers_with_references"]
    assert ["X-Key", "***"] in upstream["headers"]
