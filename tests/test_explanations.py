"""What the proxy says about a request or a config must be right, and say it once: the same
words on both transports, the scheme a user meant, one log line per request."""

from __future__ import annotations

import logging
import socket

import pytest

from corsproxy.config.checker import parse_config
from corsproxy.config.model import ConfigError, RuleConfig
from corsproxy.cors.policy import Policy
from tests.conftest import ProxyFactory, Upstream

LOCAL = "http://localhost:5173"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config_errors(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml", {})
    return "\n".join(caught.value.errors)


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        pytest.param("upstream: localhost:3000\n", "did you mean 'http://localhost:3000'?", id="localhost"),
        pytest.param(
            "upstream: 127.0.0.1:8000/v1\n", "did you mean 'http://127.0.0.1:8000/v1'?", id="127.0.0.1"
        ),
        pytest.param(
            "upstream: api.example.com\n", "did you mean 'https://api.example.com'?", id="a public host"
        ),
        pytest.param(
            "upstream: https://a.dev\nrules:\n  - origins: [localhost:5173]\n",
            "origins look like 'http://localhost:5173'",
            id="an origin on localhost",
        ),
        pytest.param(
            "upstream: https://a.dev\nrules:\n  - origins: [app.example.com]\n",
            "origins look like 'https://app.example.com'",
            id="an origin on a public host",
        ),
    ],
)
def test_a_missing_scheme_is_guessed_from_the_host(text: str, wanted: str) -> None:
    """Dev servers on loopback listen on http; anything else is most likely https."""
    assert wanted in config_errors(text)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_an_unreachable_upstream_reads_the_same_on_both_transports_and_methods(
    make_proxy: ProxyFactory, method: str
) -> None:
    port = closed_port()
    client = await make_proxy(f"upstream: http://127.0.0.1:{port}\n")
    response = await client.request(
        method, "/x", headers={"Origin": LOCAL}, data=b"x" if method == "POST" else None
    )
    assert response.status == 502
    assert (
        await response.text() == f"cannot connect to upstream http://127.0.0.1:{port}: connection refused\n"
    )


async def test_a_refusal_on_a_route_with_a_key_is_one_log_line_naming_its_reason_once(
    upstream: Upstream, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="corsproxy")
    client = await make_proxy(
        f"routes:\n  - path: /api\n    upstream: {upstream.url}\n    request_headers:\n      X-Api-Key: k\n"
        f"rules:\n  - origins: ['{LOCAL}']\n"
    )
    response = await client.get("/api/x", headers={"Origin": "https://evil.example"})
    assert response.status == 403
    (line,) = [record.getMessage() for record in caplog.records if "/api/x" in record.getMessage()]
    assert line.count("origin 'https://evil.example' is not allowed") == 1
    assert "not forwarded: route /api injects credentials" in line
    assert "\n" not in line
    assert upstream.received == []


async def test_a_near_miss_origin_says_what_the_config_has_and_what_to_add_where(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    """Vite moves to 5174 when 5173 is taken: the refusal must say what to change."""
    client = await make_proxy(f"upstream: {upstream.url}\nrules:\n  - origins: ['{LOCAL}']\n")
    response = await client.options(
        "/api", headers={"Origin": "http://localhost:5174", "Access-Control-Request-Method": "PUT"}
    )
    assert response.status == 403
    text = await response.text()
    assert "the config has 'http://localhost:5173' but the browser sent 'http://localhost:5174'" in text
    assert "to allow it, add 'http://localhost:5174' to rules[0].origins (line 3 of test.yaml)" in text
    assert "or 'http://localhost:*' for any port" in text


async def test_a_cookie_to_a_rule_without_credentials_is_logged_as_blocked_by_the_browser(
    upstream: Upstream, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="corsproxy")
    client = await make_proxy(f"upstream: {upstream.url}\n")  # quick mode's rule: no credentials
    response = await client.get("/items", headers={"Origin": LOCAL, "Cookie": "session=abc"})
    assert response.status == 200
    assert "Access-Control-Allow-Credentials" not in response.headers
    (line,) = [record.getMessage() for record in caplog.records if "GET /items" in record.getMessage()]
    assert "cors: BLOCKED by the browser, the page sent credentials (a Cookie)" in line
    assert "allowed by" not in line


async def test_a_key_route_refusing_a_method_says_which_method_in_the_log(
    upstream: Upstream, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="corsproxy")
    client = await make_proxy(
        f"routes:\n  - path: /key\n    upstream: {upstream.url}\n    request_headers:\n      X-Api-Key: k\n"
        f"rules:\n  - origins: ['{LOCAL}']\n    allow_methods: [GET]\n"
    )
    response = await client.delete("/key/x", headers={"Origin": LOCAL})
    assert response.status == 403
    (line,) = [record.getMessage() for record in caplog.records if "/key/x" in record.getMessage()]
    assert "not forwarded: route /key injects credentials: method DELETE is not allowed by rules[0]" in line
    assert upstream.received == []


def test_a_null_origin_is_explained_without_advice_to_allow_it() -> None:
    policy = Policy((RuleConfig(origins=(LOCAL,), line=3),))
    reason = policy.explain_origin("/api", "null")
    assert "sandboxed iframes and file:// pages" in reason
    assert "to allow it, add 'null'" not in reason
