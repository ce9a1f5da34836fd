"""Instructions per request, this tree against an earlier revision: a cost that machine
noise cannot blur.

    python bench/instructions.py REV
    python bench/instructions.py --yaml 'inspector: {max_body: 0}'   # one setting's cost

Each side runs `corsproxy serve --upstream URL --port N` at its defaults (its log line
going to a file) under valgrind's callgrind, which counts instructions executed, not
seconds: the same for the same work whatever else the machine does. Requests go one
after another on one keep-alive connection, N and then 2N of them in two runs; the
difference of the two totals over N is the cost of one request, startup and shutdown
cancelled out. Each side is measured twice (``--repeats``), alternately: timers (the log's
20 ms batches) fire a little differently in each run, which moves the counts by up to
about 1%, and the table shows it. Small GET (forwarded to nginx) and preflight (answered by the proxy).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ORIGIN,
    Procs,
    ensure_tools,
    free_port,
    log,
    make_workdir,
    python_for_project,
    start_upstream,
)
from compare import unpack

GET = f"GET /small HTTP/1.1\r\nHost: localhost\r\nOrigin: {ORIGIN}\r\n\r\n".encode()
PREFLIGHT = (
    f"OPTIONS /small HTTP/1.1\r\nHost: localhost\r\nOrigin: {ORIGIN}\r\n"
    "Access-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: content-type\r\n\r\n"
).encode()


def serve_argv(python: str, source: Path | None, upstream: str, port: int) -> list[str]:
    flags = ["serve", "--upstream", upstream, "--port", str(port)]
    if source is None:
        return [python, "-m", "corsproxy", *flags]
    start = (
        f"import sys; sys.path.insert(0, {str(source)!r}); import corsproxy; "
        f"assert corsproxy.__file__.startswith({str(source)!r}), corsproxy.__file__; "
        "from corsproxy.cli.main import main; sys.exit(main())"
    )
    return [python, "-c", start, *flags]


def answers(connection: socket.socket, request: bytes, count: int) -> None:
    """``count`` requests, each sent once the answer before it is in."""
    for _ in range(count):
        connection.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += connection.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        wanted = int(length[1]) if length else 0
        while len(body) < wanted:
            body += connection.recv(65536)


def instructions(argv: list[str], port: int, request: bytes, count: int, tmp: Path) -> int:
    out = tmp / f"callgrind.{port}.out"
    # A fixed hash seed: str hashes (and so dict and set layouts) are then the same in
    # every run, one source of drift fewer.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    with (tmp / f"serve.{port}.log").open("wb") as sink:
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
            stdout=sink,
            stderr=sink,
            env=env,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=60)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"corsproxy under valgrind did not start: {argv}") from None
                time.sleep(0.2)
        with connection:
            answers(connection, request, count)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    summary = re.search(r"^summary: (\d+)", out.read_text(), re.M)
    assert summary is not None, out
    return int(summary[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision", nargs="?", help="the earlier revision (with --yaml: none needed)")
    parser.add_argument("--requests", type=int, default=1000, help="N: the runs send N and 2N")
    parser.add_argument("--against", help="measure this revision instead of the working tree")
    parser.add_argument(
        "--yaml",
        help="instead of a revision: this tree at its defaults against this tree with these config "
        "lines added (e.g. 'inspector: {max_body: 0}')",
    )
    parser.add_argument("--repeats", type=int, default=2, help="measurements of each side")
    parser.add_argument("--python", default=python_for_project())
    args = parser.parse_args()
    if (args.revision is None) == (args.yaml is None):
        parser.error("give a revision, or --yaml LINES")
    ensure_tools()
    procs = Procs()
    tmp = make_workdir()
    try:
        upstream = start_upstream(procs, tmp)
        sides: list[tuple[str, Callable[[int], list[str]]]]
        if args.yaml is not None:
            defaults, changed = tmp / "defaults.yaml", tmp / "changed.yaml"
            defaults.write_text(f"upstream: {upstream.base}\n")
            changed.write_text(f"upstream: {upstream.base}\n{args.yaml}\n")

            def with_file(path: Path) -> Callable[[int], list[str]]:
                flags = ["serve", "--config", str(path), "--no-reload"]
                return lambda port: [args.python, "-m", "corsproxy", *flags, "--port", str(port)]

            sides = [("defaults", with_file(defaults)), (f"with {args.yaml}", with_file(changed))]
        else:
            commit = unpack(args.revision, tmp / "baseline")
            # The later side: this working tree, or (--against) another revision, unpacked
            # too, so that edits made while the measurement runs cannot reach it.
            later, later_source = "this tree", None
            if args.against:
                later, later_source = unpack(args.against, tmp / "later"), tmp / "later"
            sides = [
                (commit, lambda port: serve_argv(args.python, tmp / "baseline", upstream.base, port)),
                (later, lambda port: serve_argv(args.python, later_source, upstream.base, port)),
            ]
        rows = []
        for kind, request in (("small GET", GET), ("preflight", PREFLIGHT)):
            costs: dict[str, list[float]] = {name: [] for name, _ in sides}
            # Each side measured `--repeats` times, alternately, so the spread shows.
            for _ in range(args.repeats):
                for side, argv_for in sides:
                    totals = []
                    for count in (args.requests, 2 * args.requests):
                        port = free_port()
                        totals.append(instructions(argv_for(port), port, request, count, tmp))
                    costs[side].append((totals[1] - totals[0]) / args.requests)
                    log(f"{kind}, {side}: {costs[side][-1]:,.0f} instructions a request")
            rows.append((kind, costs[sides[0][0]], costs[sides[1][0]]))
    finally:
        procs.stop_all()
    print(f"instructions per request (callgrind, N={args.requests} and {2 * args.requests}):")
    print(f"| request | {sides[0][0]} | {sides[1][0]} | ratio of the medians |")
    print("|---|---|---|---|")
    for kind, before, now in rows:
        shown = [" / ".join(f"{value:,.0f}" for value in side) for side in (before, now)]
        ratio = statistics.median(now) / statistics.median(before)
        print(f"| {kind} | {shown[0]} | {shown[1]} | {ratio:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
