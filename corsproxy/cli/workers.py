"""``--workers N``: N processes sharing one listening port through SO_REUSEPORT.

The kernel spreads new connections across the processes. Each worker is a whole
proxy: its own client pool, its own inspector record and its own config watcher.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

from corsproxy.har.writer import flush_all as flush_recordings
from corsproxy.log_writer import flush as flush_log

EXIT_WORKER_FAILED = 1


def run_workers(count: int, serve_one: Callable[[], int]) -> int:
    """Fork ``count`` workers that each call ``serve_one``; forward SIGINT and SIGTERM to
    them and return the worst exit status once all have stopped."""
    children: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            status = EXIT_WORKER_FAILED
            try:
                status = serve_one()
            except SystemExit as exit_:
                status = exit_.code if isinstance(exit_.code, int) else EXIT_WORKER_FAILED
            finally:
                flush_log()  # atexit does not run in a forked child
                flush_recordings()
                sys.stdout.flush()
                sys.stderr.flush()
                # A forked child must not run the parent's atexit handlers or cleanups.
                os._exit(status)
        children.append(pid)

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    for child in children:
        _, wait_status = os.waitpid(child, 0)
        worst = max(worst, os.waitstatus_to_exitcode(wait_status) if wait_status else 0)
    return worst
