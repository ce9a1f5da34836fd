"""The inspector: a page at /__corsproxy/ and its JSON API under /__corsproxy/api/.

It shows the recent exchanges through the proxy, live, each with its CORS decision, and
lets the developer try a request from a real browser. It is served to the proxy's own
origin only: any other Origin is refused with 403 and no response carries CORS headers,
so no website the developer visits can read the exchanges or the headers the proxy sends
upstream. Secrets injected towards the upstream are shown as ***.

    GET /__corsproxy/                       the page (static/inspector.html, .css, .js)
    GET /__corsproxy/api/exchanges?limit=N  summaries, newest first
    GET /__corsproxy/api/exchanges/{id}     one exchange with its headers
    GET /__corsproxy/api/events             Server-Sent Events: a snapshot, then each new exchange
    GET /__corsproxy/api/exchanges/{id}/body/{request|response}
                                            a body, decoded for display, secrets redacted
    DELETE /__corsproxy/api/exchanges       forget the record
    GET /__corsproxy/api/config             routes and rules, secrets redacted
    GET /__corsproxy/api/har[?ids=1,2]      the record (or those exchanges) as a HAR file
    GET|POST /__corsproxy/api/simulate, PUT .../simulate/{N|offline}   the simulated network
    GET|POST /__corsproxy/api/mocks, DELETE .../mocks/{N}              mocks added for this run
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from corsproxy.config.checker import parse_mock_entry, parse_simulate_entry
from corsproxy.config.model import Config, ConfigError
from corsproxy.exchanges import Exchange
from corsproxy.inspector.bodies import describe as describe_body
from corsproxy.inspector.bodies import kind_of, media_type, shown_bytes
from corsproxy.inspector.har_export import ring_as_har
from corsproxy.inspector.mock_this import NotMockable
from corsproxy.inspector.mock_this import describe as describe_mock
from corsproxy.inspector.mock_this import entry_from as mock_entry_from
from corsproxy.message.host import host_refusal
from corsproxy.patterns.origins import same_origin
from corsproxy.secrets import REDACTED, redact
from corsproxy.state import STATE
from corsproxy.version import __version__

PREFIX = "/__corsproxy/"
STATIC = Path(__file__).with_name("static")
DEFAULT_LIMIT = 100
# A browser tab that stops reading must not make the proxy hold exchanges without bound:
# past this many unsent events its stream is ended, and EventSource reconnects with
# Last-Event-ID to catch up from the ring buffer.
STREAM_BACKLOG = 1000
KEEPALIVE_SECONDS = 15.0

# Nothing else may frame, script or style the page; fetch may go anywhere, since the
# "try" panel's whole point is requesting arbitrary URLs from this page.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' http: https:; img-src 'self' data: blob:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class EventStream:
    """One open /api/events connection: the exchanges waiting to be written to it.

    ``None`` in the queue ends the stream (backlog overflow or server shutdown)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Exchange | None] = asyncio.Queue()
        self.ended = False

    def push(self, exchange: Exchange) -> None:
        if self.ended:
            return
        if self.queue.qsize() >= STREAM_BACKLOG:
            self.end()
        else:
            self.queue.put_nowait(exchange)

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.queue.put_nowait(None)


STREAMS = web.AppKey("corsproxy_inspector_streams", set[EventStream])


def add_inspector_routes(app: web.Application) -> None:
    """Register the page and its API; call before the /__corsproxy/ catch-all route."""
    app[STREAMS] = set()
    app.on_shutdown.append(_end_streams)
    get = app.router.add_get
    get(PREFIX.rstrip("/"), own_origin_only(_to_page))
    get(PREFIX, own_origin_only(_static("inspector.html")))
    get(PREFIX + "inspector.css", own_origin_only(_static("inspector.css")))
    get(PREFIX + "inspector.js", own_origin_only(_static("inspector.js")))
    get(PREFIX + "workbench.js", own_origin_only(_static("workbench.js")))
    get(PREFIX + "api/exchanges", own_origin_only(list_exchanges))
    get(PREFIX + r"api/exchanges/{id:\d+}", own_origin_only(exchange_detail))
    get(PREFIX + r"api/exchanges/{id:\d+}/body/{which:request|response}", own_origin_only(exchange_body))
    app.router.add_delete(PREFIX + "api/exchanges", own_origin_only(clear_exchanges))
    get(PREFIX + "api/events", own_origin_only(events))
    get(PREFIX + "api/config", own_origin_only(config_summary))
    get(PREFIX + "api/har", own_origin_only(har_export))
    get(PREFIX + "api/mocks", own_origin_only(mocks_listing))
    app.router.add_post(PREFIX + "api/mocks", own_origin_only(mock_add))
    app.router.add_delete(PREFIX + r"api/mocks/{number:\d+}", own_origin_only(mock_remove))
    get(PREFIX + "api/simulate", own_origin_only(simulate_listing))
    app.router.add_post(PREFIX + "api/simulate", own_origin_only(simulate_add))
    app.router.add_put(PREFIX + r"api/simulate/{which:\d+|offline}", own_origin_only(simulate_switch))


def own_origin_only(handler: Handler) -> Handler:
    """Refuse any request that does not come from the proxy's own origin, and add the
    security headers to every response."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        wrong_host = host_refusal(request.app[STATE].runtime.host_guard, request)
        if wrong_host is not None:
            return wrong_host
        own = f"{request.scheme}://{request.host}"
        refused = _foreign(request, own)
        if refused is not None:
            response: web.StreamResponse = web.Response(
                status=403,
                text=f"the corsproxy inspector is served to its own origin {own} only, not to {refused}\n",
            )
        else:
            response = await handler(request)
        if not response.prepared:
            # A handler's own, stricter header (a body's sandbox) stands.
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
        return response

    return guarded


def _foreign(request: web.Request, own: str) -> str | None:
    """What makes this request foreign, or None when it comes from the proxy's own origin.

    Same-origin GETs from the page carry no Origin at all (Fetch standard, "append a
    request Origin header"), while cross-origin CORS requests always do. Subresource loads
    from other sites (<script src>, <img>) carry no Origin either, so Fetch Metadata's
    Sec-Fetch-Site catches those; following a link to the page stays possible."""
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(origin, own):
        return origin
    site = request.headers.get("Sec-Fetch-Site")
    mode = request.headers.get("Sec-Fetch-Mode")
    if site in ("cross-site", "same-site") and mode != "navigate":
        return f"a {site} {mode or 'subresource'} request"
    return None


async def _to_page(request: web.Request) -> web.StreamResponse:
    # Without this, /__corsproxy would fall through to the proxy and reach the upstream.
    raise web.HTTPFound(PREFIX)


def _static(name: str) -> Handler:
    path = STATIC / name

    async def serve(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path)

    return serve


async def list_exchanges(request: web.Request) -> web.Response:
    text = request.query.get("limit", str(DEFAULT_LIMIT))
    if not text.isdigit():
        return web.json_response({"error": f"limit must be a non-negative integer, got {text!r}"}, status=400)
    exchanges = request.app[STATE].exchanges.recent(int(text))
    return web.json_response([exchange.summary() for exchange in exchanges])


async def exchange_detail(request: web.Request) -> web.Response:
    exchange_id = int(request.match_info["id"])
    exchange = request.app[STATE].exchanges.get(exchange_id)
    if exchange is None:
        return web.json_response(
            {"error": f"no exchange {exchange_id}: it never existed or has left the ring buffer"},
            status=404,
        )
    detail = exchange.detail()
    detail["request_body"] = describe_body(exchange.request_body, exchange.secrets)
    detail["response_body"] = describe_body(exchange.response_body, exchange.secrets)
    upstream = detail["upstream_request"]
    if upstream is not None and upstream["url"] is not None:
        # An upstream base URL can carry ${VAR} values too; detail() redacts only headers.
        upstream["url"] = redact(upstream["url"], exchange.secrets)
    return web.json_response(detail)


async def exchange_body(request: web.Request) -> web.Response:
    """One body, decoded, as a type the page shows but the browser never runs."""
    exchange = request.app[STATE].exchanges.get(int(request.match_info["id"]))
    which = request.match_info["which"]
    captured = None
    if exchange is not None:
        captured = exchange.request_body if which == "request" else exchange.response_body
    if exchange is None or captured is None:
        return web.json_response({"error": f"no {which} body kept for that exchange"}, status=404)
    data, _ = shown_bytes(captured, exchange.secrets)
    kind = kind_of(captured.content_type)
    response = web.Response(body=data, headers={"Content-Type": media_type(kind, captured.content_type)})
    # Shown in the page, never as a page: no script runs, whatever the body holds.
    response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    return response


async def clear_exchanges(request: web.Request) -> web.Response:
    request.app[STATE].exchanges.clear()
    return web.json_response({"cleared": True})


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``snapshot`` with every exchange the record keeps (only those after
    Last-Event-ID on a reconnect), then one ``exchange`` event per new exchange."""
    log = request.app[STATE].exchanges
    stream = EventStream()
    # Subscribing and taking the snapshot happen with no await in between, so no
    # exchange can fall in the gap or arrive twice.
    unsubscribe = log.subscribe(stream.push)
    after = request.headers.get("Last-Event-ID", "")
    snapshot = [e for e in log.recent() if not after.isdigit() or e.id > int(after)]
    streams = request.app[STREAMS]
    streams.add(stream)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", **SECURITY_HEADERS}
    )
    try:
        await response.prepare(request)
        last_id = snapshot[0].id if snapshot else after
        await response.write(_event("snapshot", [e.summary() for e in snapshot], last_id))
        while True:
            try:
                exchange = await asyncio.wait_for(stream.queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                # A comment line: keeps idle connections open through proxies, and
                # notices a closed tab on the next write.
                await response.write(b": keep-alive\n\n")
                continue
            if exchange is None:
                break
            await response.write(_event("exchange", exchange.summary(), exchange.id))
        await response.write_eof()
    except ConnectionResetError:
        pass  # the tab was closed or reloaded: nothing left to send to
    finally:
        streams.discard(stream)
        unsubscribe()
    return response


def _event(name: str, data: Any, event_id: int | str) -> bytes:
    lines = [f"event: {name}", f"data: {json.dumps(data)}"]
    if event_id != "":
        lines.append(f"id: {event_id}")
    return ("\n".join(lines) + "\n\n").encode()


async def _end_streams(app: web.Application) -> None:
    # Open event streams never finish on their own; without this, shutdown would wait
    # for its timeout whenever an inspector tab is open.
    for stream in app[STREAMS]:
        stream.end()


async def har_export(request: web.Request) -> web.Response:
    """The record as a HAR file (inspector/har_export.py), offered as a download."""
    exchanges = request.app[STATE].exchanges.recent()
    ids = request.query.get("ids")
    if ids is not None:
        # The inspector's filtered rows only ("save only the filtered flows").
        wanted = {int(part) for part in ids.split(",") if part.strip().isdigit()}
        exchanges = [exchange for exchange in exchanges if exchange.id in wanted]
    har = ring_as_har(exchanges, request.scheme)
    response = web.json_response(har)
    response.headers["Content-Disposition"] = 'attachment; filename="corsproxy.har"'
    return response


async def mocks_listing(request: web.Request) -> web.Response:
    added = request.app[STATE].runtime.mocks.added
    return web.json_response({"added": [describe_mock(mock) for mock in added.mocks]})


async def mock_add(request: web.Request) -> web.Response:
    """``{"exchange": ID}`` makes a mock from that exchange; any other body is a mocks
    entry itself. Checked as the config file's mocks are: a 400 names each problem."""
    state = request.app[STATE]
    body = await _json_body(request)
    if isinstance(body, dict) and set(body) == {"exchange"}:
        exchange = state.exchanges.get(int(body["exchange"])) if str(body["exchange"]).isdigit() else None
        if exchange is None:
            return web.json_response({"error": f"no exchange {body['exchange']} in the record"}, status=404)
        try:
            body = mock_entry_from(exchange)
        except NotMockable as error:
            return web.json_response({"error": f"cannot mock exchange {exchange.id}: {error}"}, status=400)
    base = (
        Path(state.runtime.config.source).parent
        if state.runtime.config.source.endswith((".yaml", ".yml"))
        else Path.cwd()
    )
    try:
        entry = parse_mock_entry(body, base)
    except ConfigError as error:
        return web.json_response({"error": "not a valid mock", "problems": error.errors}, status=400)
    mock = state.runtime.mocks.added.add(entry)
    return web.json_response(describe_mock(mock), status=201)


async def mock_remove(request: web.Request) -> web.Response:
    number = int(request.match_info["number"])
    if not request.app[STATE].runtime.mocks.added.remove(number):
        return web.json_response({"error": f"no mock[+{number}] added for this run"}, status=404)
    return web.json_response({"removed": f"mock[+{number}]"})


async def simulate_listing(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].simulator.listing())


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as error:
        raise web.HTTPBadRequest(text=f"the body must be JSON: {error}\n") from None


async def simulate_add(request: web.Request) -> web.Response:
    """An entry for this run, checked as the config file's are; a 400 names each bad key."""
    try:
        entry = parse_simulate_entry(await _json_body(request))
    except ConfigError as error:
        return web.json_response(
            {"error": "not a valid simulate entry", "problems": error.errors}, status=400
        )
    simulator = request.app[STATE].simulator
    index = simulator.add(entry)
    return web.json_response(simulator.listing()["entries"][index], status=201)


async def simulate_switch(request: web.Request) -> web.Response:
    """``{"enabled": true|false}`` for entry N, or for the offline switch."""
    body = await _json_body(request)
    enabled = body.get("enabled") if isinstance(body, dict) else None
    if not isinstance(enabled, bool):
        return web.json_response({"error": 'send {"enabled": true} or {"enabled": false}'}, status=400)
    simulator = request.app[STATE].simulator
    which = request.match_info["which"]
    if which == "offline":
        simulator.go_offline(enabled)
    elif int(which) < len(simulator.entries):
        simulator.switch(int(which), enabled)
    else:
        count = len(simulator.entries)
        return web.json_response({"error": f"no simulate entry {which}: there are {count}"}, status=404)
    return web.json_response(simulator.listing())


async def config_summary(request: web.Request) -> web.Response:
    state = request.app[STATE]
    summary = describe_config(state.runtime.config)
    summary["rejected_reload"] = state.rejected_reload_summary()
    return web.json_response(summary)


def describe_config(config: Config) -> dict[str, Any]:
    """Routes and rules as the inspector shows them. Injected header values and any part
    of an upstream URL that came from the environment are shown as ***."""
    return {
        "version": __version__,
        "source": config.source,
        "routes": [
            {
                "path": route.path,
                "upstream": redact(route.upstream, config.secrets),
                "strip_prefix": route.strip_prefix,
                "request_headers": [[name, REDACTED] for name, _ in route.request_headers],
                "connect_timeout": route.connect_timeout,
                "read_timeout": route.read_timeout,
            }
            for route in config.routes
        ],
        "rules": [
            {
                "index": index,
                "path": rule.path,
                "origins": list(rule.origins),
                "allow_methods": list(rule.allow_methods),
                "allow_headers": list(rule.allow_headers),
                "expose_headers": list(rule.expose_headers),
                "allow_credentials": rule.allow_credentials,
                "max_age": rule.max_age,
                "allow_private_network": rule.allow_private_network,
                "line": rule.line,
            }
            for index, rule in enumerate(config.rules)
        ],
    }
