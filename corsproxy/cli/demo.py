"""``corsproxy demo``: a built-in echo upstream with the proxy in front, no network needed."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Iterator

from aiohttp import web

from corsproxy.config.model import Config, RouteConfig, RuleConfig, ServerConfig
from corsproxy.patterns.origins import LOCAL_DEV_ORIGINS
from corsproxy.server.app import create_app
from corsproxy.server.runner import ProxyRunner, listen_failure

_request_ids: Iterator[int] = itertools.count(1)


def echo_app() -> web.Application:
    """An upstream that sends no CORS headers of its own, except on /wrong-cors."""
    app = web.Application()
    app.router.add_route("*", "/cookie", set_cookie)
    app.router.add_route("*", "/wrong-cors", wrong_cors)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def echo(request: web.Request) -> web.Response:
    """JSON echo of what arrived upstream: what the proxy forwarded, exactly."""
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": dict(request.headers),
            "body": body.decode("utf-8", "replace"),
        },
        headers={"X-Request-Id": str(next(_request_ids))},
    )


async def set_cookie(request: web.Request) -> web.Response:
    response = web.json_response({"cookie": "demo_session set", "received": request.headers.get("Cookie")})
    response.set_cookie("demo_session", "hello", path="/", httponly=True, samesite="Lax")
    return response


async def wrong_cors(request: web.Request) -> web.Response:
    """An upstream with the classic mistakes: a wrong origin, sent twice. The proxy replaces them."""
    response = web.json_response({"upstream_sent": "Access-Control-Allow-Origin: https://wrong.example, *"})
    response.headers.add("Access-Control-Allow-Origin", "https://wrong.example")
    response.headers.add("Access-Control-Allow-Origin", "*")
    return response


def demo_config(upstream: str, host: str, port: int) -> Config:
    return Config(
        routes=(RouteConfig(path="/", upstream=upstream),),
        rules=(
            RuleConfig(origins=("*",), path="/public/**", allow_methods=("GET",)),
            RuleConfig(
                origins=LOCAL_DEV_ORIGINS,
                allow_methods=("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"),
                allow_headers=("Content-Type", "Authorization", "X-API-Key"),
                expose_headers=("X-Request-Id",),
                allow_credentials=True,
                max_age=600,
            ),
        ),
        server=ServerConfig(host, port),
        source="built-in demo",
    )


def instructions(base: str, upstream: str) -> str:
    origin = "http://localhost:5173"
    return f"""corsproxy demo
  proxy:     {base}  (CORS for http://localhost:* with credentials; /public/** for any origin)
  inspector: {base}/__corsproxy/
  upstream:  {upstream}  (built-in echo; sends no CORS headers)
  health:    {base}/__corsproxy/health

Try:
  curl -i '{base}/echo?hello=world' -H 'Origin: {origin}'
  curl -i -X OPTIONS {base}/echo -H 'Origin: {origin}' \\
       -H 'Access-Control-Request-Method: PUT' -H 'Access-Control-Request-Headers: content-type, x-api-key'
  curl -i -X OPTIONS {base}/echo -H 'Origin: https://evil.example' -H 'Access-Control-Request-Method: PUT'
  curl -i {base}/wrong-cors -H 'Origin: {origin}'     # the upstream's wrong ACAO is replaced
  curl -i {base}/cookie -H 'Origin: {origin}'         # a cookie set through the proxy
  curl -i {base}/public/anything -H 'Origin: https://any.example'

Ctrl-C to stop.
"""


async def run_demo(host: str, port: int, ready: asyncio.Event | None = None) -> None:
    """Serve the echo upstream on an ephemeral loopback port and the proxy on ``port``."""
    upstream_runner = web.AppRunner(echo_app(), access_log=None)
    await upstream_runner.setup()
    upstream_site = web.TCPSite(upstream_runner, "127.0.0.1", 0)
    await upstream_site.start()
    upstream_port = _bound_port(upstream_runner)
    upstream = f"http://127.0.0.1:{upstream_port}"

    # The runner `corsproxy serve` uses: connections start at the front door.
    proxy_runner = ProxyRunner(create_app(demo_config(upstream, host, port)), access_log=None)
    await proxy_runner.setup()
    await web.TCPSite(proxy_runner, host, port).start()
    shown_host = f"[{host}]" if ":" in host else host
    print(instructions(f"http://{shown_host}:{_bound_port(proxy_runner)}", upstream), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await proxy_runner.cleanup()
        await upstream_runner.cleanup()


def _bound_port(runner: web.AppRunner) -> int:
    address = runner.addresses[0]
    return int(address[1])


def main(host: str, port: int) -> int:
    try:
        asyncio.run(run_demo(host, port))
    except OSError as error:
        print(f"corsproxy demo: {listen_failure(host, port, error)}")
        return 2
    return 0


__all__ = ["demo_config", "echo_app", "main", "run_demo"]
