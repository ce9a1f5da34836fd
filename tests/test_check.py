"""``corsproxy check`` against real servers on loopback, each set up with one classic CORS
misconfiguration, and through the real corsproxy. Nothing here mocks the network."""

from __future__ import annotations

import asyncio
import io
import json
import shlex
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from yarl import URL

from corsproxy import create_app
from corsproxy.check.command import CheckError, check_main, via_target
from corsproxy.cli.main import build_parser, resolve_config
from corsproxy.config.checker import parse_config
from corsproxy.config.model import Config
from tests.conftest import ProxyServerFactory

PAGE = "http://localhost:5173"
Headers = Sequence[tuple[str, str]]


@dataclass
class Api:
    """A real API server, and every request it received (method, headers)."""

    server: TestServer
    seen: list[tuple[str, CIMultiDict[str]]]

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def methods(self) -> list[str]:
        return [method for method, _ in self.seen]


ApiFactory = Callable[..., Awaitable[Api]]
ServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def make_api(aiohttp_server: ServerFactory) -> ApiFactory:
    """An API that answers OPTIONS with ``preflight_status`` and ``preflight`` headers and
    every other method with 200 and ``actual`` headers: one misconfiguration per test."""

    async def start(preflight_status: int = 204, preflight: Headers = (), actual: Headers = ()) -> Api:
        seen: list[tuple[str, CIMultiDict[str]]] = []

        async def handle(request: web.Request) -> web.Response:
            seen.append((request.method, CIMultiDict(request.headers)))
            if request.method == "OPTIONS":
                text = None if preflight_status < 300 else f"status {preflight_status}"
                return web.Response(status=preflight_status, headers=CIMultiDict(preflight), text=text)
            return web.json_response({"ok": True}, headers=CIMultiDict(actual))

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return Api(await aiohttp_server(app), seen)

    return start


async def check(*argv: str) -> tuple[int, str, str]:
    """Run `corsproxy check ...` in-process, in the test's event loop."""
    args = build_parser().parse_args(["check", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = await check_main(args, out, err)
    return code, out.getvalue(), err.getvalue()


async def check_json(*argv: str) -> tuple[int, dict[str, Any]]:
    code, out, err = await check(*argv, "--json-output")
    assert err == ""
    report: dict[str, Any] = json.loads(out)
    assert report["exit_code"] == code
    return code, report


def codes(verdict: dict[str, Any]) -> list[str]:
    return [finding["code"] for finding in verdict["findings"]]


def messages(verdict: dict[str, Any]) -> list[str]:
    return [finding["message"] for finding in verdict["findings"]]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


GOOD_PREFLIGHT = [
    ("Access-Control-Allow-Origin", PAGE),
    ("Access-Control-Allow-Credentials", "true"),
    ("Access-Control-Allow-Methods", "GET, PUT"),
    ("Access-Control-Allow-Headers", "X-API-Key"),
]
GOOD_ACTUAL = [("Access-Control-Allow-Origin", PAGE), ("Access-Control-Allow-Credentials", "true")]


async def test_missing_allow_origin_is_blocked_with_the_fix(make_api: ApiFactory) -> None:
    api = await make_api()
    code, out, err = await check(f"{api.url}/items?page=2", "--origin", PAGE)
    assert (code, err) == (1, "")
    assert out == (
        f"GET {api.url}/items?page=2 from origin {PAGE}\n"
        "Preflight: no (a simple request)\n"
        "\n"
        f"Direct to {api.url}/items?page=2: BLOCKED\n"
        "  GET -> 200 OK\n"
        "    (no CORS headers)\n"
        "  - missing-allow-origin (response): no 'Access-Control-Allow-Origin' header on the response: "
        f"the server must send 'Access-Control-Allow-Origin: {PAGE}', or run behind a CORS proxy\n"
        "\n"
        "Fix: put corsproxy in front of the API\n"
        f"  corsproxy serve --upstream {api.url} --allow-origin {PAGE}\n"
        "  then fetch http://localhost:8080/items?page=2 from the page\n"
        "or with a rules file (corsproxy serve --config corsproxy.yaml):\n"
        f'  upstream: "{api.url}"\n'
        "  rules:\n"
        f'    - origins: ["{PAGE}"]\n'
        '      allow_methods: ["GET"]\n'
        "      allow_credentials: false\n"
        "\n"
        "Verdict: BLOCKED\n"
    )
    assert api.methods == ["GET"]
    assert api.seen[0][1]["Origin"] == PAGE


async def test_wildcard_with_credentials_is_blocked_and_sends_no_preflight(make_api: ApiFactory) -> None:
    api = await make_api(
        actual=[("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Credentials", "true")]
    )
    code, report = await check_json(f"{api.url}/me", "--origin", PAGE, "--credentials", "-H", "Cookie: sid=1")
    assert (code, report["verdict"]) == (1, "BLOCKED")
    assert report["preflight"] == {"needed": False, "reasons": []}
    assert codes(report["direct"]) == ["wildcard-with-credentials"]
    assert report["fix"]["command"] == (
        f"corsproxy serve --upstream {api.url} --allow-origin {PAGE} --allow-credentials"
    )
    assert "    allow_credentials: true\n" in report["fix"]["yaml"]
    # Credentials alone never cause a preflight; the cookie goes with the request itself.
    assert api.methods == ["GET"]
    assert api.seen[0][1]["Cookie"] == "sid=1"


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        pytest.param(
            405, GOOD_PREFLIGHT, ["preflight-failed"], id="preflight answered 405 despite CORS headers"
        ),
        pytest.param(
            500,
            [],
            ["preflight-failed", "missing-allow-origin", "credentials-not-allowed"],
            id="preflight answered 500 bare",
        ),
    ],
)
async def test_failing_preflight_blocks_and_the_request_is_never_sent(
    make_api: ApiFactory, status: int, headers: Headers, expected: list[str]
) -> None:
    api = await make_api(preflight_status=status, preflight=headers, actual=GOOD_ACTUAL)
    code, report = await check_json(
        f"{api.url}/items/1", "--origin", PAGE, "-X", "PUT", "-H", "X-API-Key: k", "--credentials"
    )
    assert code == 1
    direct = report["direct"]
    assert codes(direct) == expected
    assert direct["findings"][0]["message"].startswith(
        f"the preflight (OPTIONS) got status {status}, not 2xx"
    )
    assert direct["exchanges"][0]["body_excerpt"] == f"status {status}"
    assert direct["notes"] == ["PUT not sent: the browser stops after a failed preflight"]
    assert api.methods == ["OPTIONS"]


async def test_custom_header_missing_from_allow_headers(make_api: ApiFactory) -> None:
    api = await make_api(
        preflight=[
            ("Access-Control-Allow-Origin", PAGE),
            ("Access-Control-Allow-Methods", "POST"),
            ("Access-Control-Allow-Headers", "Content-Type"),
        ],
        actual=[("Access-Control-Allow-Origin", PAGE)],
    )
    code, report = await check_json(
        f"{api.url}/items", "--origin", PAGE, "--json", '{"a": 1}', "-H", "X-API-Key: k"
    )
    assert code == 1
    assert report["method"] == "POST"
    assert report["preflight"]["reasons"] == [
        "header X-API-Key is not CORS-safelisted",
        "Content-Type application/json is not one of application/x-www-form-urlencoded, "
        "multipart/form-data, text/plain",
    ]
    assert codes(report["direct"]) == ["header-not-allowed"]
    assert messages(report["direct"]) == [
        "request header X-API-Key is not in 'Access-Control-Allow-Headers' (Content-Type); add it there"
    ]
    assert '    allow_headers: ["Content-Type", "X-API-Key"]\n' in report["fix"]["yaml"]
    # The preflight as a browser sends it: no credentials, names sorted, lower case, "," joined.
    assert api.methods == ["OPTIONS"]
    preflight = api.seen[0][1]
    assert preflight["Origin"] == PAGE
    assert preflight["Access-Control-Request-Method"] == "POST"
    assert preflight["Access-Control-Request-Headers"] == "content-type,x-api-key"
    assert "X-API-Key" not in preflight


@pytest.mark.parametrize(
    ("allowed", "explanation"),
    [
        pytest.param(PAGE + "/", "a trailing slash, which browsers never send", id="trailing slash"),
        pytest.param("http://LocalHost:5173", "upper-case letters", id="upper case"),
        pytest.param("http://localhost:3000", "the port differs (3000 instead of 5173)", id="another port"),
    ],
)
async def test_origin_mismatch_names_the_near_miss(
    make_api: ApiFactory, allowed: str, explanation: str
) -> None:
    api = await make_api(actual=[("Access-Control-Allow-Origin", allowed)])
    code, report = await check_json(api.url, "--origin", PAGE)
    assert code == 1
    assert codes(report["direct"]) == ["origin-mismatch"]
    assert explanation in messages(report["direct"])[0]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(
            [("Access-Control-Allow-Origin", PAGE), ("Access-Control-Allow-Origin", "*")],
            id="two header lines",
        ),
        pytest.param([("Access-Control-Allow-Origin", f"{PAGE}, *")], id="one comma-separated line"),
    ],
)
async def test_several_allow_origin_values_are_blocked(make_api: ApiFactory, headers: Headers) -> None:
    api = await make_api(actual=headers)
    code, report = await check_json(api.url, "--origin", PAGE)
    assert code == 1
    assert codes(report["direct"]) == ["multiple-allow-origin"]


async def test_a_forwarding_proxy_without_cors_headers_is_named(make_api: ApiFactory) -> None:
    api = await make_api(actual=[("Via", "1.1 vite")])
    code, report = await check_json(api.url, "--origin", PAGE)
    assert code == 1
    assert codes(report["direct"]) == ["proxy-not-adding-headers"]
    assert "came through the proxy '1.1 vite'" in messages(report["direct"])[0]


async def test_a_correct_server_is_allowed(make_api: ApiFactory) -> None:
    api = await make_api(preflight=GOOD_PREFLIGHT, actual=GOOD_ACTUAL)
    code, out, err = await check(
        f"{api.url}/items/1", "--origin", PAGE, "-X", "put", "-H", "X-API-Key: k", "--credentials"
    )
    assert (code, err) == (0, "")
    assert "Fix:" not in out
    assert out.endswith("\nVerdict: ALLOWED\n")
    assert api.methods == ["OPTIONS", "PUT"]


async def test_a_same_origin_request_involves_no_cors(make_api: ApiFactory) -> None:
    api = await make_api()
    code, report = await check_json(f"{api.url}/x", "--origin", api.url)
    assert (code, report["verdict"]) == (0, "ALLOWED")
    assert report["direct"]["notes"] == ["the page and the URL share an origin: no CORS involved"]
    assert api.seen == []


def fixed_config(fix: dict[str, Any], form: str) -> Config:
    """The configuration the printed fix gives: the rules file, or the quick command line."""
    if form == "yaml":
        return parse_config(fix["yaml"], "test.yaml", {})
    words = shlex.split(fix["command"])
    assert words[:2] == ["corsproxy", "serve"]
    return resolve_config(build_parser().parse_args(words[1:]), {})


CREDENTIALED_PUT = ["/items/1", "-X", "PUT", "-H", "X-API-Key: k", "--credentials"]


@pytest.mark.parametrize(
    ("argv", "form"),
    [
        pytest.param(CREDENTIALED_PUT, "yaml", id="credentialed PUT with the printed rules file"),
        pytest.param(CREDENTIALED_PUT, "command", id="credentialed PUT with the printed command"),
        pytest.param(["/items", "--private-network"], "yaml", id="private network GET with the rules file"),
    ],
)
async def test_the_printed_fix_makes_the_request_pass_through_corsproxy(
    make_api: ApiFactory, proxy_server: ProxyServerFactory, argv: list[str], form: str
) -> None:
    api = await make_api(preflight_status=405)
    path, *flags = argv
    code, report = await check_json(api.url + path, "--origin", PAGE, *flags)
    assert (code, report["direct"]["verdict"]) == (1, "BLOCKED")
    proxy = await proxy_server(create_app(fixed_config(report["fix"], form)))
    api.seen.clear()

    code, report = await check_json(
        api.url + path, "--origin", PAGE, *flags, "--via", str(proxy.make_url(""))
    )
    assert (code, report["verdict"]) == (0, "ALLOWED")
    assert report["direct"]["verdict"] == "BLOCKED"
    assert report["via"]["verdict"] == "ALLOWED"
    assert report["via"]["url"] == str(proxy.make_url(path))
    # The direct check hit the API's broken OPTIONS; through corsproxy only the request arrived.
    assert api.methods == ["OPTIONS", report["method"]]


async def test_a_proxy_that_does_not_allow_the_origin_is_blocked(
    make_api: ApiFactory, proxy_server: ProxyServerFactory
) -> None:
    api = await make_api()
    config = parse_config(
        f'upstream: "{api.url}"\nrules:\n  - origins: ["http://localhost:3000"]\n', "t.yaml", {}
    )
    proxy = await proxy_server(create_app(config))
    code, out, _ = await check(api.url, "--origin", PAGE, "-X", "DELETE", "--via", str(proxy.make_url("")))
    assert code == 1
    assert "  - proxy-not-adding-headers (preflight): " in out
    assert "body: CORS preflight refused by corsproxy: origin 'http://localhost:5173' is not allowed" in out
    assert out.endswith("\nVerdict: BLOCKED through the proxy\n")


async def test_an_unreachable_host_is_one_line_and_exit_2() -> None:
    port = closed_port()
    code, out, err = await check(f"http://127.0.0.1:{port}/x", "--origin", PAGE)
    assert (code, out) == (2, "")
    cause = "connection refused (nothing listens on that port)"
    assert err == f"corsproxy check: cannot reach 127.0.0.1:{port}: {cause}\n"


async def test_an_unreachable_host_in_json_output_is_an_error_object() -> None:
    code, out, _ = await check(f"http://127.0.0.1:{closed_port()}/x", "--origin", PAGE, "--json-output")
    assert code == 2
    assert json.loads(out)["verdict"] == "ERROR"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["--origin", PAGE + "/"],
            "a page there sends Origin 'http://localhost:5173'",
            id="origin with slash",
        ),
        pytest.param(["--origin", "localhost:5173"], "is not an origin", id="origin without scheme"),
        pytest.param(
            ["--origin", PAGE, "--data", "x", "-X", "GET"], "cannot have a body", id="GET with a body"
        ),
        pytest.param(["--origin", PAGE, "-H", "Host: x"], "a page cannot set Host", id="a forbidden header"),
        pytest.param(
            ["--origin", PAGE, "-H", "Cookie: a=1"], "add --credentials", id="a cookie without credentials"
        ),
        pytest.param(["--origin", PAGE, "-H", "X-A"], "give 'Name: value'", id="a header without a colon"),
        pytest.param(["--origin", PAGE, "-X", "TRACE"], "refuses to send TRACE", id="a forbidden method"),
    ],
)
async def test_bad_input_exits_2_with_a_message(argv: list[str], message: str) -> None:
    code, out, err = await check(f"http://127.0.0.1:{closed_port()}/x", *argv)
    assert (code, out) == (2, "")
    assert message in err
    assert err.count("\n") == 1


async def test_a_url_that_is_not_http_exits_2() -> None:
    code, _, err = await check("ftp://example.com/x", "--origin", PAGE)
    assert code == 2
    assert err == "corsproxy check: URL 'ftp://example.com/x' is not an http:// or https:// URL\n"


async def test_the_installed_command_prints_the_verdict_and_exits_1(make_api: ApiFactory) -> None:
    api = await make_api()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "corsproxy",
        "check",
        f"{api.url}/items",
        "--origin",
        PAGE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert (process.returncode, err) == (1, b"")
    assert b"  - missing-allow-origin (response): " in out
    assert out.endswith(b"\nVerdict: BLOCKED\n")


async def test_private_network_access_needs_the_rules_file(make_api: ApiFactory) -> None:
    api = await make_api(preflight=[("Access-Control-Allow-Origin", PAGE)], actual=GOOD_ACTUAL[:1])
    code, report = await check_json(api.url, "--origin", PAGE, "--private-network")
    assert code == 1
    assert report["preflight"]["reasons"] == ["the request asks for private network access"]
    assert codes(report["direct"]) == ["private-network-not-allowed"]
    # The quick command's rule never allows private network access: only the file can.
    assert report["fix"]["command"] is None
    assert report["fix"]["yaml"].endswith("    allow_private_network: true\n")
    assert api.seen[0][1]["Access-Control-Request-Private-Network"] == "true"


# -- check knows when it talks to corsproxy ------------------------------------------------


async def test_via_maps_the_url_through_the_proxys_route_prefix(
    make_api: ApiFactory, proxy_server: ProxyServerFactory
) -> None:
    api = await make_api(preflight_status=405)
    config = parse_config(f'routes:\n  - path: /httpbin\n    upstream: "{api.url}/v1"\n', "t.yaml", {})
    proxy = await proxy_server(create_app(config))
    code, report = await check_json(
        api.url + "/v1/items?page=2", "--origin", PAGE, "--via", str(proxy.make_url(""))
    )
    assert (code, report["verdict"]) == (0, "ALLOWED")
    assert report["via"]["url"] == str(proxy.make_url("/httpbin/items?page=2"))
    # Both reached the API, the second through the route: no 404 of corsproxy's.
    assert api.methods == ["GET", "GET"]
    # The verdict through the proxy is ALLOWED: no fix is offered.
    assert report["fix"] is None


async def test_via_names_the_routes_when_none_forwards_to_the_url(
    make_api: ApiFactory, proxy_server: ProxyServerFactory
) -> None:
    api = await make_api()
    config = parse_config(
        'routes:\n  - path: /other\n    upstream: "https://elsewhere.example"\n', "t.yaml", {}
    )
    proxy = await proxy_server(create_app(config))
    code, _, err = await check(api.url + "/items", "--origin", PAGE, "--via", str(proxy.make_url("")))
    assert code == 2
    assert f"has no route to {api.url}/items" in err
    assert "/other -> https://elsewhere.example" in err


async def test_corsproxys_own_answer_is_reported_as_such_and_the_fix_is_in_its_rules(
    make_api: ApiFactory, proxy_server: ProxyServerFactory
) -> None:
    api = await make_api()
    config = parse_config(
        f'upstream: "{api.url}"\nrules:\n  - origins: ["http://localhost:3000"]\n', "t.yaml", {}
    )
    proxy = await proxy_server(create_app(config))
    code, out, _ = await check(str(proxy.make_url("/items")), "--origin", PAGE, "-X", "PUT")
    assert code == 1
    # Not "put corsproxy in front of corsproxy": the rule to change, with its key, line and file.
    assert "is served by corsproxy already: change its rules" in out
    assert "to allow it, add 'http://localhost:5173' to rules[0].origins (line 3 of t.yaml)" in out
    assert "corsproxy serve --upstream" not in out


async def test_corsproxys_own_404_is_never_allowed(proxy_server: ProxyServerFactory) -> None:
    config = parse_config('routes:\n  - path: /api\n    upstream: "http://127.0.0.1:9"\n', "t.yaml", {})
    proxy = await proxy_server(create_app(config))
    code, report = await check_json(str(proxy.make_url("/nowhere")), "--origin", PAGE)
    assert (code, report["verdict"]) == (1, "BLOCKED")
    (finding,) = report["direct"]["findings"]
    assert finding["code"] == "answered-by-corsproxy"
    assert (
        "this 404 is corsproxy's own answer (refused), not the upstream's: no route for /nowhere"
        in finding["message"]
    )


async def test_a_mocked_answer_is_judged_as_the_browser_would_and_noted_as_a_mock(
    proxy_server: ProxyServerFactory,
) -> None:
    config = parse_config("mocks:\n  - path: /api/me\n    json: {id: 1}\n", "t.yaml", {})
    proxy = await proxy_server(create_app(config))
    code, report = await check_json(str(proxy.make_url("/api/me")), "--origin", PAGE)
    assert (code, report["verdict"]) == (0, "ALLOWED")
    assert report["direct"]["findings"] == []
    assert "answered by corsproxy's mock[0], not the upstream" in report["direct"]["notes"]


@pytest.mark.parametrize(
    ("origin", "proxy_base"),
    [
        pytest.param("http://localhost:5173", "http://localhost:8080", id="a page on localhost"),
        pytest.param("http://127.0.0.1:5173", "http://127.0.0.1:8080", id="a page on 127.0.0.1"),
    ],
)
async def test_the_fix_calls_the_proxy_on_the_pages_own_host_name(
    make_api: ApiFactory, origin: str, proxy_base: str
) -> None:
    """localhost and 127.0.0.1 are different sites: a credentialed page would lose its cookies."""
    api = await make_api(preflight_status=405)
    code, report = await check_json(api.url + "/items/1", "--origin", origin, "-X", "PUT", "--credentials")
    assert code == 1
    assert report["fix"]["proxy_url"] == proxy_base + "/items/1"


async def test_a_credentialed_page_and_the_proxy_on_different_loopback_names_are_warned_about(
    make_api: ApiFactory, proxy_server: ProxyServerFactory
) -> None:
    api = await make_api()
    config = parse_config(
        f'upstream: "{api.url}"\nrules:\n  - origins: ["{PAGE}"]\n    allow_credentials: true\n', "t.yaml", {}
    )
    proxy = await proxy_server(create_app(config))
    via = str(proxy.make_url(""))  # http://127.0.0.1:PORT, while the page is on localhost
    _, out, _ = await check(api.url + "/items", "--origin", PAGE, "--credentials", "--via", via)
    assert "the page is on localhost and the proxy on 127.0.0.1, which are different sites" in out
    assert f"call it as http://localhost:{proxy.port}" in out


@pytest.mark.parametrize(
    ("routes", "url", "mapped"),
    [
        pytest.param(
            [("/httpbin", "http://a/v1", True)], "http://a/v1/items?x=1", "/httpbin/items?x=1", id="a prefix"
        ),
        pytest.param(
            [("/api", "http://a", False)], "http://a/api/users", "/api/users", id="strip_prefix false"
        ),
        pytest.param([("/", "https://a:443", True)], "https://a/x", "/x", id="an explicit default port"),
        pytest.param(
            [("/", "http://a", True), ("/api", "http://b", True)],
            "http://b/x",
            "/api/x",
            id="the longer prefix",
        ),
        pytest.param(
            [("/", "http://a", True), ("/api", "http://b", True)],
            "http://a/api/x",
            None,
            id="a path the longer prefix shadows is no route",
        ),
        pytest.param(
            [("/api", "http://a", False), ("/", "http://b", True)],
            "http://a/other",
            None,
            id="without strip_prefix the path must lie under the prefix",
        ),
    ],
)
def test_via_maps_a_url_only_to_a_path_the_proxy_routes_back_to_it(
    routes: list[tuple[str, str, bool]], url: str, mapped: str | None
) -> None:
    listed: list[dict[str, Any]] = [
        {"path": path, "upstream": upstream, "strip_prefix": strip} for path, upstream, strip in routes
    ]
    via = URL("http://127.0.0.1:8080")
    if mapped is None:
        with pytest.raises(CheckError, match="has no route to"):
            via_target(via, URL(url), listed)
    else:
        assert str(via_target(via, URL(url), listed)) == "http://127.0.0.1:8080" + mapped
