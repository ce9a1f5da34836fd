"""Recording: every exchange the proxy forwards, appended to a HAR file (README,
"Recording to HAR").

The transports feed a Tape per forwarded request: the answer's head, then each body
chunk as it is relayed, then its end. Chunks are kept up to ``record.max_body`` and the
rest only counted; a body that reaches the limit is written at once, so an event stream
that never ends is still recorded. Decoding, encoding and writing happen on the file's
writer thread (har/writer.py), off the event loop. Injected values (``${VAR}``) are
written as ***.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from multidict import CIMultiDict
from yarl import URL

from corsproxy.config.model import RecordConfig
from corsproxy.har.decode import stored_body
from corsproxy.har.entries import entry
from corsproxy.har.writer import HarWriter, writer_for
from corsproxy.secrets import redact

log = logging.getLogger("corsproxy")


class Recorder:
    """Where and how one config records."""

    def __init__(self, config: RecordConfig, secrets: frozenset[str]) -> None:
        self.path = Path(config.file)
        self.max_body = config.max_body
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = tuple(sorted((s for s in secrets if s), key=len, reverse=True))
        self.writer: HarWriter = writer_for(self.path, log.warning)

    def tape(self, method: str, target: URL, headers: CIMultiDict[str]) -> Tape:
        return Tape(self, method, target, headers)

    def redact(self, value: Any) -> Any:
        """``value`` with every injected secret inside its strings replaced by ***: strings
        only, so a secret such as "3000" never touches a number or a key of the JSON."""
        if isinstance(value, str):
            return redact(value, self.secrets)
        if isinstance(value, dict):
            return {key: self.redact(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.redact(item) for item in value]
        return value


class Tape:
    """One forwarded exchange being recorded."""

    __slots__ = (
        "answer_headers",
        "body",
        "body_size",
        "cut",
        "done",
        "head_at",
        "method",
        "reason",
        "recorder",
        "request_body",
        "request_cut",
        "request_headers",
        "started",
        "started_wall",
        "status",
        "target",
    )

    def __init__(self, recorder: Recorder, method: str, target: URL, headers: CIMultiDict[str]) -> None:
        self.recorder = recorder
        self.method = method
        self.target = target
        # As sent upstream, with the Host the client adds from the URL.
        self.request_headers = [("Host", target.raw_authority), *headers.items()]
        self.started = time.perf_counter()
        self.started_wall = time.time()
        self.request_body: bytearray | None = None
        self.request_cut = False
        self.status = 0
        self.reason = ""
        self.answer_headers: list[tuple[str, str]] = []
        self.head_at = self.started
        self.body = bytearray()
        self.body_size = 0
        self.cut = False
        self.done = False

    def request_chunk(self, data: bytes) -> None:
        if self.request_body is None:
            self.request_body = bytearray()
        room = self.recorder.max_body - len(self.request_body)
        if len(data) > room:
            self.request_cut = True
        if room > 0:
            self.request_body += data[:room]

    def answered(self, status: int, reason: str, headers: Mapping[str, str]) -> None:
        self.status, self.reason = status, reason
        self.answer_headers = list(headers.items())
        self.head_at = time.perf_counter()

    def chunk(self, data: bytes) -> None:
        """One piece of the answer's body, as relayed."""
        if self.done:
            return
        self.body_size += len(data)
        room = self.recorder.max_body - len(self.body)
        if len(data) <= room:
            self.body += data
            return
        self.body += data[:room]
        self.cut = True
        # An event stream may never end: what the limit holds is written now.
        self.finish()

    def finish(self, problem: str | None = None) -> None:
        """The body ended (or broke off: ``problem``); the entry goes to the writer."""
        if self.done:
            return
        self.done = True
        ended = time.perf_counter()
        recorder = self.recorder
        # Nothing is added once done: the buffers are handed over, not copied.
        request_body, body = self.request_body, self.body
        request_headers, answer_headers = self.request_headers, self.answer_headers

        def encode() -> bytes:
            lowered = {name.lower(): value for name, value in answer_headers}
            sent = {name.lower(): value for name, value in request_headers}
            limit = recorder.max_body
            content_type = lowered.get("content-type", "")
            received = stored_body(
                bytes(body), content_type, lowered.get("content-encoding"), limit, self.cut
            )
            if problem is not None:
                received = received._replace(problem=", ".join(filter(None, (received.problem, problem))))
            made = entry(
                started=self.started_wall,
                method=self.method,
                url=str(self.target),
                request_headers=request_headers,
                request_body=None
                if request_body is None
                else stored_body(
                    bytes(request_body),
                    sent.get("content-type", ""),
                    sent.get("content-encoding"),
                    limit,
                    self.request_cut,
                ),
                status=self.status,
                status_text=self.reason,
                response_headers=answer_headers,
                response_body=received,
                response_body_size=self.body_size,
                wait_ms=(self.head_at - self.started) * 1000,
                receive_ms=(ended - self.head_at) * 1000,
            )
            if problem is not None:
                # Broken off: a replay must not serve it as a whole answer (replay.py).
                made["response"]["content"]["_truncated"] = True
            return json.dumps(recorder.redact(made), ensure_ascii=False).encode()

        recorder.writer.submit(encode, len(body) + len(request_body or b""))
