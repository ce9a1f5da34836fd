"""aiohttp's client as an UpstreamClient (client.py): for requests with bodies, and for
everything the front door hands to aiohttp.

Bodies are never buffered: the request body is handed to the client as a stream and
the answer's body is read in bounded chunks that the server writes as they arrive, so
memory stays flat for a 1 GB download or a slow reader. The client never decompresses
(``auto_decompress=False``): the bytes and their ``Content-Encoding``/``Content-Length``
reach the browser as the upstream sent them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import aiohttp
from aiohttp import StreamReader
from multidict import CIMultiDict
from yarl import URL

from corsproxy.errors import (
    ClientGone,
    UpstreamBrokeOff,
    UpstreamFailed,
    UpstreamTimedOut,
    UpstreamUnreachable,
    connect_failure,
    describe,
)
from corsproxy.upstream.route import Route

# Read up to this much at a time: read(n) returns whatever has arrived, so event streams
# still flow event by event, while bounded, equal-sized buffers keep memory flat.
READ_CHUNK = 64 * 1024

# aiohttp's client adds these when absent; a proxy must not invent request headers.
SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


def create_session(max_connections: int) -> aiohttp.ClientSession:
    """The app's one client session: a keep-alive pool shared by every request."""
    connector = aiohttp.TCPConnector(limit=max_connections, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        # Cookies belong to the browser, not to the proxy: never store or replay them.
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        # The upstream's Host, Location and redirects are the browser's business.
        trust_env=False,
    )


class AiohttpAnswer:
    """An answer from aiohttp's client: its head, and its body as a stream of chunks."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def reason(self) -> str:
        return self.response.reason or ""

    @property
    def headers(self) -> Mapping[str, str]:
        return self.response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises UpstreamBrokeOff when it breaks off."""
        try:
            async for chunk in self.response.content.iter_chunked(READ_CHUNK):
                yield chunk
        except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as error:
            self.response.close()
            raise UpstreamBrokeOff(f"upstream body broke off: {describe(error)}") from error

    def abort(self) -> None:
        self.response.close()

    def release(self) -> None:
        self.response.release()


class AiohttpClient:
    """The UpstreamClient over one pooled ClientSession."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def send(
        self,
        route: Route,
        method: str,
        target: URL,
        headers: CIMultiDict[str],
        body: StreamReader | bytes | AsyncIterator[bytes] | None,
        client_closed: Callable[[], bool] = lambda: False,
    ) -> AiohttpAnswer:
        with map_errors(route, client_closed):
            response = await self.session.request(
                method,
                target,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=route.timeout,
                skip_auto_headers=SKIP_AUTO_HEADERS,
                ssl=route.ssl,
            )
        return AiohttpAnswer(response)


@contextlib.contextmanager
def map_errors(route: Route, client_closed: Callable[[], bool]) -> Iterator[None]:
    """aiohttp's client errors, before an answer's head, into corsproxy's tree (errors.py)."""
    upstream = route.config.upstream
    try:
        yield
    except aiohttp.ServerTimeoutError as error:
        raise UpstreamTimedOut(f"upstream {upstream} timed out ({describe(error)})") from error
    except TimeoutError as error:
        raise UpstreamTimedOut(f"upstream {upstream} timed out") from error
    except aiohttp.ClientConnectorError as error:
        reason = connect_failure(error.os_error)
        raise UpstreamUnreachable(f"cannot connect to upstream {upstream}: {reason}") from error
    except aiohttp.ClientError as error:
        if client_closed():
            # The client hung up before its body was complete: the upstream is not to blame.
            raise ClientGone("client disconnected before sending its whole body") from error
        raise UpstreamFailed(f"upstream {upstream} failed: {describe(error)}") from error
