"""The lean keep-alive pool (pool.py) as an UpstreamClient (client.py): the front door's
client for body-less requests, http and https."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import StreamReader
from multidict import CIMultiDict
from yarl import URL

from corsproxy.errors import (
    UpstreamBrokeOff,
    UpstreamFailed,
    UpstreamTimedOut,
    UpstreamUnreachable,
    connect_failure,
)
from corsproxy.upstream.pool import BodySink, ConnectionPool, ResponseHead, UpstreamBroke, UpstreamConnection
from corsproxy.upstream.route import Route


def request_head(method: str, target: URL, route: Route, headers: CIMultiDict[str]) -> bytes:
    """The request head as aiohttp's client writes it: Host first, from the upstream URL."""
    lines = [f"{method} {target.raw_path_qs} HTTP/1.1\r\nHost: {route.host_header}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    lines.append("\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


class LeanAnswer:
    """An answer on one pooled connection: its head, then its body handed to a sink."""

    def __init__(self, pool: ConnectionPool, connection: UpstreamConnection, head: ResponseHead) -> None:
        self.pool = pool
        self.connection = connection
        self.head = head

    @property
    def status(self) -> int:
        return self.head.status

    @property
    def reason(self) -> str:
        return self.head.reason

    @property
    def headers(self) -> Mapping[str, str]:
        return self.head.headers

    def take_pending(self) -> list[bytes]:
        """Body chunks that arrived with the head: sent in the same write as the head."""
        return self.connection.take_pending()

    def attach(self, sink: BodySink) -> None:
        self.connection.attach(sink)

    def pause(self) -> None:
        """The client's socket is full: stop reading (and timing) the upstream."""
        self.connection.pause()

    def resume(self) -> None:
        self.connection.resume()

    async def finished(self) -> None:
        """The body is whole; raises UpstreamBrokeOff when it breaks off."""
        assert self.connection.done is not None
        try:
            await self.connection.done
        except UpstreamBroke as broke:
            raise UpstreamBrokeOff(f"upstream body broke off: {broke}") from broke

    def abort(self) -> None:
        self.connection.abort()

    def release(self) -> None:
        """Back to the pool if the connection can carry another exchange, else closed."""
        self.pool.release(self.connection)


class LeanClient:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    async def send(
        self, route: Route, method: str, target: URL, headers: CIMultiDict[str], body: StreamReader | None
    ) -> LeanAnswer:
        if body is not None:
            raise ValueError("the lean client sends body-less requests only")
        config = route.config
        upstream = config.upstream
        # The lean client's errors into corsproxy's tree (errors.py), in this one place.
        try:
            connection, head = await self.pool.exchange(
                route.address,
                request_head(method, target, route, headers),
                method,
                config.connect_timeout,
                config.read_timeout,
            )
        except TimeoutError as error:
            raise UpstreamTimedOut(f"upstream {upstream} timed out (connect)") from error
        except OSError as error:
            raise UpstreamUnreachable(
                f"cannot connect to upstream {upstream}: {connect_failure(error)}"
            ) from error
        except UpstreamBroke as broke:
            if broke.timed_out:
                raise UpstreamTimedOut(f"upstream {upstream} timed out ({broke})") from broke
            raise UpstreamFailed(f"upstream {upstream} failed: {broke}") from broke
        return LeanAnswer(self.pool, connection, head)
