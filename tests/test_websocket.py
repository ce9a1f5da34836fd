"""WebSocket proxying through the real proxy to a real upstream WebSocket server.

Every test speaks the protocol for real: an aiohttp client plays the browser, an aiohttp
WebSocket server plays the upstream, and the proxy between them is the application users run.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from corsproxy import create_app
from corsproxy.flow import RequestHead, is_websocket_upgrade
from corsproxy.server.runner import ProxyRunner
from corsproxy.upstream.websocket import MAX_MESSAGE_SIZE
from tests.conftest import FRONT_DOOR, ProxyFactory, config_from_yaml


@pytest.fixture
def transport() -> str:
    """WebSocket upgrades are always handed to aiohttp: one run, as `corsproxy serve` serves them."""
    return FRONT_DOOR


LOCAL = "http://localhost:5173"
SETTLE = 2.0


@dataclass
class WsUpstream:
    """What the upstream WebSocket server saw."""

    server: TestServer
    handshakes: list[dict[str, str]] = field(default_factory=list)
    received: list[tuple[WSMsgType, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


def ws_upstream_app(state: list[WsUpstream]) -> web.Application:
    """Echoes text and binary; answers pings itself (autoping off, so it can record them);
    a few text commands make it ping, close with a code, or drop the connection."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        upstream = state[0]
        upstream.handshakes.append(dict(request.headers))
        ws = web.WebSocketResponse(protocols=("chat.v2", "chat.v1"), autoping=False)
        await ws.prepare(request)
        try:
            while True:
                message = await ws.receive()
                upstream.received.append((message.type, message.data))
                if message.type is WSMsgType.TEXT:
                    if message.data == "close-4001":
                        await ws.close(code=4001, message=b"upstream says bye")
                        break
                    if message.data == "ping-me":
                        await ws.ping(b"from-upstream")
                        continue
                    if message.data == "drop":
                        assert request.transport is not None
                        request.transport.abort()
                        break
                    await ws.send_str(message.data)
                elif message.type is WSMsgType.BINARY:
                    await ws.send_bytes(message.data)
                elif message.type is WSMsgType.PING:
                    await ws.pong(message.data)
                elif message.type is WSMsgType.CLOSE:
                    upstream.close_code, upstream.close_reason = message.data, message.extra
                    break
                elif message.type in (WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
        finally:
            upstream.closed.set()
        return ws

    async def plain(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no websocket here\n")

    app = web.Application()
    app.router.add_get("/ws", handler)
    app.router.add_get("/plain", plain)
    return app


@pytest.fixture
async def ws_upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> WsUpstream:
    holder: list[WsUpstream] = []
    server = await aiohttp_server(ws_upstream_app(holder))
    holder.append(WsUpstream(server))
    return holder[0]


def config(upstream_url: str, extra: str = "") -> str:
    return f"""
upstream: {upstream_url}
rules:
  - origins: ["{LOCAL}"]
{extra}"""


@pytest.fixture
async def proxy(ws_upstream: WsUpstream, make_proxy: ProxyFactory) -> TestClient[Any, Any]:
    return await make_proxy(config(ws_upstream.url))


async def connect(
    client: TestClient[Any, Any], path: str = "/ws", **kwargs: Any
) -> aiohttp.ClientWebSocketResponse:
    kwargs.setdefault("autoping", False)
    ws: aiohttp.ClientWebSocketResponse = await client.ws_connect(path, origin=LOCAL, **kwargs)
    return ws


async def settle(baseline: int) -> int:
    """The number of tasks once the loop has had up to SETTLE seconds to wind down."""
    for _ in range(int(SETTLE / 0.01)):
        if len(asyncio.all_tasks()) <= baseline:
            break
        await asyncio.sleep(0.01)
    return len(asyncio.all_tasks())


def upgrade_headers(origin: str = LOCAL) -> dict[str, str]:
    return {
        "Origin": origin,
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }


async def test_a_text_message_goes_to_the_upstream_and_its_echo_comes_back(
    proxy: TestClient[Any, Any],
) -> None:
    ws = await connect(proxy)
    await ws.send_str("hello, upstream ✓")
    assert await ws.receive_str(timeout=5) == "hello, upstream ✓"
    await ws.close()


async def test_a_binary_message_goes_to_the_upstream_and_its_echo_comes_back(
    proxy: TestClient[Any, Any],
) -> None:
    payload = bytes(range(256)) * 1024
    ws = await connect(proxy)
    await ws.send_bytes(payload)
    assert await ws.receive_bytes(timeout=5) == payload
    await ws.close()


async def test_a_ping_from_the_browser_reaches_the_upstream_and_its_pong_comes_back(
    proxy: TestClient[Any, Any], ws_upstream: WsUpstream
) -> None:
    ws = await connect(proxy)
    await ws.ping(b"are you there")
    message = await ws.receive(timeout=5)
    assert (message.type, message.data) == (WSMsgType.PONG, b"are you there")
    assert (WSMsgType.PING, b"are you there") in ws_upstream.received
    await ws.close()


async def test_a_ping_from_the_upstream_reaches_the_browser_and_its_pong_goes_back(
    proxy: TestClient[Any, Any], ws_upstream: WsUpstream
) -> None:
    ws = await connect(proxy)
    await ws.send_str("ping-me")
    message = await ws.receive(timeout=5)
    assert (message.type, message.data) == (WSMsgType.PING, b"from-upstream")
    await ws.pong(message.data)
    await ws.send_str("after the pong")
    assert await ws.receive_str(timeout=5) == "after the pong"
    assert (WSMsgType.PONG, b"from-upstream") in ws_upstream.received
    await ws.close()


async def test_the_upstreams_close_code_4001_and_its_reason_reach_the_browser(
    proxy: TestClient[Any, Any], ws_upstream: WsUpstream
) -> None:
    ws = await connect(proxy)
    await ws.send_str("close-4001")
    message = await ws.receive(timeout=5)
    assert (message.type, message.data, message.extra) == (WSMsgType.CLOSE, 4001, "upstream says bye")
    await ws.close()
    await asyncio.wait_for(ws_upstream.closed.wait(), 5)


async def test_the_browsers_close_code_and_reason_reach_the_upstream(
    proxy: TestClient[Any, Any], ws_upstream: WsUpstream
) -> None:
    ws = await connect(proxy)
    await ws.close(code=4002, message=b"browser says bye")
    await asyncio.wait_for(ws_upstream.closed.wait(), 5)
    assert (ws_upstream.close_code, ws_upstream.close_reason) == (4002, "browser says bye")
    # RFC 6455 section 5.5.1: the closing handshake is answered with the same code.
    assert ws.close_code == 4002


async def test_the_browser_gets_the_subprotocol_the_upstream_chose_from_its_offer(
    proxy: TestClient[Any, Any], ws_upstream: WsUpstream
) -> None:
    ws = await connect(proxy, protocols=("chat.v3", "chat.v1", "chat.v2"))
    assert ws.protocol == "chat.v1"
    assert ws_upstream.handshakes[0]["Sec-WebSocket-Protocol"] == "chat.v3,chat.v1,chat.v2"
    await ws.close()


async def test_a_browser_offering_no_subprotocol_gets_none(
    proxy: TestClient[Any, Any], ws_upstream: WsUpstream
) -> None:
    ws = await connect(proxy)
    assert ws.protocol is None
    assert "Sec-WebSocket-Protocol" not in ws_upstream.handshakes[0]
    await ws.close()


async def test_injected_request_headers_and_the_origin_reach_the_upstream_on_the_upgrade(
    ws_upstream: WsUpstream, make_proxy: ProxyFactory
) -> None:
    client = await make_proxy(
        f"""
routes:
  - path: /
    upstream: {ws_upstream.url}
    request_headers:
      X-API-Key: ${{API_KEY}}
rules:
  - origins: ["{LOCAL}"]
""",
        API_KEY="k-123",
    )
    ws = await connect(client, headers={"X-API-Key": "from-the-browser"})
    await ws.send_str("hi")
    assert await ws.receive_str(timeout=5) == "hi"
    await ws.close()
    seen = ws_upstream.handshakes[0]
    assert seen["X-API-Key"] == "k-123"
    assert seen["Origin"] == LOCAL
    assert seen["Upgrade"].lower() == "websocket"


async def test_a_disallowed_origin_gets_403_and_the_upstream_never_sees_the_upgrade(
    proxy: TestClient[Any, Any], ws_upstream: WsUpstream
) -> None:
    response = await proxy.get("/ws", headers=upgrade_headers("https://evil.example"))
    assert response.status == 403
    assert "https://evil.example" in await response.text()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await proxy.ws_connect("/ws", origin="https://evil.example")
    assert refused.value.status == 403
    assert ws_upstream.handshakes == []


async def test_a_client_without_origin_is_no_browser_and_is_let_through(
    proxy: TestClient[Any, Any],
) -> None:
    ws: aiohttp.ClientWebSocketResponse = await proxy.ws_connect("/ws")
    await ws.send_str("from a command-line client")
    assert await ws.receive_str(timeout=5) == "from a command-line client"
    await ws.close()


async def test_an_upstream_that_is_down_gets_a_502_naming_it(make_proxy: ProxyFactory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = await make_proxy(config(f"http://127.0.0.1:{port}"))
    response = await client.get("/ws", headers=upgrade_headers())
    assert response.status == 502
    body = await response.text()
    assert f"http://127.0.0.1:{port}" in body
    assert "cannot connect" in body
    # Design rule 7: the proxy's own errors carry CORS headers too.
    assert response.headers["Access-Control-Allow-Origin"] == LOCAL


async def test_an_upstream_that_never_answers_the_upgrade_gets_a_504(make_proxy: ProxyFactory) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads the upgrade request, answers nothing
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await make_proxy(
            f"""
routes:
  - path: /
    upstream: http://127.0.0.1:{port}
    connect_timeout: 0.2
    read_timeout: 0.3
rules:
  - origins: ["{LOCAL}"]
"""
        )
        response = await client.get("/ws", headers=upgrade_headers())
        assert response.status == 504
        assert "did not complete the WebSocket handshake within 0.5s" in await response.text()
    finally:
        server.close()
        await server.wait_closed()


async def test_an_upstream_that_refuses_the_upgrade_gets_a_502_naming_its_status(
    proxy: TestClient[Any, Any],
) -> None:
    response = await proxy.get("/plain", headers=upgrade_headers())
    assert response.status == 502
    assert "refused the WebSocket upgrade: HTTP 404" in await response.text()


async def test_a_request_that_is_no_valid_handshake_gets_400_without_contacting_the_upstream(
    proxy: TestClient[Any, Any], ws_upstream: WsUpstream
) -> None:
    headers = upgrade_headers()
    del headers["Sec-WebSocket-Key"]
    response = await proxy.get("/ws", headers=headers)
    assert response.status == 400
    assert ws_upstream.handshakes == []


async def test_after_the_browser_closes_no_task_lingers_and_the_upstream_sees_the_close(
    proxy: TestClient[Any, Any], ws_upstream: WsUpstream
) -> None:
    baseline = len(asyncio.all_tasks())
    ws = await connect(proxy)
    await ws.send_str("one")
    assert await ws.receive_str(timeout=5) == "one"
    await ws.close()
    await asyncio.wait_for(ws_upstream.closed.wait(), 5)
    assert ws_upstream.close_code == WSCloseCode.OK
    assert await settle(baseline) == baseline


async def test_a_message_over_the_size_limit_ends_the_socket_and_the_upstream_learns_why(
    ws_upstream: WsUpstream, make_proxy: ProxyFactory
) -> None:
    # As web.run_app runs it: aiohttp's test server would cancel the handler as soon as the
    # browser's connection drops, before the relay can say why.
    host, port, stop = await start_proxy(config(ws_upstream.url), make_proxy, handler_cancellation=False)
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"http://{host}:{port}/ws", origin=LOCAL)
            # aiohttp refuses the message from its frame header (RFC 6455 section 7.4.1: 1009,
            # too big) and drops the connection while the rest is still being sent.
            with contextlib.suppress(ConnectionError):
                await ws.send_bytes(b"x" * (MAX_MESSAGE_SIZE + 1))
            await ws.close()
        await asyncio.wait_for(ws_upstream.closed.wait(), 5)
        assert ws_upstream.close_code == WSCloseCode.GOING_AWAY
        assert ws_upstream.close_reason is not None
        assert ws_upstream.close_reason.startswith("corsproxy: the browser side failed: Message size")
    finally:
        await stop()


async def start_proxy(
    yaml_text: str, make_proxy: ProxyFactory, handler_cancellation: bool
) -> tuple[str, int, Callable[[], Awaitable[None]]]:
    """The proxy on a loopback port. aiohttp's test server cancels a handler whose client
    disconnects; ``web.run_app``, which users run, does not: both must end the relay."""
    if handler_cancellation:
        client = await make_proxy(yaml_text)
        assert client.port is not None
        return client.host, client.port, client.close
    runner = ProxyRunner(create_app(config_from_yaml(yaml_text)), handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sockets = runner.addresses
    return "127.0.0.1", sockets[0][1], runner.cleanup


@pytest.mark.parametrize(
    "handler_cancellation",
    [pytest.param(True, id="as in aiohttp's test server"), pytest.param(False, id="as in web.run_app")],
)
async def test_a_browser_that_vanishes_without_a_close_frame_is_reported_to_the_upstream_as_going_away(
    ws_upstream: WsUpstream, make_proxy: ProxyFactory, handler_cancellation: bool
) -> None:
    host, port, stop = await start_proxy(config(ws_upstream.url), make_proxy, handler_cancellation)
    try:
        baseline = len(asyncio.all_tasks())
        reader, writer = await asyncio.open_connection(host, port)
        request = "GET /ws HTTP/1.1\r\nHost: localhost\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in upgrade_headers().items()
        )
        writer.write(request.encode() + b"\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 ")
        writer.transport.abort()
        await asyncio.wait_for(ws_upstream.closed.wait(), 5)
        # RFC 6455 section 7.4.1: 1001, "going away", as when a browser navigates away.
        assert ws_upstream.close_code == WSCloseCode.GOING_AWAY
        assert await settle(baseline) == baseline
    finally:
        await stop()


async def test_an_upstream_that_drops_the_connection_closes_the_browser_with_1014_bad_gateway(
    proxy: TestClient[Any, Any],
) -> None:
    baseline = len(asyncio.all_tasks())
    ws = await connect(proxy)
    await ws.send_str("drop")
    message = await ws.receive(timeout=5)
    assert (message.type, message.data) == (WSMsgType.CLOSE, WSCloseCode.BAD_GATEWAY)
    assert message.extra == "corsproxy: the upstream connection was lost"
    await ws.close()
    assert await settle(baseline) == baseline


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        pytest.param("GET", {"Connection": "Upgrade", "Upgrade": "websocket"}, True, id="a plain upgrade"),
        pytest.param(
            "GET",
            {"Connection": "keep-alive, Upgrade", "Upgrade": "WebSocket"},
            True,
            id="upgrade among other Connection tokens, in any case",
        ),
        pytest.param("POST", {"Connection": "Upgrade", "Upgrade": "websocket"}, False, id="not a GET"),
        pytest.param("GET", {"Upgrade": "websocket"}, False, id="no Connection upgrade token"),
        pytest.param("GET", {"Connection": "Upgrade", "Upgrade": "h2c"}, False, id="another protocol"),
        pytest.param("GET", {"Connection": "upgraded"}, False, id="a token that only contains upgrade"),
    ],
)
def test_is_websocket_upgrade_recognises(method: str, headers: dict[str, str], expected: bool) -> None:
    head = RequestHead(method, "/ws", "/ws", "", CIMultiDict(headers), "localhost", "http", "", None, False)
    assert is_websocket_upgrade(head) is expected
