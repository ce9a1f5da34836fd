"""corsproxy's log output: every line in order, written in batches.

The per-request line is the proxy's busiest output. Through ``logging`` it cost about
11 µs a line (a LogRecord, findCaller's stack walk, the handler lock, a formatted time,
one write and one flush), half a preflight's whole cost. Here it costs about 1.6 µs: an
f-string and a list append, with the time prefix shared by the lines of a millisecond.
The first pending line schedules a flush FLUSH_AFTER (20 ms) later, so lines reach the
stream within 20 ms of their request, even when traffic stops, and under load the log
costs some 50 ``write()`` calls a second, not one a request.

Other records (warnings, reloads) go through ``logging`` as usual, and its handler here
adds them to the same batch, so the order of all lines is the order they were written.
A line from the loop's thread while no loop runs is written at once, after whatever is
pending; from another thread, the loop writes it. ``flush()`` runs at shutdown and exit.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
from typing import TextIO

# Beyond this many pending characters a batch is written at once, not FLUSH_AFTER later.
BATCH_LIMIT = 64 * 1024
# Pending lines are written this many seconds after the first of them: well inside the
# 100 ms in which a developer expects a request's line, and few writes under load.
FLUSH_AFTER = 0.02
# One write() of at most this many bytes, whole lines only: POSIX makes a pipe write of up
# to PIPE_BUF bytes atomic, so the lines of `--workers` processes sharing one stderr never
# tear into each other (Linux's PIPE_BUF is 4096).
ATOMIC_WRITE = 4096
FORMAT = "%(asctime)s %(levelname)s %(message)s"


class BatchedLog:
    """One stream's pending lines, written in batches FLUSH_AFTER apart."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._pending: list[str] = []
        self._size = 0
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        # Held while a batch is written: a thread without a loop writes its own lines.
        self._lock = threading.Lock()
        self._second = -1
        self._date = ""
        self._milli = -1
        self._stamp = ""

    def timestamp(self) -> str:
        """``2026-12-02 13:11:06,123``, as logging's default asctime writes it. Lines
        in the same millisecond share one string; the date part is made once a second."""
        milli = int(time.time() * 1000)
        if milli != self._milli:
            second, fraction = divmod(milli, 1000)
            if second != self._second:
                self._second = second
                self._date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._milli = milli
            self._stamp = f"{self._date},{fraction:03d}"
        return self._stamp

    def info(self, message: str) -> None:
        """One INFO line, as logging would have formatted it."""
        self.add(f"{self.timestamp()} INFO {message}\n")

    def add(self, line: str) -> None:
        """Queue ``line`` (ending in a newline) behind every line before it. On the
        loop's thread no lock is needed: list.append is atomic, and only that thread
        schedules and runs the timed flush."""
        self._pending.append(line)
        self._size += len(line)
        loop = self._loop
        # The loop found last time, when this is its thread and it runs: asking asyncio
        # each time would cost a getpid() system call a line (its fork check).
        if loop is None or threading.get_ident() != self._loop_thread or not loop.is_running():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._from_outside_the_loop()
                return
            self._loop, self._loop_thread = loop, threading.get_ident()
        if self._size >= BATCH_LIMIT:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_later(FLUSH_AFTER, self._timed_flush)

    def _from_outside_the_loop(self) -> None:
        """A line from a thread with no running loop. The loop's own thread (before the
        loop runs, or after it stopped) writes at once. Another thread hands the write to
        the loop, whose appends take no lock, unless the loop is gone."""
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self.flush)
                return
            except RuntimeError:
                pass  # closed meanwhile
        self.flush()

    def _timed_flush(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending, self._size = self._pending, [], 0
            if not pending:
                return
            try:
                for chunk in _whole_line_chunks(pending):
                    self.stream.write(chunk)
                    self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken stream: nothing left to tell the lines to


def _whole_line_chunks(lines: list[str]) -> list[str]:
    """The lines joined into as few texts as fit in ATOMIC_WRITE bytes each."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        length = len(line) if line.isascii() else len(line.encode("utf-8", "surrogateescape"))
        if current and size + length > ATOMIC_WRITE:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += length
    if current:
        chunks.append("".join(current))
    return chunks


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


def requests_logged() -> bool:
    """Whether the per-request line is on (level info or debug): check it before
    formatting one."""
    return log.isEnabledFor(logging.INFO)


def request_line(message: str) -> None:
    """The per-request line, once ``requests_logged()``. Without ``install`` (a library
    user, the tests) it goes through ``logging``, where caplog and the embedding
    application's handlers see it."""
    if _output is not None:
        _output.info(message)
    else:
        log.info("%s", message)
