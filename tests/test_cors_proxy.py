"""CORS through the real proxy: preflights answered here, headers on every response."""

from __future__ import annotations

import pytest

from tests.conftest import ProxyFactory, Upstream

LOCAL = "http://localhost:5173"
EVIL = "https://evil.example"


def rules_for(upstream: Upstream) -> str:
    return f"""
upstream: {upstream.url}
rules:
  - path: /public/**
    origins: ["*"]
    allow_methods: [GET]
  - path: /**
    origins: ["{LOCAL}"]
    allow_methods: [GET, POST, PUT, DELETE]
    allow_headers: [Content-Type, X-API-Key]
    expose_headers: [X-Request-Id]
    allow_credentials: true
    max_age: 600
"""


def preflight_headers(origin: str, method: str, requested: str | None = None) -> dict[str, str]:
    headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if requested is not None:
        headers["Access-Control-Request-Headers"] = requested
    return headers


async def test_an_allowed_preflight_is_answered_204_and_never_forwarded(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(rules_for(upstream))
    response = await client.options(
        "/api/items", headers=preflight_headers(LOCAL, "PUT", "content-type,x-api-key")
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == LOCAL
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert response.headers["Access-Control-Allow-Methods"] == "GET, POST, PUT, DELETE"
    assert response.headers["Access-Control-Allow-Headers"] == "Content-Type, X-API-Key"
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in response.headers["Vary"]
    assert upstream.received == []


@pytest.mark.parametrize(
    ("origin", "method", "requested", "reason"),
    [
        pytest.param(
            EVIL, "PUT", None, "origin 'https://evil.example' is not allowed", id="disallowed origin"
        ),
        pytest.param(LOCAL, "PATCH", None, "method PATCH is not allowed", id="disallowed method"),
        pytest.param(LOCAL, "PUT", "x-foo", "header x-foo is not allowed", id="disallowed header"),
    ],
)
async def test_a_refused_preflight_is_a_403_that_says_why_and_is_never_forwarded(
    upstream: Upstream, make_proxy: ProxyFactory, origin: str, method: str, requested: str | None, reason: str
) -> None:
    client = await make_proxy(rules_for(upstream))
    response = await client.options("/api/items", headers=preflight_headers(origin, method, requested))
    assert response.status == 403
    assert reason in await response.text()
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Methods" not in response.headers
    assert upstream.received == []


async def test_an_options_request_that_is_not_a_preflight_is_forwarded(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(rules_for(upstream))
    without_method = await client.options("/api/items", headers={"Origin": LOCAL})
    without_origin = await client.options("/api/items", headers={"Access-Control-Request-Method": "PUT"})
    assert (without_method.status, without_origin.status) == (200, 200)
    assert [seen.method for seen in upstream.received] == ["OPTIONS", "OPTIONS"]
    # The CORS check on an actual response looks at the origin, never the method (Fetch
    # standard): OPTIONS is not in this rule's allow_methods, yet the answer is readable.
    assert without_method.headers["Access-Control-Allow-Origin"] == LOCAL
    assert "Access-Control-Allow-Methods" not in without_method.headers


async def test_the_upstreams_own_cors_headers_are_replaced_never_duplicated(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(rules_for(upstream))
    response = await client.get("/own-cors", headers={"Origin": LOCAL})
    assert response.headers.getall("Access-Control-Allow-Origin") == [LOCAL]
    assert response.headers.getall("Access-Control-Allow-Credentials") == ["true"]


async def test_a_refused_origin_also_loses_the_upstreams_cors_headers(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(rules_for(upstream))
    response = await client.get("/own-cors", headers={"Origin": EVIL})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Credentials" not in response.headers


async def test_vary_origin_is_appended_to_the_upstreams_vary(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(rules_for(upstream))
    response = await client.get("/own-cors", headers={"Origin": LOCAL})
    assert response.headers.getall("Vary") == ["Accept-Encoding, Origin"]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Origin": LOCAL}, id="allowed origin"),
        pytest.param({"Origin": EVIL}, id="refused origin"),
        pytest.param({}, id="no origin"),
    ],
)
async def test_vary_origin_is_on_every_response(
    upstream: Upstream, make_proxy: ProxyFactory, headers: dict[str, str]
) -> None:
    client = await make_proxy(rules_for(upstream))
    response = await client.get("/api/x", headers=headers)
    assert response.headers["Vary"] == "Origin"


async def test_a_request_without_origin_passes_through_without_cors_headers(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(rules_for(upstream))
    response = await client.get("/api/x")
    assert response.status == 200
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]


@pytest.mark.parametrize("code", [301, 302, 304, 400, 401, 404, 500, 503])
async def test_cors_headers_are_on_every_status(
    upstream: Upstream, make_proxy: ProxyFactory, code: int
) -> None:
    client = await make_proxy(rules_for(upstream))
    response = await client.get(f"/status/{code}", headers={"Origin": LOCAL}, allow_redirects=False)
    assert response.status == code
    assert response.headers["Access-Control-Allow-Origin"] == LOCAL
    assert response.headers["Access-Control-Allow-Credentials"] == "true"


async def test_a_public_path_answers_star_to_any_origin(upstream: Upstream, make_proxy: ProxyFactory) -> None:
    client = await make_proxy(rules_for(upstream))
    response = await client.get("/public/logo", headers={"Origin": EVIL})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers


async def test_exposed_headers_are_listed_on_actual_responses(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(rules_for(upstream))
    response = await client.get("/api/x", headers={"Origin": LOCAL})
    assert response.headers["Access-Control-Expose-Headers"] == "X-Request-Id"


async def test_star_expose_with_credentials_lists_the_upstreams_header_names(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(f"""
upstream: {upstream.url}
rules:
  - origins: ["{LOCAL}"]
    expose_headers: ["*"]
    allow_credentials: true
""")
    response = await client.get("/api/x", headers={"Origin": LOCAL})
    exposed = {name.strip().lower() for name in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"x-request-id", "x-internal"} <= exposed
    assert "*" not in exposed


async def test_private_network_preflight_is_answered_only_where_allowed(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(f"""
upstream: {upstream.url}
rules:
  - path: /lan/**
    origins: ["{LOCAL}"]
    allow_private_network: true
  - origins: ["{LOCAL}"]
""")
    pna = {**preflight_headers(LOCAL, "GET"), "Access-Control-Request-Private-Network": "true"}
    allowed = await client.options("/lan/device", headers=pna)
    refused = await client.options("/other", headers=pna)
    assert allowed.status == 204
    assert allowed.headers["Access-Control-Allow-Private-Network"] == "true"
    assert refused.status == 403
    assert "Access-Control-Allow-Private-Network" not in refused.headers
