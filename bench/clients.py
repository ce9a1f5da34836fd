"""N concurrent downloads of one URL, fast or rate-limited, bounded in time.

    python bench/clients.py URL --clients 8 [--rate-mib 2] [--seconds 10]

Prints JSON: per-client body bytes, whether each finished, errors. A slow client
(``--rate-mib`` > 0) has a small receive buffer and paces its reads, so a proxy
without backpressure would have to hold what the upstream sends faster.
Plain asyncio streams (no HTTP library) so the client costs little CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from urllib.parse import urlsplit

READ = 64 * 1024


async def download(url: str, origin: str, rate: float, deadline: float) -> dict[str, object]:
    parts = urlsplit(url)
    sock = socket.socket()
    if rate > 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 128 * 1024)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (parts.hostname, parts.port or 80))
    reader, writer = await asyncio.open_connection(sock=sock, limit=READ)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nOrigin: {origin}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    result: dict[str, object] = {"bytes": 0, "complete": False, "error": None, "status": None}
    started = time.monotonic()
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), max(0.1, deadline - time.monotonic()))
        status = int(head.split(b" ", 2)[1])
        result["status"] = status
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        received = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            chunk = await asyncio.wait_for(reader.read(READ), remaining)
            if not chunk:
                result["complete"] = length is None or received >= length
                break
            received += len(chunk)
            if length is not None and received >= length:
                result["complete"] = True
                break
            if rate > 0:
                ahead = received / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(min(ahead, max(0.0, deadline - time.monotonic())))
        result["bytes"] = received
        if status != 200:
            result["error"] = f"status {status}"
    except TimeoutError:
        pass  # the time bound: report what arrived
    except (OSError, asyncio.IncompleteReadError, ValueError) as error:
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        writer.transport.abort()
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    deadline = time.monotonic() + args.seconds
    rate = args.rate_mib * 1024 * 1024
    started = time.monotonic()
    results = await asyncio.gather(
        *(download(args.url, args.origin, rate, deadline) for _ in range(args.clients))
    )
    elapsed = time.monotonic() - started
    total = sum(int(r["bytes"]) for r in results)  # type: ignore[call-overload]
    return {
        "clients": results,
        "total_bytes": total,
        "seconds": round(elapsed, 3),
        "mib_per_s": round(total / elapsed / 1024 / 1024, 1),
        "errors": [r["error"] for r in results if r["error"]],
        "complete": sum(1 for r in results if r["complete"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate-mib", type=float, default=0.0, help="per client; 0 = as fast as possible")
    parser.add_argument("--seconds", type=float, default=60.0, help="hard time bound")
    parser.add_argument("--origin", default="http://localhost:5173")
    args = parser.parse_args()
    json.dump(asyncio.run(main_async(args)), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
