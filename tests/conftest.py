"""Shared fixtures: a real upstream server and the real proxy, each on an ephemeral
loopback port, and a real HTTP client. Nothing here mocks the network."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from corsproxy import create_app
from corsproxy.config.checker import parse_config
from corsproxy.config.model import Config
from corsproxy.server.runner import ProxyRunner
from corsproxy.state import STATE, ProxyState
from tests.raw_http import Connect, RawConnection, RecordingUpstream, start_recording_upstream

GZIPPED_TEXT = b"hello, compressed world\n" * 100


@dataclass
class Received:
    """What the upstream saw: one entry per request that reached it."""

    method: str
    path: str
    raw_path: str
    query: str
    headers: dict[str, str]
    header_lines: list[tuple[str, str]]
    body_size: int


@dataclass
class Upstream:
    server: TestServer
    received: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


RECEIVED = web.AppKey("received", list)


def upstream_app(received: list[Received]) -> web.Application:
    """A real upstream with one path per behaviour the proxy must pass through."""

    async def record(request: web.Request) -> int:
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
        received.append(
            Received(
                request.method,
                request.path,
                request.rel_url.raw_path,
                request.rel_url.raw_query_string,
                dict(request.headers),
                list(request.headers.items()),
                size,
            )
        )
        return size

    async def echo(request: web.Request) -> web.Response:
        size = await record(request)
        entry = received[-1]
        return web.json_response(
            {
                "method": entry.method,
                "path": entry.path,
                "query": entry.query,
                "headers": entry.headers,
                "body_size": size,
            },
            headers={"X-Request-Id": "req-1", "X-Internal": "hidden"},
        )

    async def stream(request: web.Request) -> web.StreamResponse:
        await record(request)
        size = int(request.query.get("size", "1048576"))
        chunk = b"x" * 65536
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        sent = 0
        while sent < size:
            piece = chunk[: min(len(chunk), size - sent)]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    async def gzipped(request: web.Request) -> web.Response:
        await record(request)
        body = gzip.compress(GZIPPED_TEXT)
        return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})

    async def own_cors(request: web.Request) -> web.Response:
        await record(request)
        response = web.Response(text="upstream with its own CORS headers")
        response.headers.add("Access-Control-Allow-Origin", "*")
        response.headers.add("Access-Control-Allow-Origin", "https://wrong.example")
        response.headers["Access-Control-Allow-Credentials"] = "false"
        response.headers["Vary"] = "Accept-Encoding"
        return response

    async def status(request: web.Request) -> web.Response:
        await record(request)
        code = int(request.match_info["code"])
        headers = {"Location": "/elsewhere"} if 300 <= code < 400 else {}
        return web.Response(status=code, text=f"status {code}\n", headers=headers)

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        await asyncio.sleep(float(request.query.get("delay", "5")))
        return web.Response(text="late")

    async def hop_by_hop(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(
            text="hop",
            headers={"Connection": "X-Secret-Hop", "X-Secret-Hop": "1", "Keep-Alive": "timeout=5"},
        )

    app = web.Application()
    app.router.add_route("*", "/stream", stream)
    app.router.add_route("*", "/gzip", gzipped)
    app.router.add_route("*", "/own-cors", own_cors)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_route("*", "/slow", slow)
    app.router.add_route("*", "/hop", hop_by_hop)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Upstream:
    received: list[Received] = []
    server = await aiohttp_server(upstream_app(received))
    return Upstream(server, received)


def config_from_yaml(text: str, **env: str) -> Config:
    """A Config from YAML text, through the same loader users run."""
    return parse_config(text, "test.yaml", env)


FRONT_DOOR = "front door"
AIOHTTP = "aiohttp"


class ProxyTestServer(TestServer):
    """The proxy app on a loopback port, served as `corsproxy serve` serves it: through
    the front door, or with ``front_door=False`` through aiohttp alone. aiohttp's test
    server cancels a handler whose client disconnects; ``handler_cancellation=False`` is
    what `corsproxy serve` does."""

    def __init__(
        self, app: web.Application, *, handler_cancellation: bool = True, front_door: bool = True
    ) -> None:
        super().__init__(app)
        self.handler_cancellation = handler_cancellation
        self.front_door = front_door

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        kwargs["handler_cancellation"] = self.handler_cancellation
        return ProxyRunner(self.app, front_door=self.front_door, **kwargs)


@pytest.fixture(params=[FRONT_DOOR, AIOHTTP])
def transport(request: pytest.FixtureRequest) -> str:
    """Which transport serves the proxy's connections. Every test that starts the proxy
    with ``make_proxy`` runs once per transport; a module whose tests are about one
    transport overrides this fixture."""
    return str(request.param)


def assert_aiohttp_alone_served(app: web.Application) -> None:
    """Through aiohttp alone, the front door served nothing. (Through the front door, which
    requests it serves depends on each request: tests that care assert it themselves.)"""
    served = app[STATE].front_door.served
    assert served == 0, f"the front door served {served} requests"


ProxyFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def make_proxy(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], transport: str
) -> AsyncIterator[ProxyFactory]:
    """Start the real proxy for a YAML config, on the test's transport; returns a client
    that does not decompress, so tests see the bytes and headers exactly as the proxy
    sent them."""
    started: list[web.Application] = []

    async def start(yaml_text: str, **env: str) -> TestClient[Any, Any]:
        app = create_app(config_from_yaml(yaml_text, **env))
        started.append(app)
        server = ProxyTestServer(app, front_door=transport == FRONT_DOOR)
        return await aiohttp_client(server, auto_decompress=False)

    yield start
    if transport == AIOHTTP:
        for app in started:
            assert_aiohttp_alone_served(app)


ProxyServerFactory = Callable[..., Awaitable[ProxyTestServer]]


@pytest.fixture
async def proxy_server() -> AsyncIterator[ProxyServerFactory]:
    """Start a proxy app (any config, optionally ``ssl=``) as ``corsproxy serve`` does."""
    started: list[ProxyTestServer] = []

    async def start(app: web.Application, **kwargs: Any) -> ProxyTestServer:
        server = ProxyTestServer(app)
        await server.start_server(**kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


def loads(body: bytes) -> Any:
    return json.loads(body.decode())


@pytest.fixture
async def connect_to() -> AsyncIterator[Callable[[int], Connect]]:
    """Raw client connections to a port; aborted at teardown."""
    opened: list[RawConnection] = []

    def factory(port: int) -> Connect:
        async def connect() -> RawConnection:
            connection = RawConnection(*await asyncio.open_connection("127.0.0.1", port))
            opened.append(connection)
            return connection

        return connect

    yield factory
    for connection in opened:
        # Aborted, not closed: a client that never read may have unsent bytes queued.
        connection.writer.transport.abort()
    await asyncio.sleep(0)


@pytest.fixture
async def recording_upstream() -> AsyncIterator[RecordingUpstream]:
    """An upstream that records the exact bytes it receives (tests/raw_http.py)."""
    upstream = await start_recording_upstream()
    yield upstream
    await upstream.close()


# -- both transports -------------------------------------------------------------------

# A request the proxy's own pages answer: aiohttp's, so it hands its connection over.
HEALTH_REQUEST = b"GET /__corsproxy/health HTTP/1.1\r\nHost: localhost\r\n\r\n"


@dataclass
class Door:
    """One way into the proxy. "front door": a fresh connection, whose requests the front
    door serves or hands to aiohttp as it sees fit. "aiohttp": a connection already handed
    to aiohttp (by a first request to /__corsproxy/health), so aiohttp serves everything."""

    name: str
    state: ProxyState
    port: int
    connect: Connect
    served_before: int = 0

    async def open(self) -> RawConnection:
        connection = await self.connect()
        if self.name == "aiohttp":
            await connection.send(HEALTH_REQUEST)
            (health,) = await connection.next_answers(1)
            assert health.status == 200
        self.served_before = self.state.front_door.served
        return connection

    @property
    def front_door_served(self) -> int:
        """Requests the front door served itself since the last ``open``."""
        return self.state.front_door.served - self.served_before

    def assert_served(self, count: int, *, front_door_can: bool) -> None:
        """``count`` requests went through this door; the front door served them itself
        where it can (and this door lets it), aiohttp otherwise."""
        wanted = count if front_door_can and self.name == "front door" else 0
        assert self.front_door_served == wanted, (
            f"{self.name}: the front door served {self.front_door_served}"
        )


DoorFactory = Callable[[str], Awaitable[Door]]


@pytest.fixture(params=["front door", "aiohttp"])
async def door_to(
    request: pytest.FixtureRequest,
    proxy_server: ProxyServerFactory,
    connect_to: Callable[[int], Connect],
) -> DoorFactory:
    """Start the proxy for a YAML config and return the door the test goes through; every
    test that takes it runs once per transport."""

    async def start(yaml_text: str) -> Door:
        app = create_app(config_from_yaml(yaml_text))
        server = await proxy_server(app)
        assert server.port is not None
        return Door(request.param, app[STATE], server.port, connect_to(server.port))

    return start


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; each is stopped and reaped at the end."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)
