"""The one small interface both upstream clients implement.

``send`` puts a request on the wire and returns once the answer's head has arrived; every
failure before that is raised as one of corsproxy.errors' UpstreamError kinds, mapped in
one place per client. What follows the head differs on purpose, as the two transports
write differently: the aiohttp client's answer is an async stream of chunks that the
aiohttp server awaits writing (``AiohttpAnswer.chunks``); the lean pool's hands each
chunk to a sink as it arrives and is paused while the client's socket is full
(``LeanAnswer.attach``, ``pause``, ``resume``). Both raise UpstreamBrokeOff when the body
breaks off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from aiohttp import StreamReader
from multidict import CIMultiDict
from yarl import URL

from corsproxy.upstream.route import Route


@runtime_checkable
class UpstreamAnswer(Protocol):
    """An answer whose head has arrived."""

    @property
    def status(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...

    def abort(self) -> None:
        """Drop the upstream connection: nobody will read the rest of the answer."""


@runtime_checkable
class UpstreamClient(Protocol):
    async def send(
        self, route: Route, method: str, target: URL, headers: CIMultiDict[str], body: StreamReader | None
    ) -> UpstreamAnswer:
        """Send the request (``body``: the client's request body stream, or None) and
        return the answer once its head has arrived; raises UpstreamError."""
        ...
