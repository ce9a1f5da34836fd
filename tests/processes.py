"""Real corsproxy processes for the tests: start one, wait for its port, talk raw HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def corsproxy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corsproxy", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
        check=False,
    )


def http(port: int, request: str) -> str:
    """One raw HTTP/1.1 exchange: what curl would print with -i."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request.replace("\n", "\r\n").encode() + b"\r\n")
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def wait_for_port(port: int, process: subprocess.Popen[str], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited early with {process.returncode}: {process.communicate()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on {port} within {seconds}s")


def spawn(
    started: list[subprocess.Popen[str]], *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "corsproxy", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    started.append(process)
    return process


def start_demo_upstream(started: list[subprocess.Popen[str]]) -> int:
    """`corsproxy demo` as an upstream for another proxy process; returns its port."""
    port = free_port()
    demo = spawn(started, "demo", "--port", str(port))
    wait_for_port(port, demo)
    return port


def spawn_to_file(started: list[subprocess.Popen[str]], log_file: Path, *args: str) -> subprocess.Popen[str]:
    """corsproxy with its stdout and stderr going to ``log_file``, as docker-compose keeps them."""
    with log_file.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "corsproxy", *args], stdout=sink, stderr=subprocess.STDOUT, text=True
        )
    started.append(process)
    return process
