"""Appending entries to a HAR file so that it is a valid HAR after every entry.

The file is kept in one layout: the ``log`` object's other members, then ``entries`` last,
one entry per line, then a fixed trailer. An entry is added by one ``pwrite`` over the
trailer of the entry and a new trailer, so at every moment the file on disk is either the
old valid HAR or the new one: a crash or ``kill -9`` loses only entries not yet written.
An exclusive ``flock`` around each append lets several processes (``--workers``) share a
file. A HAR in any other layout (from a browser, from Playwright) is rewritten into this
one once, through a new file renamed over it, before the first append.

Entries are encoded and written by one thread per file, so neither the JSON encoding of
a large body nor the disk ever holds up the event loop.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corsproxy.har.entries import log_skeleton

TRAILER = b"\n]}}\n"
# Bodies waiting for the writer thread, at most: beyond it, entries are dropped.
MAX_QUEUED_BYTES = 256 * 1024 * 1024


class HarFileError(Exception):
    """The file exists and is not a HAR that entries can be added to."""


def _head_bytes(log: dict[str, Any]) -> bytes:
    members = {key: value for key, value in log.items() if key != "entries"}
    # The log's members without its closing brace, then the entries array opened.
    opened = json.dumps({"log": members}, ensure_ascii=False)[:-2]
    separator = ", " if members else ""
    return f'{opened}{separator}"entries": ['.encode()


def read_log(path: Path) -> dict[str, Any] | None:
    """The ``log`` of an existing HAR, or None when there is no file (or an empty one);
    raises HarFileError for a file that is not a HAR."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise HarFileError(f"cannot read {str(path)!r}: {error.strerror}") from error
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise HarFileError(f"{str(path)!r} is not JSON: {error}") from error
    log = data.get("log") if isinstance(data, dict) else None
    if not isinstance(log, dict) or not isinstance(log.get("entries", []), list):
        raise HarFileError(f"{str(path)!r} is not a HAR file: no log.entries list")
    return log


def check_appendable(path: Path) -> str | None:
    """Why entries cannot be added to ``path``, or None when they can."""
    if path.is_dir():
        return f"{str(path)!r} is a folder"
    if not path.parent.is_dir():
        return f"the folder {str(path.parent)!r} does not exist"
    if _ends_with_trailer(path):
        # Written in the append layout (by corsproxy): not parsed again, however large.
        return None
    try:
        read_log(path)
    except HarFileError as error:
        return str(error)
    return None


def _ends_with_trailer(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            if file.seek(0, 2) < len(TRAILER):
                return False
            file.seek(-len(TRAILER), 2)
            return file.read() == TRAILER
    except OSError:
        return False


def _rewrite(path: Path, log: dict[str, Any]) -> None:
    """Put an existing HAR into the append layout: a new file renamed over the old one."""
    lines = [json.dumps(entry, ensure_ascii=False).encode() for entry in log.get("entries", [])]
    body = _head_bytes(log) + (b"\n" + b",\n".join(lines) if lines else b"") + TRAILER
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(body)
    os.replace(temporary, path)


def _open_locked(path: Path) -> int:
    """The file open and exclusively locked, in the append layout; created if missing."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            # Another process may have renamed a rewritten file over this one meanwhile.
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                os.close(fd)
                continue
        except FileNotFoundError:
            os.close(fd)
            continue
        size = os.fstat(fd).st_size
        if size == 0:
            os.pwrite(fd, _head_bytes(log_skeleton()) + TRAILER, 0)
            return fd
        if size >= len(TRAILER) and os.pread(fd, len(TRAILER), size - len(TRAILER)) == TRAILER:
            return fd
        try:
            log = read_log(path) or log_skeleton()
        except HarFileError:
            if _cut_to_last_entry(fd, size):
                return fd
            os.close(fd)
            raise
        _rewrite(path, log)
        os.close(fd)


def _cut_to_last_entry(fd: int, size: int) -> bool:
    """A file in the append layout whose last write was torn (a machine that lost power
    mid-write; a process kill cannot tear one write): cut back to the last whole entry
    line and put the trailer back. False when the file is not in that layout."""
    tail_start = max(0, size - 64 * 1024 * 1024)
    tail = os.pread(fd, size - tail_start, tail_start)
    end = len(tail)
    while True:
        end = tail.rfind(b"\n", 0, end)
        if end < 0:
            return False
        line = tail[tail.rfind(b"\n", 0, end) + 1 : end].rstrip(b",")
        if line.endswith(b"["):  # the head: no whole entry survived
            break
        try:
            json.loads(line)
        except ValueError:
            continue
        break
    cut = tail_start + end
    head = os.pread(fd, min(cut, 4096), 0)
    if not head.startswith(b'{"log": {'):
        return False
    # Drop a dangling comma, then the trailer.
    if os.pread(fd, 1, cut - 1) == b",":
        cut -= 1
    os.ftruncate(fd, cut)
    _write_all(fd, TRAILER, cut)
    return True


def append(path: Path, encoded_entry: bytes) -> None:
    """Add one entry (its JSON, one line) to the HAR at ``path``, in one write. A write
    that fails part way (a full disk) is undone: the file is cut back and its trailer
    put back, so it stays the valid HAR it was."""
    fd = _open_locked(path)
    try:
        size = os.fstat(fd).st_size
        at = size - len(TRAILER)
        first = os.pread(fd, 1, at - 1) == b"["
        data = (b"\n" if first else b",\n") + encoded_entry + TRAILER
        try:
            _write_all(fd, data, at)
        except OSError:
            os.ftruncate(fd, at)
            _write_all(fd, TRAILER, at)
            raise
    finally:
        os.close(fd)  # closing releases the lock


def _write_all(fd: int, data: bytes, at: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, at)
        view, at = view[written:], at + written


Job = Callable[[], bytes | None]


class HarWriter:
    """One file's writer thread: jobs (each making an entry's JSON) run and are appended
    in the order given. ``flush`` waits for every job given so far."""

    def __init__(self, path: Path, on_error: Callable[[str], None]) -> None:
        self.path = path
        self.on_error = on_error
        self.jobs: queue.SimpleQueue[tuple[Job, int] | None] = queue.SimpleQueue()
        self.pending = 0
        self.queued_bytes = 0
        self.dropped = 0
        self.idle = threading.Condition()
        self.thread: threading.Thread | None = None
        self.pid = os.getpid()

    def submit(self, job: Job, size: int = 0) -> None:
        """Queue ``job`` (holding about ``size`` bytes of bodies). When the disk cannot keep
        up and MAX_QUEUED_BYTES are waiting, the entry is dropped, and said once."""
        with self.idle:
            if self.queued_bytes + size > MAX_QUEUED_BYTES and self.pending:
                self.dropped += 1
                if self.dropped == 1:
                    self.on_error(
                        f"recording to {self.path}: the disk is not keeping up; entries are dropped "
                        f"while {MAX_QUEUED_BYTES // 2**20} MiB wait to be written"
                    )
                return
            self.pending += 1
            self.queued_bytes += size
        if self.thread is None or self.pid != os.getpid():
            # Started on first use, so a process forked for --workers starts its own.
            self.pid = os.getpid()
            self.thread = threading.Thread(target=self._run, name=f"har {self.path.name}", daemon=True)
            self.thread.start()
        self.jobs.put((job, size))

    def _run(self) -> None:
        while True:
            queued = self.jobs.get()
            if queued is None:
                return
            job, size = queued
            try:
                encoded = job()
                if encoded is not None:
                    append(self.path, encoded)
            except (OSError, HarFileError) as error:
                self.on_error(f"recording to {self.path} failed: {error}")
            except Exception as error:  # a bad entry must not stop the recording
                self.on_error(f"recording to {self.path} failed on one entry: {error!r}")
            finally:
                with self.idle:
                    self.pending -= 1
                    self.queued_bytes -= size
                    self.idle.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted entry is on disk; False if that took over ``timeout``."""
        with self.idle:
            return self.idle.wait_for(lambda: self.pending == 0, timeout)


_writers: dict[Path, HarWriter] = {}
_writers_lock = threading.Lock()


def writer_for(path: Path, on_error: Callable[[str], None]) -> HarWriter:
    """The one writer of ``path`` in this process, shared by every config that names it."""
    resolved = path.resolve()
    with _writers_lock:
        found = _writers.get(resolved)
        if found is None:
            found = _writers[resolved] = HarWriter(resolved, on_error)
        return found


def flush_all(timeout: float = 10.0) -> None:
    """Every entry submitted so far, on disk: at shutdown."""
    for writer in list(_writers.values()):
        writer.flush(timeout)


atexit.register(flush_all)
