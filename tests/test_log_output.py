"""The log as a user reads it: every line, in order, soon after its request, and all of it
when the proxy stops. The proxy's stderr goes to a file, as docker-compose captures it."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from corsproxy.log_writer import FLUSH_AFTER, BatchedHandler, BatchedLog
from tests.processes import free_port, spawn_to_file, start_demo_upstream, wait_for_port

LOCAL = "http://localhost:5173"
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) ")


def keep_alive_requests(port: int, targets: list[str]) -> list[bytes]:
    """The targets' GETs one after another on one connection; the status line of each."""
    statuses = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        reader = connection.makefile("rb")
        for target in targets:
            connection.sendall(
                f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {LOCAL}\r\n\r\n".encode()
            )
            statuses.append(reader.readline())
            length = 0
            while (header := reader.readline()) != b"\r\n":
                if header.lower().startswith(b"content-length:"):
                    length = int(header.split(b":")[1])
            reader.read(length)
    return statuses


def serve_logging_to_file(started: list[subprocess.Popen[str]], tmp_path: Path) -> tuple[int, Path]:
    """`corsproxy serve` at its defaults, /api to a demo upstream, /down to a closed port."""
    upstream_port, port = start_demo_upstream(started), free_port()
    config = tmp_path / "corsproxy.yaml"
    config.write_text(
        "routes:\n"
        f"  - path: /api\n    upstream: http://127.0.0.1:{upstream_port}\n"
        f"  - path: /down\n    upstream: http://127.0.0.1:{free_port()}\n"
        f"server:\n  port: {port}\n"
        f"rules:\n  - origins: ['{LOCAL}']\n"
    )
    log_file = tmp_path / "proxy.log"
    proxy = spawn_to_file(started, log_file, "serve", str(config))
    wait_for_port(port, proxy)
    return port, log_file


def request_lines(log_file: Path) -> list[str]:
    return [line for line in log_file.read_text().splitlines() if " origin=" in line]


def test_every_request_line_reaches_the_file_in_order_with_the_warnings_between(
    started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    port, log_file = serve_logging_to_file(started, tmp_path)
    targets = [f"/down/{n}" if n % 10 == 9 else f"/api/echo/{n}" for n in range(300)]
    statuses = keep_alive_requests(port, targets)
    assert statuses.count(b"HTTP/1.1 502 Bad Gateway\r\n") == 30
    deadline = time.monotonic() + 5
    while len(request_lines(log_file)) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    lines = log_file.read_text().splitlines()
    logged = [line for line in lines if " origin=" in line]
    # One line per request, each request's own, in the order they were answered.
    assert [re.search(r" (/\S+) origin=", line)[1] for line in logged] == targets  # type: ignore[index]
    # Each failure's warning comes right before its own request line.
    warnings = [index for index, line in enumerate(lines) if " WARNING GET /down/" in line]
    assert len(warnings) == 30
    for index in warnings:
        path = lines[index].split(" ")[4].rstrip(":")
        assert f" INFO GET {path} origin=" in lines[index + 1]
    assert all(LINE.match(line) for line in lines if " origin=" in line)


def test_the_last_request_line_is_in_the_file_within_100_ms_when_traffic_stops(
    started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    port, log_file = serve_logging_to_file(started, tmp_path)
    keep_alive_requests(port, ["/api/echo/warm"])
    for n in range(5):
        keep_alive_requests(port, [f"/api/echo/last/{n}"])
        answered = time.monotonic()
        while len(request_lines(log_file)) < n + 2:
            assert time.monotonic() - answered < 0.1, f"request {n}'s line was not written within 100 ms"
            time.sleep(0.002)


def test_sigterm_writes_every_pending_line_before_the_proxy_exits(
    started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    port, log_file = serve_logging_to_file(started, tmp_path)
    keep_alive_requests(port, [f"/api/echo/{n}" for n in range(100)])
    proxy = started[-1]
    proxy.send_signal(signal.SIGTERM)
    proxy.wait(timeout=10)
    assert proxy.returncode == 0
    assert len(request_lines(log_file)) == 100


class CountingStream(io.StringIO):
    """A stream that keeps each write() call's text."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    @property
    def writes(self) -> int:
        return len(self.calls)

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


async def test_the_lines_of_20_ms_are_one_write_in_the_order_written() -> None:
    stream = CountingStream()
    output = BatchedLog(stream)
    logger = logging.getLogger("tests.log_output")
    logger.propagate = False
    logger.addHandler(BatchedHandler(output))
    try:
        output.info("GET /a origin=- -> 200")
        logger.warning("GET /b: upstream refused the connection")
        output.info("GET /b origin=- -> 502")
        assert stream.getvalue() == ""  # pending for FLUSH_AFTER
        await asyncio.sleep(FLUSH_AFTER * 2)
    finally:
        logger.handlers.clear()
    assert stream.writes == 1
    assert [line.split(" ", 2)[2] for line in stream.getvalue().splitlines()] == [
        "INFO GET /a origin=- -> 200",
        "WARNING GET /b: upstream refused the connection",
        "INFO GET /b origin=- -> 502",
    ]


def test_a_line_written_with_no_event_loop_running_is_written_at_once() -> None:
    stream = CountingStream()
    BatchedLog(stream).info("config reloaded")
    assert stream.getvalue().endswith(" INFO config reloaded\n")


async def test_a_big_batch_is_written_in_whole_lines_of_at_most_4096_bytes_each() -> None:
    """Lines of `--workers` processes share one stderr: a pipe write up to PIPE_BUF is atomic."""
    stream = CountingStream()
    output = BatchedLog(stream)
    for n in range(300):
        output.info(f"GET /é/{n:03d} " + "x" * 80)
    await asyncio.sleep(FLUSH_AFTER * 2)
    assert stream.writes > 1
    assert all(len(call.encode()) <= 4096 and call.endswith("\n") for call in stream.calls)
    assert [line.split(" ")[4] for line in stream.getvalue().splitlines()] == [
        f"/é/{n:03d}" for n in range(300)
    ]


async def test_a_line_from_another_thread_is_written_by_the_loop_after_the_lines_before_it() -> None:
    stream = CountingStream()
    output = BatchedLog(stream)
    output.info("first, from the loop")
    thread = threading.Thread(target=output.info, args=("second, from a thread",))
    thread.start()
    thread.join()
    for _ in range(3):
        await asyncio.sleep(0)
    assert [line.split(" ", 3)[3] for line in stream.getvalue().splitlines()] == [
        "first, from the loop",
        "second, from a thread",
    ]
