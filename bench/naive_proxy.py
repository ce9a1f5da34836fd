"""The naive aiohttp CORS proxy corsproxy is measured against (uvloop when installed).

python bench/naive_proxy.py UPSTREAM_URL PORT
"""

import asyncio
import sys

import aiohttp
from aiohttp import web

try:
    import uvloop
except ImportError:
    uvloop = None

HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-authenticate",
    "host",
    "content-length",
}
UPSTREAM = sys.argv[1].rstrip("/")


def cors(origin):
    return {"Access-Control-Allow-Origin": origin or "*", "Vary": "Origin"}


async def handle(request):
    origin = request.headers.get("Origin")
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        headers = cors(origin)
        headers["Access-Control-Allow-Methods"] = request.headers["Access-Control-Request-Method"]
        headers["Access-Control-Allow-Headers"] = request.headers.get("Access-Control-Request-Headers", "")
        return web.Response(status=204, headers=headers)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    async with request.app["session"].request(
        request.method,
        UPSTREAM + request.rel_url.raw_path_qs,
        headers=headers,
        data=request.content if request.body_exists else None,
        allow_redirects=False,
    ) as upstream:
        out = {
            k: v
            for k, v in upstream.headers.items()
            if k.lower() not in HOP and not k.lower().startswith("access-control-")
        }
        out.update(cors(origin))
        response = web.StreamResponse(status=upstream.status, headers=out)
        if "Content-Length" in upstream.headers:
            response.content_length = int(upstream.headers["Content-Length"])
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(64 * 1024):
            await response.write(chunk)
        await response.write_eof()
        return response


async def session_ctx(app):
    app["session"] = aiohttp.ClientSession(auto_decompress=False)
    yield
    await app["session"].close()


def main():
    if uvloop is not None:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=None, print=None)


if __name__ == "__main__":
    main()
