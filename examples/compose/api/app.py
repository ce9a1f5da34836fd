"""A tiny JSON API that, like many real ones, sends no CORS headers at all.

A browser page on another origin cannot read its answers directly; through corsproxy it can.
Standard library only, so it runs on the plain Python base image.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, NoReturn


class Handler(BaseHTTPRequestHandler):
    server_version = "example-api/1.0"

    def do_GET(self) -> None:
        if self.path in ("/hello", "/hello/"):
            self.send_json(200, {"message": "Hello from the API", "time": datetime.now(UTC).isoformat()})
        elif self.path == "/health":
            self.send_json(200, {"status": "ok"})
        else:
            self.send_json(404, {"error": f"no such endpoint: {self.path}"})

    def do_POST(self) -> None:
        if self.path != "/echo":
            self.send_json(404, {"error": f"no such endpoint: {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            self.send_json(400, {"error": "the body is not JSON"})
            return
        self.send_json(200, {"you_sent": body, "content_type": self.headers.get("Content-Type")})

    def send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        # Readable by the page only if the proxy lists it in expose_headers.
        self.send_header("X-Request-Id", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)


def stop(signum: int, frame: FrameType | None) -> NoReturn:
    sys.exit(0)


def main() -> None:
    port = int(os.environ.get("API_PORT", "8000"))
    signal.signal(signal.SIGTERM, stop)
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print(f"example API on port {port}: GET /hello, POST /echo, GET /health", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
