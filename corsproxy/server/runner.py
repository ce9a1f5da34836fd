"""Serving the app on a TCP port until SIGINT or SIGTERM: aiohttp's ``web.run_app``
with the proxy's runner, whose connections start at the front door (frontdoor.py)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ssl
import sys
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.web_runner import GracefulExit
from aiohttp.web_server import Server

from corsproxy.har.writer import flush_all as flush_recordings
from corsproxy.log_writer import flush as flush_log
from corsproxy.server.frontdoor import FrontDoorServer
from corsproxy.state import STATE


class ProxyRunner(web.AppRunner):
    """aiohttp's AppRunner for the proxy app, serving through the front door (or, with
    ``front_door=False``, through aiohttp alone).

    It overrides AppRunner's ``_make_server``, the one place that builds the low-level
    Server from the app after the app's startup signals are frozen: aiohttp has no public
    seam for wrapping the protocol factory of an application's server (ServerRunner takes
    a Server, but building one for an Application goes through private ``_make_handler``
    too), and the FrontDoorServer must stand in for the Server so that aiohttp's own
    graceful shutdown reaches both kinds of connection."""

    def __init__(self, app: web.Application, *, front_door: bool = True, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.front_door = front_door

    async def _make_server(self) -> Server:
        inner = await super()._make_server()
        return cast(Server, FrontDoorServer(inner, self.app[STATE], serving=self.front_door))


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    grace: float,
    reuse_port: bool,
    on_listening: Callable[[int], None] | None,
) -> None:
    # handle_signals: SIGINT and SIGTERM raise GracefulExit, as under web.run_app.
    runner = ProxyRunner(app, handle_signals=True, access_log=None, shutdown_timeout=grace)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port or None)
        await site.start()
        if on_listening is not None:
            on_listening(int(runner.addresses[0][1]))
        await asyncio.Event().wait()  # until a signal raises GracefulExit
    finally:
        # Stop listening, let requests in flight finish within the grace period, close.
        waiting = app[STATE].in_flight
        if waiting:
            flush_log()  # the lines before it come first
            print(
                f"corsproxy: stopping; waiting up to {grace:g} s for {waiting} request(s) in flight "
                "(Ctrl-C again to stop now)",
                file=sys.stderr,
                flush=True,
            )
        await runner.cleanup()


def run(
    app: web.Application,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    grace: float,
    reuse_port: bool,
    loop: asyncio.AbstractEventLoop,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Serve until a signal; raises OSError when the port cannot be bound. ``on_listening``
    is called with the bound port once the proxy listens."""
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(app, host, port, ssl_context, grace, reuse_port, on_listening))
    try:
        loop.run_until_complete(main)
    except (GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():
            # A second signal during the grace period: stop now, closing what the graceful
            # shutdown would have closed, so nothing is left unclosed.
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError, GracefulExit):
                loop.run_until_complete(main)
        loop.run_until_complete(app[STATE].close_clients())
        leftover = asyncio.all_tasks(loop)
        for task in leftover:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        flush_log()  # the last turn's lines, after the loop that would have written them
        flush_recordings()  # every exchange recorded to a HAR, on disk


def listen_failure(host: str, port: int, error: OSError) -> str:
    """Why the port could not be bound, with what to do about it."""
    text = f"cannot listen on {host}:{port}: {error.strerror or error}"
    if error.errno == errno.EADDRINUSE:
        text += f"; another program is using port {port}: stop it, or choose another with --port"
    elif error.errno == errno.EACCES and port < 1024:
        text += "; ports below 1024 need privileges: choose one above 1024 with --port"
    return text
