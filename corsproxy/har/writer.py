"""Appending entries to a HAR file so that it is a valid HAR after every entry.

The file is kept in one layout: the ``log`` object's other members, then ``entries`` last,
one entry per line, then a fixed trailer. Entries are added by writing a new file (the
old one up to its trailer, copied in the kernel with copy_file_range, then the new
entries and the trailer) and renaming it over the old one. A rename is atomic, so at every
moment the path names either the old valid HAR or the new one. An in-place write over the
trailer would not do: Linux checks for SIGKILL between the pages of a write, so a
``kill -9`` can leave half an entry. A crash loses only entries not yet written.

An exclusive ``flock`` on a lock file beside it lets several processes (``--workers``)
share one HAR. A HAR in another layout (from a browser, from Playwright) is rewritten
into this one, every earlier entry and member kept. One thread per file encodes and
writes, taking every entry queued since its last write in one go, so neither the JSON
encoding of a large body nor the disk ever holds up the event loop.
"""

from __future__ import annotations

import atexit
import contextlib
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
# Entries written in one go, at most (in bytes of JSON).
MAX_BATCH_BYTES = 64 * 1024 * 1024


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


def _valid_prefix(fd: int, size: int) -> tuple[int, bool] | None:
    """Where new entries go in a file in the append layout: the length of what is kept,
    and whether it holds no entry yet. A file whose last write was torn (a machine that
    lost power) is cut back to its last whole entry line. None: not in the layout."""
    if size >= len(TRAILER) and os.pread(fd, len(TRAILER), size - len(TRAILER)) == TRAILER:
        at = size - len(TRAILER)
        return at, os.pread(fd, 1, at - 1) == b"["
    if not os.pread(fd, 12, 0).startswith(b'{"log": {'):
        return None
    tail_start = max(0, size - MAX_BATCH_BYTES)
    tail = os.pread(fd, size - tail_start, tail_start)
    end = len(tail)
    while (end := tail.rfind(b"\n", 0, end)) >= 0:
        line = tail[tail.rfind(b"\n", 0, end) + 1 : end].rstrip(b",")
        if line.endswith(b"["):  # the head: no whole entry survived
            return tail_start + end, True
        try:
            json.loads(line)
        except ValueError:
            continue
        cut = tail_start + end
        # The comma before a torn entry goes with it.
        return (cut - 1 if tail[end - 1 : end] == b"," else cut), False
    return None


def _copy(source: int, target: int, length: int) -> None:
    """``length`` bytes from the start of ``source``: in the kernel where it can."""
    offset = 0
    try:
        while offset < length:
            copied = os.copy_file_range(source, target, length - offset, offset, offset)
            if copied == 0:
                break
            offset += copied
    except OSError:
        pass  # not supported here: the rest by read and write
    while offset < length:
        data = os.pread(source, min(1 << 20, length - offset), offset)
        if not data:
            raise OSError(f"the file shrank while being copied ({offset} of {length} bytes)")
        os.pwrite(target, data, offset)
        offset += len(data)


def _write_all(fd: int, data: bytes, at: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, at)
        view, at = view[written:], at + written


def append(path: Path, encoded_entries: list[bytes]) -> None:
    """Add entries (each its JSON, one line) to the HAR at ``path``: a new file renamed
    over it, so the path never names anything but a whole valid HAR."""
    with _locked(path):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            fd = None
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            mode = 0o644 if fd is None else os.fstat(fd).st_mode & 0o777
            out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            try:
                at, first = _start(path, fd, out)
                lines = b",\n".join(encoded_entries)
                _write_all(out, (b"\n" if first else b",\n") + lines + TRAILER, at)
            finally:
                os.close(out)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        finally:
            if fd is not None:
                os.close(fd)


def _start(path: Path, fd: int | None, out: int) -> tuple[int, bool]:
    """Put the kept part of the old file into ``out``; where new entries go, and whether
    they are the first."""
    size = 0 if fd is None else os.fstat(fd).st_size
    if fd is not None and size:
        kept = _valid_prefix(fd, size)
        if kept is not None:
            _copy(fd, out, kept[0])
            return kept
    log = (read_log(path) if fd is not None and size else None) or log_skeleton()
    entries = [json.dumps(entry, ensure_ascii=False).encode() for entry in log.get("entries", [])]
    head = _head_bytes(log) + (b"\n" + b",\n".join(entries) if entries else b"")
    _write_all(out, head, 0)
    return len(head), not entries


@contextlib.contextmanager
def _locked(path: Path) -> Any:
    """An exclusive lock for appending to ``path``, shared with other processes: on a
    file beside it, since the HAR itself is replaced on every append."""
    lock = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)  # closing releases the lock


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
            batch = [queued]
            # Every entry queued meanwhile goes in the same write.
            with contextlib.suppress(queue.Empty):
                while len(batch) < 1000:
                    more = self.jobs.get_nowait()
                    if more is None:
                        self.jobs.put(None)
                        break
                    batch.append(more)
            encoded: list[bytes] = []
            for job, _ in batch:
                try:
                    made = job()
                except Exception as error:  # a bad entry must not stop the recording
                    self.on_error(f"recording to {self.path} failed on one entry: {error!r}")
                    continue
                if made is not None:
                    encoded.append(made)
            try:
                if encoded:
                    append(self.path, encoded)
            except (OSError, HarFileError) as error:
                self.on_error(f"recording to {self.path} failed: {error}")
            finally:
                with self.idle:
                    self.pending -= len(batch)
                    self.queued_bytes -= sum(size for _, size in batch)
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
