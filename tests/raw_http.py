"""Raw HTTP/1.1 for tests that must control every byte: a client that reads whole answers
with a real parser, and an upstream that records the exact bytes of every connection it
accepts and answers each request it parses. Nothing here mocks the network."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field

import httptools

# -- a raw client that reads whole responses with a real parser -------------------------


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)

    def header_set(self) -> set[tuple[str, str]]:
        """Headers as a set, less Date, which moves with the clock."""
        return {(name.lower(), value) for name, value in self.headers if name.lower() != "date"}

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


@dataclass
class AnswerReader:
    parser: httptools.HttpResponseParser = field(init=False)
    answers: list[Answer] = field(default_factory=list)
    _current: Answer | None = None

    def __post_init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self._current = Answer(0, [])

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._current is not None
        self._current.headers.append((name.decode(), value.decode()))

    def on_headers_complete(self) -> None:
        assert self._current is not None
        self._current.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        assert self._current is not None
        self._current.body += body

    def on_message_complete(self) -> None:
        assert self._current is not None
        # An interim answer (100 Continue) is kept too: tests assert on it.
        self.answers.append(self._current)


class RawConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parsed = AnswerReader()
        self.taken = 0

    async def send(self, *requests: str | bytes) -> None:
        for request in requests:
            data = request.encode() if isinstance(request, str) else request
            self.writer.write(data)
        await self.writer.drain()

    async def answers(self, count: int) -> list[Answer]:
        async with asyncio.timeout(30):
            while len(self.parsed.answers) < count:
                data = await self.reader.read(65536)
                assert data, f"the proxy closed the connection after {len(self.parsed.answers)} answers"
                self.parsed.parser.feed_data(data)
        return self.parsed.answers[:count]

    async def next_answers(self, count: int = 1) -> list[Answer]:
        """The next ``count`` answers after those already taken by this method."""
        answers = await self.answers(self.taken + count)
        self.taken += count
        return answers[-count:]

    async def closed_by_proxy(self) -> bool:
        async with asyncio.timeout(5):
            return await self.reader.read(65536) == b""


Connect = Callable[[], Awaitable[RawConnection]]


# -- an upstream that records the exact bytes it receives ------------------------------


@dataclass
class ReceivedRequest:
    """One request as the upstream parsed it from the bytes on its connection."""

    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: str) -> bytes | None:
        wanted = name.lower().encode()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


class _RequestReader:
    def __init__(self, requests: list[ReceivedRequest], answer: Callable[[ReceivedRequest], None]) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.requests = requests
        self.answer = answer
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = bytearray()

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", [], bytearray()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        request = ReceivedRequest(
            self.parser.get_method().decode(), self._url.decode("latin-1"), self._headers, bytes(self._body)
        )
        self.requests.append(request)
        self.answer(request)


@dataclass
class RecordingUpstream:
    """Answers every request it parses with 200 and a body naming it ("METHOD target
    body-length"), keeps connections alive, and records per connection the raw bytes
    received and the requests they held. It never sends 100 Continue."""

    server: asyncio.Server | None = None
    raw: list[bytearray] = field(default_factory=list)
    requests: list[list[ReceivedRequest]] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    @property
    def all_requests(self) -> list[ReceivedRequest]:
        return [request for connection in self.requests for request in connection]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        raw = bytearray()
        requests: list[ReceivedRequest] = []
        self.raw.append(raw)
        self.requests.append(requests)

        def answer(request: ReceivedRequest) -> None:
            body = f"{request.method} {request.target} {len(request.body)}".encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            self.changed.set()

        parser = _RequestReader(requests, answer)
        try:
            while data := await reader.read(65536):
                raw += data
                parser.parser.feed_data(data)
        except (ConnectionError, httptools.HttpParserError):
            pass
        finally:
            writer.transport.abort()
            self.tasks.discard(task)

    async def wait_for_requests(self, count: int) -> list[ReceivedRequest]:
        async with asyncio.timeout(10):
            while len(self.all_requests) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.all_requests

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        with suppress(asyncio.CancelledError):
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


async def start_recording_upstream() -> RecordingUpstream:
    upstream = RecordingUpstream()
    upstream.server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    return upstream
