"""Simulated bad networks: latency, throttling and failures per path, switched live
through the inspector's API, every simulated answer readable by the page (CORS headers).
Each test runs on both transports (the `transport` fixture): the front door hands every
request a simulate entry matches to aiohttp, which carries it out."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from corsproxy import create_app
from corsproxy.config.checker import parse_config
from corsproxy.config.loader import load_config
from corsproxy.config.model import ConfigError
from corsproxy.state import STATE
from tests.conftest import FRONT_DOOR, ProxyFactory, ProxyTestServer, Upstream

LOCAL = "http://localhost:5173"
RULES = f"rules:\n  - origins: ['{LOCAL}']\n    allow_methods: [GET, POST, PUT]\n"


def served_by_front_door(client: TestClient[Any, Any]) -> int:
    assert isinstance(client.server, ProxyTestServer)
    return int(client.server.app[STATE].front_door.served)


async def timed(
    client: TestClient[Any, Any], path: str, **kwargs: Any
) -> tuple[float, aiohttp.ClientResponse, bytes]:
    began = time.perf_counter()
    response = await client.get(path, **kwargs)
    body = await response.read()
    return time.perf_counter() - began, response, body


async def test_latency_delays_the_answer_and_preflights_too_and_says_so(
    upstream: Upstream, make_proxy: ProxyFactory, transport: str
) -> None:
    client = await make_proxy(
        f"upstream: {upstream.url}\n{RULES}simulate:\n  - path: /api/**\n    latency: 300ms\n"
    )
    took, response, _ = await timed(client, "/api/items", headers={"Origin": LOCAL})
    assert response.status == 200
    # A lower bound, and a generous upper one: this is no timing benchmark.
    assert 0.3 <= took < 5
    began = time.perf_counter()
    preflight = await client.options(
        "/api/items", headers={"Origin": LOCAL, "Access-Control-Request-Method": "PUT"}
    )
    assert preflight.status == 204
    assert 0.3 <= time.perf_counter() - began < 5
    record = (await (await client.get("/__corsproxy/api/exchanges")).json())[:2]
    assert [item["simulated"] for item in record] == ["latency 300ms", "latency 300ms"]
    # Paths no entry matches are untouched, and on a new connection (a handed-over one
    # stays aiohttp's) the front door still serves them.
    served = served_by_front_door(client)
    async with aiohttp.ClientSession() as fresh:
        began = time.perf_counter()
        async with fresh.get(client.make_url("/other")) as other:
            assert other.status == 200
        assert time.perf_counter() - began < 0.3
    if transport == FRONT_DOOR:
        assert served_by_front_door(client) == served + 1


async def test_a_latency_range_is_drawn_between_its_bounds(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(
        f"upstream: {upstream.url}\nsimulate:\n  - path: /**\n    latency: 100ms..250ms\n"
    )
    for _ in range(3):
        took, response, _ = await timed(client, "/x")
        assert response.status == 200
        assert 0.1 <= took < 5


async def test_a_throttled_body_arrives_no_faster_than_the_limit_and_whole(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(
        f"upstream: {upstream.url}\nsimulate:\n  - path: /stream\n    throttle: 2MB/s\n"
    )
    took, response, body = await timed(client, "/stream?size=1048576")
    assert len(body) == 1048576
    assert took >= 1048576 / 2_000_000 * 0.9
    assert response.headers["Content-Length"] == "1048576"


async def test_a_mocked_body_is_throttled_as_a_forwarded_one(make_proxy: ProxyFactory) -> None:
    client = await make_proxy(
        "mocks:\n  - path: /mocked\n    body: '" + "m" * 100_000 + "'\n"
        "simulate:\n  - path: /mocked\n    throttle: 200KB/s\n"
    )
    took, response, body = await timed(client, "/mocked")
    assert body == b"m" * 100_000
    assert took >= 100_000 / 200_000 * 0.9
    assert response.headers["Corsproxy-Answer"] == "mock[0]"


async def test_every_3_fails_exactly_requests_3_6_and_9_with_cors_headers_and_retry_after(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(
        f"upstream: {upstream.url}\n{RULES}"
        "simulate:\n  - path: /api/orders/**\n    fail: {every: 3, status: 503, retry_after: 5}\n"
    )
    statuses = []
    for number in range(1, 10):
        response = await client.get(f"/api/orders/{number}", headers={"Origin": LOCAL})
        statuses.append(response.status)
        if response.status == 503:
            assert response.headers["Retry-After"] == "5"
            assert response.headers["Access-Control-Allow-Origin"] == LOCAL
            # Exposed, so the page's retry logic can read it.
            assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]
            assert (await response.text()).startswith("simulated by corsproxy: 503")
    assert statuses == [200, 200, 503, 200, 200, 503, 200, 200, 503]
    # A simulated failure stands in for the forward: the upstream never saw those.
    assert [seen.path for seen in upstream.received] == [f"/api/orders/{n}" for n in (1, 2, 4, 5, 7, 8)]


async def test_with_a_seed_rate_fails_the_same_requests_on_two_runs(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    text = f"upstream: {upstream.url}\nseed: 42\nsimulate:\n  - path: /**\n    fail: {{rate: 0.5}}\n"
    runs = []
    for _ in range(2):
        client = await make_proxy(text)
        runs.append([(await client.get(f"/r{n}")).status for n in range(20)])
    assert runs[0] == runs[1]
    assert {200, 503} == set(runs[0])


async def test_reset_closes_without_an_answer_and_the_proxy_keeps_serving(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(
        f"upstream: {upstream.url}\nsimulate:\n  - path: /flaky\n    fail: {{every: 1, mode: reset}}\n"
    )
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.get("/flaky")
    assert (await client.get("/fine")).status == 200
    (record,) = [
        item
        for item in await (await client.get("/__corsproxy/api/exchanges")).json()
        if item["path"] == "/flaky"
    ]
    assert (record["status"], record["simulated"]) == (0, "reset")
    assert record["error"] == "simulated reset: closed without an answer"


async def test_hang_never_answers_until_the_client_gives_up(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(
        f"upstream: {upstream.url}\nsimulate:\n  - path: /stuck\n    fail: {{every: 1, mode: hang}}\n"
    )
    with pytest.raises(TimeoutError):
        await client.get("/stuck", timeout=aiohttp.ClientTimeout(total=0.5))
    for _ in range(50):
        record = [
            item
            for item in await (await client.get("/__corsproxy/api/exchanges")).json()
            if item["path"] == "/stuck"
        ]
        if record:
            break
        await asyncio.sleep(0.1)
    assert record[0]["error"] == "simulated hang: no answer until the client gave up"


async def test_switches_through_the_api_change_the_next_request_without_a_restart(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(
        f"upstream: {upstream.url}\nsimulate:\n  - path: /api/**\n    fail: {{every: 1, status: 500}}\n"
    )
    listing = await (await client.get("/__corsproxy/api/simulate")).json()
    assert listing["offline"] is False
    assert listing["entries"][0] == {
        "index": 0, "enabled": True, "added": False, "path": "/api/**", "method": None, "line": 3,
        "fail": {"every": 1, "mode": "status", "status": 500},
    }  # fmt: skip
    assert (await client.get("/api/a")).status == 500
    switched = await client.put("/__corsproxy/api/simulate/0", json={"enabled": False})
    assert switched.status == 200
    assert (await client.get("/api/a")).status == 200
    added = await client.post(
        "/__corsproxy/api/simulate", json={"path": "/api/b", "fail": {"every": 1, "status": 429}}
    )
    assert added.status == 201
    assert (await added.json())["index"] == 1
    assert (await client.get("/api/b")).status == 429
    offline = await client.put("/__corsproxy/api/simulate/offline", json={"enabled": True})
    assert (await offline.json())["offline"] is True
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.get("/anything")
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.options("/anything", headers={"Origin": LOCAL, "Access-Control-Request-Method": "GET"})
    await client.put("/__corsproxy/api/simulate/offline", json={"enabled": False})
    assert (await client.get("/anything")).status == 200


async def test_a_bad_entry_or_switch_through_the_api_is_a_400_naming_the_key(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(f"upstream: {upstream.url}\n")
    bad = await client.post("/__corsproxy/api/simulate", json={"path": "/x", "fail": {"rate": 2}})
    assert bad.status == 400
    assert (await bad.json())["problems"] == [
        "fail.rate: must be a number from 0 to 1 (the share of requests that fail), got 2"
    ]
    typo = await client.post("/__corsproxy/api/simulate", json={"path": "/x", "latncy": "1s"})
    assert "latncy: unknown key; did you mean 'latency'?" in (await typo.json())["problems"]
    assert (await client.put("/__corsproxy/api/simulate/0", json={"enabled": True})).status == 404
    assert (await client.put("/__corsproxy/api/simulate/offline", json={"enabled": "yes"})).status == 400
    foreign = await client.put(
        "/__corsproxy/api/simulate/offline",
        json={"enabled": True},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status == 403
    assert "Access-Control-Allow-Origin" not in foreign.headers
    assert (await (await client.get("/__corsproxy/api/simulate")).json())["offline"] is False


async def test_a_config_reload_applies_simulate_changes_and_keeps_entries_added_for_the_run(
    upstream: Upstream, tmp_path: Path, aiohttp_client: Any
) -> None:
    path = tmp_path / "corsproxy.yaml"
    path.write_text(f"upstream: {upstream.url}\nsimulate:\n  - path: /a\n    fail: {{every: 1}}\n")
    app = create_app(load_config(path, {}), watch=path)
    client = await aiohttp_client(ProxyTestServer(app))
    assert (await client.get("/a")).status == 503
    await client.post("/__corsproxy/api/simulate", json={"path": "/b", "fail": {"every": 1, "status": 418}})
    path.write_text(f"upstream: {upstream.url}\nsimulate:\n  - path: /c\n    fail: {{every: 1}}\n")
    for _ in range(60):
        if (await client.get("/a")).status == 200:
            break
        await asyncio.sleep(0.1)
    assert (await client.get("/a")).status == 200
    assert (await client.get("/c")).status == 503
    assert (await client.get("/b")).status == 418


@pytest.mark.parametrize(
    ("entry", "wanted"),
    [
        pytest.param("{latency: 300}", "simulate[0].latency: must be a duration such as 300ms", id="no unit"),
        pytest.param(
            "{latency: 2s..1s}", "simulate[0].latency: the range ends before it starts", id="backwards range"
        ),
        pytest.param(
            "{throttle: 50KB}", "simulate[0].throttle: must be a rate such as 50KB/s", id="rate without /s"
        ),
        pytest.param(
            "{fail: {rate: 1.5}}", "simulate[0].fail.rate: must be a number from 0 to 1", id="rate over 1"
        ),
        pytest.param(
            "{fail: {every: 0}}", "simulate[0].fail.every: must be a positive integer", id="every 0"
        ),
        pytest.param(
            "{fail: {rate: 0.1, every: 2}}", "simulate[0].fail.every: give rate or every, not both", id="both"
        ),
        pytest.param("{fail: {status: 503}}", "simulate[0].fail: say how often", id="never"),
        pytest.param(
            "{fail: {every: 1, status: 700}}",
            "simulate[0].fail.status: must be a status from 200 to 599",
            id="status",
        ),
        pytest.param(
            "{fail: {every: 1, mode: reset, status: 503}}",
            "simulate[0].fail.status: a reset sends no answer: status goes with mode: status",
            id="reset with a status",
        ),
        pytest.param(
            "{fail: {every: 1, mode: drop}}",
            "simulate[0].fail.mode: must be one of status, reset, hang",
            id="mode",
        ),
        pytest.param(
            "{}", "simulate[0]: does nothing: give at least one of latency, throttle, fail", id="nothing"
        ),
        pytest.param(
            "{latency: 1s, mehtod: GET}", "simulate[0].mehtod: unknown key; did you mean 'method'?", id="typo"
        ),
    ],
)
def test_every_simulate_mistake_is_a_config_error_with_its_key_and_line(entry: str, wanted: str) -> None:
    text = "upstream: http://127.0.0.1:9\nsimulate:\n  - path: /api/**\n"
    text = text.replace(
        "  - path: /api/**\n",
        f"  - {{path: /api/**, {entry[1:]}\n" if entry != "{}" else "  - {path: /api/**}\n",
    )
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "test.yaml", {})
    assert any(wanted in error and "(line 3)" in error for error in raised.value.errors), raised.value.errors


def test_a_seed_must_be_an_integer() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config("upstream: http://127.0.0.1:9\nseed: lucky\n", "test.yaml", {})
    assert raised.value.errors == ["seed: must be an integer, got 'lucky' (line 2)"]
