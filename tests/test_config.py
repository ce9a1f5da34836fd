"""Loading configuration: every error at once, each with its key path, line and a fix."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

import pytest

from corsproxy.config.checker import (
    COOKIE_FIELDS,
    FAIL_FIELDS,
    INSPECTOR_FIELDS,
    MOCK_FIELDS,
    RECORD_FIELDS,
    REPLAY_FIELDS,
    ROUTE_FIELDS,
    ROUTE_INSPECTOR_FIELDS,
    RULE_FIELDS,
    SERVER_FIELDS,
    SIMULATE_FIELDS,
    UPSTREAM_TLS_FIELDS,
    parse_config,
)
from corsproxy.config.loader import load_config
from corsproxy.config.model import (
    ConfigError,
    CookieConfig,
    FailConfig,
    InspectorConfig,
    MockConfig,
    RecordConfig,
    ReplayConfig,
    RouteConfig,
    RouteInspector,
    RuleConfig,
    ServerConfig,
    SimulateConfig,
    UpstreamTLS,
)

ROOT = Path(__file__).resolve().parent.parent


def errors_of(text: str, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml", env)
    return caught.value.errors


def test_the_example_config_loads_and_says_what_it_means() -> None:
    config = load_config(ROOT / "config.example.yaml", {"API_TOKEN": "secret-token"})
    assert [route.path for route in config.routes] == ["/api", "/assets"]
    assert config.routes[0].request_headers == (("Authorization", "Bearer secret-token"),)
    assert config.rules[0].origins == ("*",)
    assert config.rules[1].allow_credentials
    assert "secret-token" in config.secrets


def test_the_example_config_needs_its_token() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(ROOT / "config.example.yaml", {})
    assert caught.value.errors == [
        "routes[0].request_headers.Authorization: environment variable API_TOKEN is not set; "
        "export it, or write ${API_TOKEN:-default} (line 18)"
    ]


def test_the_shorthand_upstream_is_one_route_at_the_root() -> None:
    config = parse_config("upstream: https://api.example.com/v1/\n", "t", {})
    assert [(r.path, r.upstream, r.strip_prefix) for r in config.routes] == [
        ("/", "https://api.example.com/v1", True)
    ]


def test_no_rules_means_local_development_origins_only() -> None:
    config = parse_config("upstream: https://api.example.com\n", "t", {})
    assert config.rules[0].origins == ("http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*")
    assert "*" not in config.rules[0].origins
    assert not config.rules[0].allow_credentials


def test_env_defaults_are_used_when_the_variable_is_unset() -> None:
    text = "upstream: ${API_URL:-http://127.0.0.1:9000}\n"
    assert parse_config(text, "t", {}).routes[0].upstream == "http://127.0.0.1:9000"
    assert parse_config(text, "t", {"API_URL": "https://x.dev"}).routes[0].upstream == "https://x.dev"


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        pytest.param(
            "upstream: https://a.dev\nrules:\n  - origins: [http://localhost:5173]\n    max_age: -5\n",
            "rules[0].max_age: must be a non-negative integer, got -5 (line 4)",
            id="a negative max_age",
        ),
        pytest.param(
            "upstream: https://a.dev\nrules:\n  - origins: ['*']\n    allow_credentials: true\n",
            "rules[0].allow_credentials: cannot be true with origins ['*']: browsers reject '*' with "
            "credentials; list the exact origins instead, e.g. ['http://localhost:5173'] (line 4)",
            id="star with credentials",
        ),
        pytest.param(
            "upstream: https://a.dev\nrules:\n  - origins: [http://localhost:5173/]\n",
            "rules[0].origins[0]: 'http://localhost:5173/' ends with '/': browsers never send a trailing "
            "slash, use 'http://localhost:5173' (line 3)",
            id="an origin with a trailing slash",
        ),
        pytest.param(
            "upstream: https://a.dev\nrules:\n  - origins: [https://app.dev/login]\n",
            "rules[0].origins[0]: 'https://app.dev/login' has a path: an origin is only "
            "scheme://host[:port], use 'https://app.dev' (line 3)",
            id="an origin with a path",
        ),
        pytest.param(
            "upstream: https://a.dev\nrules:\n  - origins: [https://MyApp.com]\n",
            "rules[0].origins[0]: 'https://MyApp.com' has upper-case letters: browsers send origins in "
            "lower case, use 'https://myapp.com' (line 3)",
            id="an origin with upper-case letters",
        ),
        pytest.param(
            "upstream: https://a.dev\nrules:\n  - origins: [myapp.com]\n",
            "rules[0].origins[0]: 'myapp.com' has no scheme: origins look like 'https://myapp.com' (line 3)",
            id="an origin without a scheme",
        ),
        pytest.param(
            "upstream: https://a.dev\nrules:\n  - origins: ['regex:https://(a|b']\n",
            "rules[0].origins[0]: regex 'https://(a|b' does not compile: missing ), unterminated "
            "subpattern at position 8 (line 3)",
            id="a regex that does not compile",
        ),
        pytest.param(
            "upstream: ftp://files.example.com\n",
            "upstream: must be an http:// or https:// URL, got 'ftp://files.example.com' (line 1)",
            id="an upstream that is not http",
        ),
        pytest.param(
            "upstream: api.example.com\n",
            "upstream: must be an http:// or https:// URL, got 'api.example.com'; "
            "did you mean 'https://api.example.com'? (line 1)",
            id="an upstream without a scheme",
        ),
        pytest.param(
            "routes:\n  - path: /api\n    upstream: https://a.dev\n    request_headers:\n"
            "      X-Key: ${MISSING_KEY}\n",
            "routes[0].request_headers.X-Key: environment variable MISSING_KEY is not set; "
            "export it, or write ${MISSING_KEY:-default} (line 5)",
            id="an environment variable that is not set",
        ),
        pytest.param(
            "upstream: https://a.dev\nrules:\n  - origins: [http://localhost:5173]\n    alow_headers: [X]\n",
            "rules[0].alow_headers: unknown key; did you mean 'allow_headers'? (line 4)",
            id="a misspelled key",
        ),
        pytest.param(
            "server:\n  port: 99999\nupstream: https://a.dev\n",
            "server.port: must be between 0 and 65535, got 99999 (line 2)",
            id="a port out of range",
        ),
        pytest.param(
            "server:\n  port: true\nupstream: https://a.dev\n",
            "server.port: must be a port number, got 'true' (line 2)",
            id="a boolean where a number belongs",
        ),
        pytest.param(
            "upstream: https://a.dev\nroutes: []\n",
            "upstream: give either `upstream` or `routes`, not both (line 1)",
            id="both upstream and routes",
        ),
        pytest.param(
            "server: {}\n",
            "upstream: missing: give `upstream: URL`, a list of `routes`, `mocks` or `replay` (line 1)",
            id="no upstream at all",
        ),
        pytest.param(
            "routes:\n  - path: /__corsproxy/x\n    upstream: https://a.dev\n",
            "routes[0].path: the /__corsproxy/ prefix belongs to the proxy itself (line 2)",
            id="a route on the proxy's own prefix",
        ),
        pytest.param(
            "routes:\n  - path: /a\n    upstream: https://a.dev\n  - path: /a/\n    upstream: https://b.dev\n",
            "routes[1].path: '/a' is already the path of routes[0] (line 4)",
            id="two routes with one prefix",
        ),
        pytest.param(
            "upstream: https://a.dev\nrules:\n  - origins: [http://localhost:5173]\n    path: api/**\n",
            "rules[0].path: must start with '/', got 'api/**' (line 4)",
            id="a rule path that is not absolute",
        ),
        pytest.param(
            "upstream: [\n",
            "not valid YAML: expected the node content, but found '<stream end>' (line 2, column 1)",
            id="broken YAML",
        ),
        pytest.param("", "the file is empty: give at least `upstream:` or `routes:`", id="an empty file"),
    ],
)
def test_each_classic_mistake_is_named_with_its_line_and_fix(text: str, wanted: str) -> None:
    assert wanted in errors_of(text)


def test_every_error_is_reported_at_once_in_file_order() -> None:
    errors = errors_of(
        """\
server:
  port: -1
  hots: 0.0.0.0
upstream: https://a.dev
rules:
  - origins: [http://localhost:5173/]
    max_age: ten
  - origins: ["*"]
    allow_credentials: true
"""
    )
    assert [error.rsplit("(line ", 1)[1] for error in errors] == ["2)", "3)", "6)", "7)", "9)"]


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert "cannot read the file: No such file or directory" in str(caught.value)


def test_error_messages_never_show_an_expanded_secret() -> None:
    errors = errors_of("upstream: ${API_URL}\n", API_URL="not-a-url-s3cret")
    assert errors == ["upstream: must be an http:// or https:// URL, got '${API_URL}' (line 1)"]


@pytest.mark.parametrize(
    ("table", "dataclass", "not_from_yaml"),
    [
        pytest.param(SERVER_FIELDS, ServerConfig, (), id="server"),
        pytest.param(ROUTE_FIELDS, RouteConfig, ("line",), id="routes[]"),
        pytest.param(RULE_FIELDS, RuleConfig, ("line",), id="rules[]"),
        pytest.param(COOKIE_FIELDS, CookieConfig, (), id="routes[].cookies"),
        pytest.param(UPSTREAM_TLS_FIELDS, UpstreamTLS, (), id="routes[].tls"),
        pytest.param(MOCK_FIELDS, MockConfig, ("line",), id="mocks[]"),
        pytest.param(RECORD_FIELDS, RecordConfig, ("line",), id="record"),
        pytest.param(REPLAY_FIELDS, ReplayConfig, ("line", "entries"), id="replay"),
        pytest.param(SIMULATE_FIELDS, SimulateConfig, ("line",), id="simulate[]"),
        pytest.param(FAIL_FIELDS, FailConfig, (), id="simulate[].fail"),
        pytest.param(INSPECTOR_FIELDS, InspectorConfig, (), id="inspector"),
        pytest.param(ROUTE_INSPECTOR_FIELDS, RouteInspector, (), id="routes[].inspector"),
    ],
)
def test_each_field_table_has_one_reader_per_field_of_its_dataclass(
    table: Mapping[str, object], dataclass: type, not_from_yaml: tuple[str, ...]
) -> None:
    """The YAML keys are the dataclasses' field names: a field without a reader could not be
    set, and a reader without a field would fail when the dataclass is built."""
    assert set(table) == {field.name for field in fields(dataclass)} - set(not_from_yaml)


@pytest.mark.parametrize(
    ("text", "where", "wanted"),
    [
        pytest.param(
            "server:\n  host: ''\nupstream: https://a.dev\n", "host", "127.0.0.1", id="an empty host"
        ),
        pytest.param(
            "upstream: https://a.dev\nrules:\n  - path: ''\n    origins: ['*']\n",
            "rule path",
            "/**",
            id="an empty rule path",
        ),
    ],
)
def test_an_empty_value_means_the_default(text: str, where: str, wanted: str) -> None:
    """An empty host must never mean every interface; an empty rule path is every path."""
    config = parse_config(text, "test.yaml", {})
    assert (config.server.host if where == "host" else config.rules[0].path) == wanted


def test_the_example_configs_commented_sections_load_when_uncommented(tmp_path: Path) -> None:
    lines = (ROOT / "config.example.yaml").read_text().splitlines()
    start = next(number for number, line in enumerate(lines) if line.startswith("# record:"))
    # Below the first commented section, every commented line is YAML except the prose,
    # which starts with a capital letter.
    switched = lines[:start] + [
        line.removeprefix("# ") if line.startswith("# ") and not line[2].isupper() else line
        for line in lines[start:]
    ]
    (tmp_path / "corsproxy.yaml").write_text("\n".join(switched) + "\n")
    (tmp_path / "traffic.har").write_text(
        '{"log": {"version": "1.2", "creator": {"name": "x", "version": "1"}, "entries": []}}'
    )
    config = load_config(tmp_path / "corsproxy.yaml", {"API_TOKEN": "t"})
    assert config.record is not None
    assert config.record.file == str(tmp_path / "traffic.har")
    assert config.replay is not None
    assert config.replay.miss == "forward"
    (failing,) = config.simulate
    assert failing.fail is not None
    assert (failing.path, failing.fail.every, failing.fail.retry_after) == ("/api/orders/**", 3, 5)


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        pytest.param(
            "upstrem: http://127.0.0.1:9\n", "upstrem: unknown key; did you mean 'upstream'?", id="top"
        ),
        pytest.param("server: {prot: 1}\n", "server.prot: unknown key; did you mean 'port'?", id="server"),
        pytest.param(
            "routes:\n  - {path: /a, upstrem: http://x.example}\n",
            "routes[0].upstrem: unknown key; did you mean 'upstream'?",
            id="routes",
        ),
        pytest.param(
            "routes:\n  - {path: /a, upstream: http://x.example, cookies: {domian: keep}}\n",
            "routes[0].cookies.domian: unknown key; did you mean 'domain'?",
            id="cookies",
        ),
        pytest.param(
            "routes:\n  - {path: /a, upstream: http://x.example, tls: {verfiy: false}}\n",
            "routes[0].tls.verfiy: unknown key; did you mean 'verify'?",
            id="upstream tls",
        ),
        pytest.param(
            "routes:\n  - {path: /a, upstream: http://x.example, inspector: {bodys: false}}\n",
            "routes[0].inspector.bodys: unknown key; did you mean 'bodies'?",
            id="route inspector",
        ),
        pytest.param(
            "rules:\n  - {orgins: ['*']}\n",
            "rules[0].orgins: unknown key; did you mean 'origins'?",
            id="rules",
        ),
        pytest.param(
            "mocks:\n  - {path: /a, stauts: 200}\n",
            "mocks[0].stauts: unknown key; did you mean 'status'?",
            id="mocks",
        ),
        pytest.param(
            "simulate:\n  - {path: /a, fail: {evrey: 2}}\n",
            "simulate[0].fail.evrey: unknown key; did you mean 'every'?",
            id="simulate fail",
        ),
        pytest.param(
            "inspector: {max_bdy: 1}\n",
            "inspector.max_bdy: unknown key; did you mean 'max_body'?",
            id="inspector",
        ),
    ],
)
def test_a_typo_in_any_section_names_the_nearest_key(text: str, wanted: str) -> None:
    base = "" if text.startswith(("upstrem", "routes")) else "upstream: http://127.0.0.1:9\n"
    errors = errors_of(base + text)
    assert any(error.startswith(wanted) for error in errors), errors
