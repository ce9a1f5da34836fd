"""Shared machinery for bench/run.py and bench/soak.py.

Everything listens on 127.0.0.1 only, every process is started in its own session and
stopped by its PID (``Procs.stop_all`` runs on exit, on SIGTERM and on Ctrl-C), and
every load loop has a time bound.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
ORIGIN = "http://localhost:5173"
HOST = "127.0.0.1"
PROXY_CORE = "0"
LOAD_CORE = "1"  # wrk, the upstream nginx and the download clients
SMALL_BODY = b"x" * 99 + b"\n"  # 100 B
MIB = 1024 * 1024


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_tools(need_node: bool = False) -> None:
    """nginx and wrk from apt when missing; node_modules from bench/package-lock.json."""
    missing = [tool for tool in ("nginx", "wrk", "taskset") if shutil.which(tool) is None]
    if "nginx" in missing or "wrk" in missing:
        log("installing nginx-light and wrk from apt")
        subprocess.run(["apt-get", "update"], check=False, stdout=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "nginx-light", "wrk"], check=True
        )
    if shutil.which("taskset") is None:
        raise SystemExit("taskset (util-linux) is needed to pin processes to cores")
    if need_node and not (BENCH / "node_modules" / "cors-anywhere").is_dir():
        log("npm install --prefix bench")
        subprocess.run(["npm", "install", "--prefix", str(BENCH), "--no-audit", "--no-fund"], check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


class Procs:
    """Processes started by the bench, stopped by PID whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        atexit.register(self.stop_all)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop_all()
        raise SystemExit(128 + signum)

    def start(
        self,
        argv: list[str],
        core: str | None,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        if core is not None:
            argv = ["taskset", "-c", core, *argv]
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        if proc.poll() is None:
            # Each process leads its own session: signal that group, named by the PID we started.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            self.stop(proc)


def wait_http(url: str, timeout: float = 20.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, headers=headers or {"Origin": ORIGIN})
            with urllib.request.urlopen(request, timeout=2) as response:
                response.read()
                if response.status == 200:
                    return
        except Exception as error:
            last = error
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s: {last}")


# ---------------------------------------------------------------- RSS


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry))
    return found


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(_children(current))
    return pids


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


class PeakSampler:
    """Samples the RSS of a process tree every ``interval`` seconds in the foreground loop."""

    def __init__(self, pid: int) -> None:
        self.pids = process_tree(pid)
        self.peak = rss_bytes(self.pids)

    def sample(self) -> int:
        value = rss_bytes(self.pids)
        self.peak = max(self.peak, value)
        return value

    def watch(self, proc: subprocess.Popen[bytes], limit: float, interval: float = 0.02) -> None:
        deadline = time.monotonic() + limit
        while proc.poll() is None and time.monotonic() < deadline:
            self.sample()
            time.sleep(interval)
        self.sample()


# ---------------------------------------------------------------- nginx upstream


@dataclass
class Upstream:
    port: int
    root: Path
    proc: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"


NGINX_COMMON = """
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx-{name}.pid;
error_log {tmp}/nginx-{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/{name}-body;
  proxy_temp_path {tmp}/{name}-proxy;
  fastcgi_temp_path {tmp}/{name}-fastcgi;
  uwsgi_temp_path {tmp}/{name}-uwsgi;
  scgi_temp_path {tmp}/{name}-scgi;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  default_type application/octet-stream;
{body}
}}
"""


def make_workdir() -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="corsproxy-bench-"))
    tmp.chmod(0o755)  # nginx workers run as nobody when started by root
    atexit.register(shutil.rmtree, tmp, True)
    return tmp


def start_upstream(procs: Procs, tmp: Path) -> Upstream:
    root = tmp / "www"
    root.mkdir()
    root.chmod(0o755)
    (root / "small").write_bytes(SMALL_BODY)
    (root / "1m").write_bytes(os.urandom(MIB))
    with open(root / "100m", "wb") as handle:
        chunk = os.urandom(MIB)
        for _ in range(100):
            handle.write(chunk)
    for path in root.iterdir():
        path.chmod(0o644)
    port = free_port()
    body = f"""
  sendfile on;
  tcp_nopush on;
  server {{
    listen {HOST}:{port} reuseport backlog=4096;
    root {root};
    location / {{ }}
  }}"""
    conf = tmp / "upstream.conf"
    conf.write_text(NGINX_COMMON.format(tmp=tmp, name="upstream", body=body))
    proc = procs.start([nginx_binary(), "-c", str(conf), "-p", str(tmp)], LOAD_CORE, tmp / "upstream.log")
    wait_http(f"http://{HOST}:{port}/small")
    return Upstream(port, root, proc)


def nginx_cors_conf(tmp: Path, port: int, upstream: Upstream) -> Path:
    """nginx as a CORS proxy: the fast native baseline (keep-alive pool, preflight answered here)."""
    body = f"""
  map $http_origin $cors_origin {{
    "~^http://(localhost|127\\.0\\.0\\.1)(:[0-9]+)?$" $http_origin;
    default "";
  }}
  upstream api {{ server {HOST}:{upstream.port}; keepalive 128; }}
  server {{
    listen {HOST}:{port} backlog=4096;
    location / {{
      set $preflight "";
      if ($request_method = OPTIONS) {{ set $preflight "O"; }}
      if ($http_access_control_request_method) {{ set $preflight "${{preflight}}M"; }}
      if ($preflight = "OM") {{
        add_header Access-Control-Allow-Origin $cors_origin always;
        add_header Access-Control-Allow-Methods "GET, HEAD, POST, PUT, PATCH, DELETE" always;
        add_header Access-Control-Allow-Headers $http_access_control_request_headers always;
        add_header Vary "Origin, Access-Control-Request-Method, Access-Control-Request-Headers" always;
        return 204;
      }}
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_hide_header Access-Control-Allow-Origin;
      add_header Access-Control-Allow-Origin $cors_origin always;
      add_header Vary Origin always;
    }}
  }}"""
    conf = tmp / "nginx-cors.conf"
    conf.write_text(NGINX_COMMON.format(tmp=tmp, name="cors", body=body))
    return conf


# ---------------------------------------------------------------- wrk

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}
SIZES = {"B": 1, "KB": 1024, "MB": MIB, "GB": 1024 * MIB, "TB": 1024 * 1024 * MIB}


@dataclass
class WrkResult:
    rps: float
    mib_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    errors: int  # socket errors (connect/read/write/timeout) + non-2xx/3xx responses
    output: str = field(repr=False, default="")


def _latency(text: str, percentile: str) -> float | None:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    return float(match[1]) * UNITS[match[2]] if match else None


def parse_wrk(text: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)([KMGT]?B)", text)
    total = re.search(r"(\d+) requests in", text)
    errors = 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if socket_errors:
        errors += sum(int(value) for value in socket_errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        errors += int(non2xx[1])
    return WrkResult(
        rps=float(rps[1]) if rps else 0.0,
        mib_per_s=float(transfer[1]) * SIZES[transfer[2]] / MIB if transfer else 0.0,
        p50_ms=_latency(text, "50"),
        p99_ms=_latency(text, "99"),
        requests=int(total[1]) if total else 0,
        errors=errors,
        output=text,
    )


def run_wrk(
    url: str,
    seconds: float,
    connections: int,
    script: Path | None = None,
    headers: dict[str, str] | None = None,
    threads: int = 1,
) -> WrkResult:
    argv = [
        "taskset",
        "-c",
        LOAD_CORE,
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "--latency",
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


PREFLIGHT_LUA = f"""
wrk.method = "OPTIONS"
wrk.headers["Origin"] = "{ORIGIN}"
wrk.headers["Access-Control-Request-Method"] = "PUT"
wrk.headers["Access-Control-Request-Headers"] = "content-type, x-requested-with"
"""


def write_preflight_script(tmp: Path) -> Path:
    path = tmp / "preflight.lua"
    path.write_text(PREFLIGHT_LUA)
    return path


# ---------------------------------------------------------------- download clients


def run_downloads(
    url: str, clients: int, rate_mib: float, seconds: float, sampler: PeakSampler | None
) -> dict[str, object]:
    """bench/clients.py on the load core; the proxy's RSS sampled meanwhile."""
    argv = [
        "taskset",
        "-c",
        LOAD_CORE,
        sys.executable,
        str(BENCH / "clients.py"),
        url,
        "--clients",
        str(clients),
        "--rate-mib",
        str(rate_mib),
        "--seconds",
        str(seconds),
        "--origin",
        ORIGIN,
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        if sampler is not None:
            sampler.watch(proc, seconds + 30)  # type: ignore[arg-type]
        out, err = proc.communicate(timeout=seconds + 30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"clients.py failed: {err.decode()}")
    return json.loads(out)


# ---------------------------------------------------------------- numbers


def median_spread(values: list[float]) -> tuple[float, float]:
    """Median and half the min-max range as a fraction of the median."""
    med = statistics.median(values)
    spread = (max(values) - min(values)) / 2 / med if med else 0.0
    return med, spread


def python_for_project() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONASYNCIODEBUG", None)
    return env
