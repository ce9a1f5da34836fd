"""`corsproxy check` and Chromium give the same verdict on the same requests.

A server with one misconfiguration per path stands in for the APIs developers meet; for
each case the page runs fetch() in Chromium and `corsproxy check` runs from the command
line, and both must say the same: allowed, or blocked.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from aiohttp import web

from tests.browser.conftest import Stack, Tab, bound_socket

API_KEY_HEADER = {"X-API-Key": "k"}


def misconfigured_api() -> web.Application:
    """Each path answers CORS the way one kind of real server gets it right or wrong."""

    def cors(request: web.Request, path: str) -> dict[str, str]:
        origin = request.headers.get("Origin", "")
        preflight = request.method == "OPTIONS"
        if path == "ok":
            headers = {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"}
            if preflight:
                headers |= {
                    "Access-Control-Allow-Methods": "GET, PUT",
                    "Access-Control-Allow-Headers": "X-API-Key",
                }
            return headers
        if path == "wildcard":
            return {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true"}
        if path in ("preflight-fails", "header-missing"):
            headers = {"Access-Control-Allow-Origin": origin}
            if preflight:
                headers |= {
                    "Access-Control-Allow-Methods": "PUT",
                    "Access-Control-Allow-Headers": "Content-Type",
                }
            return headers
        if path == "trailing-slash":
            return {"Access-Control-Allow-Origin": origin + "/"}
        return {}

    async def answer(request: web.Request) -> web.Response:
        path = request.match_info["path"]
        response = web.Response(
            status=500 if path == "preflight-fails" and request.method == "OPTIONS" else 200
        )
        for name, value in cors(request, path).items():
            response.headers[name] = value
        if path == "double":
            response.headers.add("Access-Control-Allow-Origin", request.headers.get("Origin", ""))
            response.headers.add("Access-Control-Allow-Origin", "*")
        response.text = f"{path}\n"
        return response

    app = web.Application()
    app.router.add_route("*", "/{path}", answer)
    return app


@pytest.fixture(scope="module")
def api(stack: Stack) -> str:
    sock, port = bound_socket()
    stack.servers.serve(misconfigured_api(), sock)
    return f"http://127.0.0.1:{port}"


CASES = [
    pytest.param("ok", "GET", {}, False, True, id="a server that echoes the origin allows a GET"),
    pytest.param(
        "ok", "PUT", API_KEY_HEADER, True, True, id="a full preflight answer allows a credentialed PUT"
    ),
    pytest.param("missing", "GET", {}, False, False, id="no Access-Control-Allow-Origin blocks"),
    pytest.param("wildcard", "GET", {}, False, True, id="star without credentials allows"),
    pytest.param("wildcard", "GET", {}, True, False, id="star with credentials blocks"),
    pytest.param("preflight-fails", "PUT", {}, False, False, id="a preflight answered 500 blocks"),
    pytest.param(
        "header-missing",
        "PUT",
        API_KEY_HEADER,
        False,
        False,
        id="a custom header left out of Allow-Headers blocks",
    ),
    pytest.param("trailing-slash", "GET", {}, False, False, id="an origin with a trailing slash blocks"),
    pytest.param("double", "GET", {}, False, False, id="two Access-Control-Allow-Origin values block"),
]


@pytest.mark.parametrize(("path", "method", "headers", "credentials", "allowed"), CASES)
def test_check_gives_chromiums_verdict(
    stack: Stack,
    tab: Tab,
    api: str,
    path: str,
    method: str,
    headers: dict[str, str],
    credentials: bool,
    allowed: bool,
) -> None:
    tab.page.goto(stack.page_url)
    init: dict[str, Any] = {"method": method, "headers": headers}
    if credentials:
        init["credentials"] = "include"
    chromium = tab.fetch(f"{api}/{path}", init)

    command = [
        sys.executable,
        "-m",
        "corsproxy",
        "check",
        f"{api}/{path}",
        "--origin",
        stack.page_url.rstrip("/"),
    ]
    command += ["--method", method]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if credentials:
        command.append("--credentials")
    check = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

    assert chromium["fetched"] is allowed, chromium
    assert check.returncode == (0 if allowed else 1), check.stdout + check.stderr
    assert ("Verdict: ALLOWED" in check.stdout) is allowed
