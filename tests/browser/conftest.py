"""Real Chromium against real servers: a page, an upstream and the proxy, on three origins.

Playwright's sync API cannot run inside a running asyncio loop, and an async browser
would have to be launched again for every test's own loop. So the servers run in one
background thread with their own loop, the tests are plain functions, and one browser
serves this package, with a fresh browser context (cookies, cache) per test.

While it is open, sync Playwright marks its own loop as running in the main thread,
which breaks every async test: so the browser is package-scoped (closed before the
tests outside this package run) and the tests in this package are all plain functions.

    page      http://localhost:PAGE       the frontend whose origin the rules allow
              http://127.0.0.1:PAGE       the same server under an origin they do not allow
    proxy     http://localhost:PROXY      /api -> upstream, /down -> a closed port
    upstream  http://127.0.0.1:UPSTREAM   sends no CORS headers at all

The page and the proxy are both on localhost, so they are same-site (ports do not count
for sites) and the upstream's SameSite=Lax cookie is sent back through the proxy.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from corsproxy import create_app
from corsproxy.config.checker import parse_config
from corsproxy.exchanges import Exchange
from corsproxy.server.runner import ProxyRunner
from corsproxy.state import STATE

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "upstream-secret-key"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# The page under test: `probe` runs one fetch and reports what the script could see,
# turning a rejected fetch into data instead of an exception.
PAGE_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>frontend</title>
<script>
window.probe = async (url, init, names) => {
  try {
    const response = await fetch(url, init);
    return {
      fetched: true,
      status: response.status,
      body: await response.text(),
      read: Object.fromEntries(names.map((name) => [name, response.headers.get(name)])),
    };
  } catch (error) {
    return { fetched: false, error: `${error.name}: ${error.message}` };
  }
};
</script></head><body><h1>frontend</h1></body></html>
"""


@dataclass
class Seen:
    """One request as the upstream received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: str


def upstream_app(seen: list[Seen]) -> web.Application:
    async def remember(request: web.Request) -> Seen:
        entry = Seen(request.method, request.path, dict(request.headers), await request.text())
        seen.append(entry)
        return entry

    async def login(request: web.Request) -> web.Response:
        await remember(request)
        response = web.json_response({"logged_in": True})
        # No Domain (a host-only cookie for whatever host the browser asked: the proxy's),
        # no Secure (plain http on localhost), SameSite=Lax (the page is same-site).
        response.set_cookie("session", "s3cr3t-session", path="/", httponly=True, samesite="Lax")
        return response

    async def production_login(request: web.Request) -> web.Response:
        """A login as a real API on https sends it: a cookie that would never stick on
        http://localhost as it is. The proxy adapts it (Domain, Secure, SameSite, Path)."""
        await remember(request)
        response = web.json_response({"logged_in": True})
        response.headers.add(
            "Set-Cookie",
            "__Host-sid=prod-session; Domain=api.example.com; Path=/; Secure; HttpOnly; SameSite=None",
        )
        return response

    async def echo(request: web.Request) -> web.Response:
        entry = await remember(request)
        return web.json_response(
            {"method": entry.method, "path": entry.path, "headers": entry.headers, "body": entry.body},
            headers={"X-Request-Id": "req-42", "X-Internal": "hidden-from-scripts"},
        )

    app = web.Application()
    app.router.add_route("*", "/login", login)
    app.router.add_route("*", "/production-login", production_login)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def page_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE_HTML, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    return app


class ServerThread:
    """An asyncio loop in a daemon thread, running real aiohttp servers on loopback."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="browser-test-servers", daemon=True)
        self.thread.start()
        self.runners: list[web.AppRunner] = []

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def serve(
        self, app: web.Application, sock: socket.socket, runner: type[web.AppRunner] = web.AppRunner
    ) -> None:
        """Serve ``app`` on a socket bound beforehand, so its port can be in the config."""
        self.call(self._serve(app, sock, runner))

    async def _serve(
        self, app: web.Application, sock: socket.socket, runner_class: type[web.AppRunner]
    ) -> None:
        # A short shutdown timeout: an inspector tab's event stream must not hold up teardown.
        runner = runner_class(app, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self.runners.append(runner)

    def close(self) -> None:
        for runner in reversed(self.runners):
            self.call(runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def bound_socket() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    return sock, port


@dataclass
class Stack:
    servers: ServerThread
    proxy_app: web.Application
    page_port: int
    proxy_port: int
    upstream_port: int
    seen: list[Seen] = field(default_factory=list)

    @property
    def page_url(self) -> str:
        return f"http://localhost:{self.page_port}/"

    @property
    def foreign_page_url(self) -> str:
        return f"http://127.0.0.1:{self.page_port}/"

    @property
    def proxy(self) -> str:
        return f"http://localhost:{self.proxy_port}"

    @property
    def upstream(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}"

    def exchanges(self) -> list[Exchange]:
        """The proxy's record, newest first, read on the servers' own thread."""

        async def read() -> list[Exchange]:
            return self.proxy_app[STATE].exchanges.recent()

        return self.servers.call(read())

    def upstream_saw(self, method: str, path: str) -> list[Seen]:
        return [entry for entry in self.seen if entry.method == method and entry.path == path]


PROXY_YAML = """
routes:
  - path: /api
    upstream: http://127.0.0.1:{upstream_port}
    request_headers:
      X-Upstream-Key: ${{UPSTREAM_KEY}}
  - path: /open
    upstream: http://127.0.0.1:{upstream_port}
  - path: /nocreds
    upstream: http://127.0.0.1:{upstream_port}
  - path: /down
    upstream: http://127.0.0.1:{closed_port}
    connect_timeout: 2
rules:
  # A rule without credentials, as quick mode's: a credentialed fetch is blocked.
  - path: /nocreds/**
    origins: [http://localhost:{page_port}]
  # The proxy's own origin is listed for the inspector's "try" panel: /api injects a key,
  # so the proxy refuses to forward requests from origins no rule allows.
  - origins: [http://localhost:{page_port}, http://localhost:{proxy_port}]
    allow_methods: [GET, POST, PUT, PATCH, DELETE]
    allow_headers: [Content-Type, X-API-Key]
    expose_headers: [X-Request-Id]
    allow_credentials: true
    # No preflight cache: every test's preflight really reaches the proxy.
    max_age: 0
mocks:
  - path: /api/mocked/profile
    headers: {{X-Request-Id: mock-42}}
    json: {{name: Ada}}
  - path: /not-built-yet/**
    method: [PUT]
    status: 503
    body: simulated outage
simulate:
  - path: /open/flaky/**
    fail: {{every: 1, status: 503, retry_after: 7}}
  - path: /open/cut/**
    fail: {{every: 1, mode: reset}}
"""


@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    servers = ServerThread()
    seen: list[Seen] = []
    (upstream_sock, upstream_port), (page_sock, page_port), (proxy_sock, proxy_port) = (
        bound_socket() for _ in range(3)
    )
    # Bound and closed again: a port with nothing listening, the "upstream is down" case.
    closed_sock, closed_port = bound_socket()
    closed_sock.close()
    text = PROXY_YAML.format(
        upstream_port=upstream_port, closed_port=closed_port, page_port=page_port, proxy_port=proxy_port
    )
    proxy_app = create_app(parse_config(text, "browser-test.yaml", {"UPSTREAM_KEY": API_KEY}))
    try:
        servers.serve(upstream_app(seen), upstream_sock)
        servers.serve(page_app(), page_sock)
        # Served as `corsproxy serve` serves it: through the front door.
        servers.serve(proxy_app, proxy_sock, ProxyRunner)
        yield Stack(servers, proxy_app, page_port, proxy_port, upstream_port, seen)
    finally:
        servers.close()
        for sock in (upstream_sock, page_sock, proxy_sock):
            sock.close()


@pytest.fixture
def fresh_stack(stack: Stack) -> Stack:
    """The shared stack with the upstream's memory cleared, so each test sees only its own requests."""
    stack.servers.call(_clear(stack.seen))
    return stack


async def _clear(seen: list[Seen]) -> None:
    seen.clear()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        reason = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        # launch() gives Chromium a fresh temporary profile of its own (it refuses
        # --user-data-dir in args); every test then gets a fresh context on top.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context()
    context.set_default_timeout(10_000)
    yield context
    context.close()


@dataclass
class Tab:
    """A page and everything it wrote to the console."""

    page: Page
    console: list[ConsoleMessage]
    uncaught: list[str]

    def errors(self) -> list[str]:
        """Console errors and uncaught exceptions, in that order."""
        return [message.text for message in self.console if message.type == "error"] + self.uncaught

    def blocked_by_cors(self) -> bool:
        """Chromium names the CORS failure in the console, the one place a script cannot see."""
        return any("blocked by CORS policy" in text for text in self.errors())

    def fetch(
        self, url: str, init: dict[str, Any] | None = None, read: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """Run fetch(url, init) in the page; ``read`` names the headers to try response.headers.get on."""
        result: dict[str, Any] = self.page.evaluate(
            "([url, init, names]) => window.probe(url, init, names)", [url, init or {}, list(read)]
        )
        return result


@pytest.fixture
def tab(context: BrowserContext) -> Tab:
    page = context.new_page()
    tab = Tab(page, [], [])
    # Playwright tags its handlers with an attribute, which a bound builtin cannot take.
    page.on("console", lambda message: tab.console.append(message))
    page.on("pageerror", lambda error: tab.uncaught.append(str(error)))
    return tab


@dataclass
class Served:
    """An app served on the stack's server thread until ``stop``."""

    stack: Stack
    runner: web.AppRunner
    port: int

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    def stop(self) -> None:
        self.stack.servers.call(self.runner.cleanup())


@pytest.fixture
def serve(stack: Stack) -> Iterator[Any]:
    """Serve apps of the test's own on the stack's server thread; each stopped at the end."""
    running: list[Served] = []

    def start(app: web.Application, runner_class: type[web.AppRunner] = web.AppRunner) -> Served:
        sock, port = bound_socket()

        async def begin() -> web.AppRunner:
            runner = runner_class(app, shutdown_timeout=1.0)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            return runner

        served = Served(stack, stack.servers.call(begin()), port)
        running.append(served)
        return served

    yield start
    for served in running:
        served.stop()
