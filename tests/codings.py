"""Bodies in each content coding the proxy meets (gzip, br, zstd), for upstreams in tests."""

from __future__ import annotations

import gzip
from collections.abc import Callable

import brotli
from aiohttp import web

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd

ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "br": brotli.compress,
    "zstd": zstd.compress,
}


def coded_json(coding: str, data: bytes) -> web.Response:
    """``data`` (JSON) in ``coding``, as an upstream sends it: Content-Encoding set."""
    return web.Response(
        body=ENCODERS[coding](data), headers={"Content-Encoding": coding, "Content-Type": "application/json"}
    )
