"""The CORS decision as a pure function: tables of (rules, request) -> headers and reason."""

from __future__ import annotations

import pytest

from corsproxy.config.model import RuleConfig
from corsproxy.cors.policy import Policy

LOCAL = "http://localhost:5173"

OPEN = RuleConfig(origins=("*",), allow_methods=("GET",), path="/public/**")
APP = RuleConfig(
    origins=(LOCAL,),
    allow_methods=("GET", "POST", "PUT", "PATCH", "DELETE"),
    allow_headers=("Content-Type", "Authorization"),
    expose_headers=("X-Request-Id",),
    allow_credentials=True,
    max_age=600,
)
WILDCARD_NO_CREDENTIALS = RuleConfig(origins=(LOCAL,), allow_methods=("*",), allow_headers=("*",))
WILDCARD_CREDENTIALS = RuleConfig(
    origins=(LOCAL,), allow_methods=("*",), allow_headers=("*",), allow_credentials=True
)
PUT_ONLY = RuleConfig(origins=(LOCAL,), allow_methods=("PUT",), allow_headers=("X-API-Key",))
ZERO_MAX_AGE = RuleConfig(origins=(LOCAL,), max_age=0)
PRIVATE = RuleConfig(origins=(LOCAL,), allow_private_network=True)
PATTERNS = RuleConfig(
    origins=("https://*.example.com", "http://localhost:*", r"regex:https://pr-\d+\.preview\.dev")
)


@pytest.mark.parametrize(
    ("rules", "path", "origin", "wanted"),
    [
        pytest.param(
            (OPEN, APP),
            "/public/logo.png",
            "https://anyone.example",
            {"Access-Control-Allow-Origin": "*"},
            id="a star rule without credentials answers star",
        ),
        pytest.param(
            (OPEN, APP),
            "/api/me",
            LOCAL,
            {
                "Access-Control-Allow-Origin": LOCAL,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Expose-Headers": "X-Request-Id",
            },
            id="a credentialed rule echoes the origin and sends ACAC true",
        ),
        pytest.param(
            (PATTERNS,),
            "/x",
            "https://api.eu.example.com",
            {"Access-Control-Allow-Origin": "https://api.eu.example.com"},
            id="a subdomain wildcard matches a deep subdomain",
        ),
        pytest.param(
            (PATTERNS,),
            "/x",
            "http://localhost:3000",
            {"Access-Control-Allow-Origin": "http://localhost:3000"},
            id="a port wildcard matches any port",
        ),
        pytest.param(
            (PATTERNS,),
            "/x",
            "https://pr-42.preview.dev",
            {"Access-Control-Allow-Origin": "https://pr-42.preview.dev"},
            id="a regex pattern matches in full",
        ),
    ],
)
def test_allowed_actual_requests_get_exactly_these_headers(
    rules: tuple[RuleConfig, ...], path: str, origin: str, wanted: dict[str, str]
) -> None:
    decision = Policy(rules).actual(path, origin)
    assert decision.allowed, decision.reason
    assert dict(decision.headers) == wanted


@pytest.mark.parametrize(
    ("rules", "path", "origin", "reason"),
    [
        pytest.param(
            (APP,),
            "/api",
            "http://localhost:3000",
            "origin 'http://localhost:3000' is not allowed for /api (allowed there: http://localhost:5173); "
            "the config has 'http://localhost:5173'",
            id="another port is refused and the near miss is named",
        ),
        pytest.param(
            (APP,),
            "/api",
            "http://LOCALHOST:5173",
            "the config has 'http://localhost:5173'",
            id="an origin differing in case is refused (origins match byte for byte)",
        ),
        pytest.param(
            (APP,),
            "/api",
            "http://localhost:5173/",
            "the config has 'http://localhost:5173'",
            id="an origin with a trailing slash is refused",
        ),
        pytest.param(
            (PATTERNS,),
            "/x",
            "https://example.com.evil.net",
            "is not allowed",
            id="a subdomain wildcard does not match a suffix trick",
        ),
        pytest.param(
            (PATTERNS,),
            "/x",
            "https://evilexample.com",
            "is not allowed",
            id="a subdomain wildcard does not match a longer label",
        ),
        pytest.param(
            (PATTERNS,),
            "/x",
            "https://example.com",
            "is not allowed",
            id="a subdomain wildcard does not match the apex",
        ),
        pytest.param(
            (PATTERNS,),
            "/x",
            "https://pr-42.preview.dev.evil.net",
            "is not allowed",
            id="a regex pattern must match the whole origin",
        ),
        pytest.param(
            (OPEN,),
            "/private",
            "https://anyone.example",
            "no rule matches the path /private",
            id="a path outside every rule is refused",
        ),
        pytest.param(
            (APP,),
            "/api",
            "null",
            "is not allowed",
            id="the null origin is refused unless listed",
        ),
    ],
)
def test_refused_actual_requests_get_no_cors_headers_and_a_reason(
    rules: tuple[RuleConfig, ...], path: str, origin: str, reason: str
) -> None:
    decision = Policy(rules).actual(path, origin)
    assert not decision.allowed
    assert decision.headers == ()
    assert reason in decision.reason


def test_the_first_matching_rule_wins() -> None:
    policy = Policy((OPEN, APP))
    assert policy.actual("/public/x", LOCAL).rule == 0
    assert policy.actual("/api", LOCAL).rule == 1


def test_null_is_allowed_when_listed() -> None:
    decision = Policy((RuleConfig(origins=("null",)),)).actual("/", "null")
    assert dict(decision.headers) == {"Access-Control-Allow-Origin": "null"}


@pytest.mark.parametrize(
    ("rule", "method", "requested", "wanted"),
    [
        pytest.param(
            APP,
            "PUT",
            "content-type",
            {
                "Access-Control-Allow-Origin": LOCAL,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE",
                "Access-Control-Allow-Headers": "Content-Type, Authorization",
                "Access-Control-Max-Age": "600",
            },
            id="a listed method and header are allowed with the configured lists",
        ),
        pytest.param(
            APP,
            "DELETE",
            None,
            {
                "Access-Control-Allow-Origin": LOCAL,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE",
                "Access-Control-Max-Age": "600",
            },
            id="no requested headers means no Allow-Headers",
        ),
        pytest.param(
            APP,
            "PATCH",
            " Authorization ,, CONTENT-type,",
            {
                "Access-Control-Allow-Origin": LOCAL,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE",
                "Access-Control-Allow-Headers": "Content-Type, Authorization",
                "Access-Control-Max-Age": "600",
            },
            id="requested headers in any case order and spacing with empty items are allowed",
        ),
        pytest.param(
            WILDCARD_NO_CREDENTIALS,
            "PROPFIND",
            "x-anything, x-other",
            {
                "Access-Control-Allow-Origin": LOCAL,
                "Access-Control-Allow-Methods": "*",
                "Access-Control-Allow-Headers": "*",
            },
            id="without credentials star is sent as star",
        ),
        pytest.param(
            WILDCARD_CREDENTIALS,
            "PROPFIND",
            "x-anything, x-other",
            {
                "Access-Control-Allow-Origin": LOCAL,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Allow-Methods": "PROPFIND",
                "Access-Control-Allow-Headers": "x-anything, x-other",
            },
            id="with credentials star echoes the requested method and headers",
        ),
        pytest.param(
            ZERO_MAX_AGE,
            "POST",
            None,
            {
                "Access-Control-Allow-Origin": LOCAL,
                "Access-Control-Allow-Methods": "GET, HEAD, POST",
                "Access-Control-Max-Age": "0",
            },
            id="max_age 0 is sent as 0",
        ),
        pytest.param(
            PUT_ONLY,
            "GET",
            "x-api-key",
            {
                "Access-Control-Allow-Origin": LOCAL,
                "Access-Control-Allow-Methods": "PUT",
                "Access-Control-Allow-Headers": "X-API-Key",
            },
            id="a preflight asking for GET passes whatever allow_methods lists",
        ),
        pytest.param(
            PUT_ONLY,
            "POST",
            "x-api-key",
            {
                "Access-Control-Allow-Origin": LOCAL,
                "Access-Control-Allow-Methods": "PUT",
                "Access-Control-Allow-Headers": "X-API-Key",
            },
            id="a preflight asking for POST passes whatever allow_methods lists",
        ),
        pytest.param(
            PUT_ONLY,
            "HEAD",
            "x-api-key",
            {
                "Access-Control-Allow-Origin": LOCAL,
                "Access-Control-Allow-Methods": "PUT",
                "Access-Control-Allow-Headers": "X-API-Key",
            },
            id="a preflight asking for HEAD passes whatever allow_methods lists",
        ),
    ],
)
def test_allowed_preflights_get_exactly_these_headers(
    rule: RuleConfig, method: str, requested: str | None, wanted: dict[str, str]
) -> None:
    decision = Policy((rule,)).preflight("/api", LOCAL, method, requested)
    assert decision.allowed, decision.reason
    assert dict(decision.headers) == wanted


@pytest.mark.parametrize(
    ("rule", "method", "requested", "private_network", "reason"),
    [
        pytest.param(
            APP,
            "OPTIONS",
            None,
            False,
            "method OPTIONS is not allowed by rules[0] (path /**) "
            "(allow_methods: GET, POST, PUT, PATCH, DELETE)",
            id="an unlisted method is refused",
        ),
        pytest.param(
            APP,
            "patch",
            None,
            False,
            "methods are case-sensitive",
            id="a lower-case method is refused with the case explained",
        ),
        pytest.param(
            PUT_ONLY,
            "get",
            None,
            False,
            "method get is not allowed",
            id="safelisted methods are compared byte for byte: get is not GET",
        ),
        pytest.param(
            APP,
            "PUT",
            "content-type, x-api-key",
            False,
            "header x-api-key is not allowed by rules[0] (path /**) "
            "(allow_headers: Content-Type, Authorization)",
            id="an unlisted header is refused and named",
        ),
        pytest.param(
            WILDCARD_NO_CREDENTIALS,
            "GET",
            "authorization",
            False,
            "header Authorization is not covered by '*'",
            id="star never covers Authorization",
        ),
        pytest.param(
            APP,
            "GET",
            None,
            True,
            "allow_private_network: false",
            id="private network access is refused unless the rule allows it",
        ),
    ],
)
def test_refused_preflights_say_what_failed(
    rule: RuleConfig, method: str, requested: str | None, private_network: bool, reason: str
) -> None:
    decision = Policy((rule,)).preflight("/api", LOCAL, method, requested, private_network)
    assert not decision.allowed
    assert decision.headers == ()
    assert reason in decision.reason


def test_private_network_access_is_answered_when_allowed() -> None:
    decision = Policy((PRIVATE,)).preflight("/", LOCAL, "GET", None, private_network=True)
    assert ("Access-Control-Allow-Private-Network", "true") in decision.headers


def test_no_private_network_header_unless_it_was_requested() -> None:
    decision = Policy((PRIVATE,)).preflight("/", LOCAL, "GET", None)
    assert "Access-Control-Allow-Private-Network" not in dict(decision.headers)


def test_an_unset_max_age_sends_no_header() -> None:
    decision = Policy((WILDCARD_NO_CREDENTIALS,)).preflight("/", LOCAL, "GET", None)
    assert "Access-Control-Max-Age" not in dict(decision.headers)


def test_star_expose_headers_with_credentials_lists_the_response_headers() -> None:
    rule = RuleConfig(origins=(LOCAL,), expose_headers=("*",), allow_credentials=True)
    decision = Policy((rule,)).actual("/", LOCAL)
    assert decision.expose_response_headers
    assert "Access-Control-Expose-Headers" not in dict(decision.headers)


def test_decisions_are_cached_and_stay_bounded() -> None:
    policy = Policy((PATTERNS,))
    first = policy.actual("/", "http://localhost:1")
    assert policy.actual("/", "http://localhost:1") is first
    for port in range(5000):
        policy.actual("/", f"http://localhost:{port}")
    assert len(policy._actual) <= 4096
    assert len(policy._by_origin) <= 4096
