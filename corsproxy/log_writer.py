"""corsproxy's log output: every line in order, written in batches, one write per
event-loop turn.

The per-request line is the proxy's busiest output. Through ``logging`` it cost about
11 µs a line (a LogRecord, findCaller's stack walk, the handler lock, a formatted time,
one write and one flush), half a preflight's whole cost. Here a request line is one
``%`` format and a list append; the time prefix is formatted once a second. The first
line of a loop turn schedules a flush with ``call_soon``, so lines reach the stream at
the end of the turn that wrote them (well within 100 ms, even when traffic stops), as
one ``write()`` for the whole batch.

Other records (warnings, reloads) go through ``logging`` as usual, and its handler here
adds them to the same batch, so the order of all lines is the order they were written.
A line written outside the event loop's thread, or with no loop running, is written at
once, after whatever is pending. ``flush()`` runs at shutdown and at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
from typing import TextIO

# Beyond this many pending characters a batch is written at once, not at the turn's end.
BATCH_LIMIT = 64 * 1024
FORMAT = "%(asctime)s %(levelname)s %(message)s"


class BatchedLog:
    """One stream's pending lines, written a batch per event-loop turn."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._pending: list[str] = []
        self._size = 0
        self._scheduled = False
        self._lock = threading.Lock()
        self._second = -1
        self._prefix = ""

    def timestamp(self) -> str:
        """``2026-12-02 13:11:06,123``, as logging's default asctime writes it."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._prefix},{int((now - second) * 1000):03d}"

    def info(self, message: str) -> None:
        """One INFO line, as logging would have formatted it."""
        self.add(f"{self.timestamp()} INFO {message}\n")

    def add(self, line: str) -> None:
        """Queue ``line`` (ending in a newline) behind every line before it."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._pending.append(line)
            self._size += len(line)
            if loop is None or self._size >= BATCH_LIMIT:
                self._write_pending()
            elif not self._scheduled:
                self._scheduled = True
                loop.call_soon(self.flush)

    def flush(self) -> None:
        with self._lock:
            self._write_pending()

    def _write_pending(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        text, self._pending, self._size = "".join(self._pending), [], 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stream: nothing left to tell the lines to


class BatchedHandler(logging.Handler):
    """logging's records into the same batch as the request lines, in order."""

    def __init__(self, output: BatchedLog) -> None:
        super().__init__()
        self.output = output
        self.setFormatter(logging.Formatter(FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.output.add(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.output.flush()


_output: BatchedLog | None = None
log = logging.getLogger("corsproxy")


def install(stream: TextIO, level: str) -> BatchedLog:
    """Send all of the process's log output to ``stream`` through one batch. As with
    ``logging.basicConfig``, a root logger that has handlers already keeps them (an
    embedding application's, or pytest's), and the request lines then go to them."""
    global _output
    output = BatchedLog(stream)
    root = logging.getLogger()
    if root.handlers:
        return output
    root.setLevel(level)
    root.addHandler(BatchedHandler(output))
    _output = output
    atexit.register(output.flush)
    return output


def flush() -> None:
    """Write every pending line now (before a message printed straight to stderr)."""
    if _output is not None:
        _output.flush()


def request_line(message: str) -> None:
    """The per-request line. Without ``install`` (a library user, the tests) it goes
    through ``logging``, where caplog and the embedding application's handlers see it."""
    if not log.isEnabledFor(logging.INFO):
        return
    if _output is not None:
        _output.info(message)
    else:
        log.info("%s", message)
