"""The command line, run as a user runs it: a real process, real ports, real signals."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corsproxy.cli.main import exposure_warning
from corsproxy.version import __version__
from tests.processes import corsproxy, free_port, http, spawn, start_demo_upstream, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
LOCAL = "http://localhost:5173"


def start_slow_upstream(
    started: list[subprocess.Popen[str]], folder: Path, port: int, seconds: float, text: str
) -> None:
    """A separate upstream process whose /slow answers ``text`` after ``seconds``."""
    script = folder / "slow_upstream.py"
    script.write_text(
        "import asyncio\nfrom aiohttp import web\n"
        f"async def slow(request):\n    await asyncio.sleep({seconds})\n"
        f"    return web.Response(text={text!r})\n"
        "app = web.Application()\napp.router.add_get('/slow', slow)\n"
        f"web.run_app(app, host='127.0.0.1', port={port}, print=None)\n"
    )
    upstream = subprocess.Popen([sys.executable, str(script)], text=True)
    started.append(upstream)
    wait_for_port(port, upstream)


def test_validate_prints_the_resolved_config_and_exits_0() -> None:
    result = corsproxy("validate", str(ROOT / "config.example.yaml"), env={"API_TOKEN": "tok-123"})
    assert result.returncode == 0, result.stderr
    assert "/api -> https://api.example.com/v1" in result.stdout
    assert "sets Authorization: ***" in result.stdout
    assert "tok-123" not in result.stdout


def test_validate_lists_every_error_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "upstream: nope\nrules:\n  - origins: ['*']\n    allow_credentials: true\n    max_age: -5\n"
    )
    result = corsproxy("validate", str(bad))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{bad}: 3 errors",
        "  upstream: must be an http:// or https:// URL, got 'nope'; did you mean 'https://nope'? (line 1)",
        "  rules[0].allow_credentials: cannot be true with origins ['*']: browsers reject '*' with "
        "credentials; list the exact origins instead, e.g. ['http://localhost:5173'] (line 4)",
        "  rules[0].max_age: must be a non-negative integer, got -5 (line 5)",
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ("serve",),
            "nothing to proxy: no corsproxy.yaml or .corsproxy.yaml in",
            id="nothing to proxy",
        ),
        pytest.param(
            ("serve", "--upstream", "https://a.dev", "--allow-origin", "*", "--allow-credentials"),
            "--allow-origin '*' cannot go with --allow-credentials",
            id="star with credentials on the command line",
        ),
        pytest.param(
            ("serve", "--upstream", "https://a.dev", "--allow-origin", "http://localhost:5173/"),
            "ends with '/'",
            id="a trailing slash on the command line",
        ),
        pytest.param(
            ("serve", "--upstream", "a.dev"), "did you mean 'https://a.dev'?", id="an upstream without scheme"
        ),
        pytest.param(
            ("serve", "--config", "/nonexistent.yaml"), "cannot read the file", id="a missing config file"
        ),
    ],
)
def test_bad_input_exits_2_with_a_message_not_a_traceback(args: tuple[str, ...], message: str) -> None:
    result = corsproxy(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_quick_mode_allows_local_development_origins_only(
    started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    upstream_port, proxy_port = start_demo_upstream(started), free_port()
    proxy = spawn(
        started, "serve", "--upstream", f"http://127.0.0.1:{upstream_port}", "--port", str(proxy_port)
    )
    wait_for_port(proxy_port, proxy)
    allowed = http(
        proxy_port, "GET /echo HTTP/1.1\nHost: 127.0.0.1\nOrigin: http://localhost:3000\nConnection: close\n"
    )
    refused = http(
        proxy_port, "GET /echo HTTP/1.1\nHost: 127.0.0.1\nOrigin: https://evil.example\nConnection: close\n"
    )
    assert "Access-Control-Allow-Origin: http://localhost:3000" in allowed
    assert "Access-Control-Allow-Origin" not in refused


def test_demo_starts_answers_and_stops_cleanly_on_sigterm(started: list[subprocess.Popen[str]]) -> None:
    port = free_port()
    demo = spawn(started, "demo", "--port", str(port))
    wait_for_port(port, demo)
    echo = http(port, f"GET /echo?x=1 HTTP/1.1\nHost: 127.0.0.1\nOrigin: {LOCAL}\nConnection: close\n")
    preflight = http(
        port,
        f"OPTIONS /echo HTTP/1.1\nHost: 127.0.0.1\nOrigin: {LOCAL}\nAccess-Control-Request-Method: PUT\n"
        "Access-Control-Request-Headers: content-type\nConnection: close\n",
    )
    assert echo.startswith("HTTP/1.1 200")
    assert f"Access-Control-Allow-Origin: {LOCAL}" in echo
    assert '"query": "x=1"' in echo
    assert preflight.startswith("HTTP/1.1 204")
    # Served as `corsproxy serve` serves: both requests by the front door.
    health = http(port, "GET /__corsproxy/health HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n")
    assert '"front_door": {"served": 2' in health
    demo.send_signal(signal.SIGTERM)
    out, _ = demo.communicate(timeout=10)
    assert demo.returncode == 0
    assert "curl -i" in out


def test_serve_reads_its_settings_from_the_environment(
    started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    upstream_port, proxy_port = start_demo_upstream(started), free_port()
    proxy = spawn(
        started,
        "serve",
        env={
            "CORSPROXY_UPSTREAM": f"http://127.0.0.1:{upstream_port}",
            "CORSPROXY_PORT": str(proxy_port),
            "CORSPROXY_ALLOW_ORIGINS": "https://app.example.com",
            "CORSPROXY_ALLOW_CREDENTIALS": "true",
        },
    )
    wait_for_port(proxy_port, proxy)
    answer = http(
        proxy_port,
        "GET /echo HTTP/1.1\nHost: 127.0.0.1\nOrigin: https://app.example.com\nConnection: close\n",
    )
    assert "Access-Control-Allow-Origin: https://app.example.com" in answer
    assert "Access-Control-Allow-Credentials: true" in answer


def test_serve_finds_its_config_file_through_the_environment(
    started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    upstream_port, proxy_port = start_demo_upstream(started), free_port()
    config = tmp_path / "corsproxy.yaml"
    config.write_text(
        f"server:\n  port: {proxy_port}\nupstream: http://127.0.0.1:{upstream_port}\n"
        "rules:\n  - origins: ['https://from-the-file.example']\n"
    )
    proxy = spawn(started, "serve", env={"CORSPROXY_CONFIG": str(config)})
    wait_for_port(proxy_port, proxy)
    answer = http(
        proxy_port,
        "GET /echo HTTP/1.1\nHost: 127.0.0.1\nOrigin: https://from-the-file.example\nConnection: close\n",
    )
    assert "Access-Control-Allow-Origin: https://from-the-file.example" in answer


def test_sigterm_lets_an_in_flight_request_finish(
    started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    upstream_port, proxy_port = free_port(), free_port()
    start_slow_upstream(started, tmp_path, upstream_port, seconds=1.5, text="finished")
    proxy = spawn(
        started, "serve", "--upstream", f"http://127.0.0.1:{upstream_port}", "--port", str(proxy_port)
    )
    wait_for_port(proxy_port, proxy)
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as connection:
        connection.sendall(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        time.sleep(0.5)
        proxy.send_signal(signal.SIGTERM)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"finished")
    proxy.communicate(timeout=10)
    assert proxy.returncode == 0


def test_workers_share_one_port_and_all_stop_on_sigterm(started: list[subprocess.Popen[str]]) -> None:
    upstream_port, proxy_port = start_demo_upstream(started), free_port()
    proxy = spawn(
        started,
        "serve",
        "--upstream",
        f"http://127.0.0.1:{upstream_port}",
        "--port",
        str(proxy_port),
        "--workers",
        "2",
    )
    wait_for_port(proxy_port, proxy)
    answers = [
        http(proxy_port, f"GET /echo HTTP/1.1\nHost: 127.0.0.1\nOrigin: {LOCAL}\nConnection: close\n")
        for _ in range(20)
    ]
    assert all(answer.startswith("HTTP/1.1 200") for answer in answers)
    assert all(f"Access-Control-Allow-Origin: {LOCAL}" in answer for answer in answers)
    health = [
        http(proxy_port, "GET /__corsproxy/health HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n")
        for _ in range(40)
    ]
    pids = {json.loads(answer.split("\r\n\r\n", 1)[1])["pid"] for answer in health}
    assert len(pids) == 2, "the kernel spreads 40 new connections over both workers"
    proxy.send_signal(signal.SIGTERM)
    out, _ = proxy.communicate(timeout=15)
    assert proxy.returncode == 0
    assert "2 workers sharing the port" in out


def serve_in_front_of_a_slow_upstream(
    started: list[subprocess.Popen[str]], folder: Path, *, seconds: float, grace: float
) -> tuple[subprocess.Popen[str], int]:
    """`corsproxy serve` with ``--grace``, in front of an upstream that answers after ``seconds``."""
    upstream_port, proxy_port = free_port(), free_port()
    start_slow_upstream(started, folder, upstream_port, seconds=seconds, text="late")
    proxy = spawn(
        started,
        "serve",
        "--upstream",
        f"http://127.0.0.1:{upstream_port}",
        "--port",
        str(proxy_port),
        "--grace",
        f"{grace:g}",
    )
    wait_for_port(proxy_port, proxy)
    return proxy, proxy_port


def test_sigterm_refuses_new_connections_and_exits_within_the_grace_period(
    started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    proxy, proxy_port = serve_in_front_of_a_slow_upstream(started, tmp_path, seconds=60, grace=1)
    hanging = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
    hanging.sendall(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    time.sleep(0.3)
    signalled = time.monotonic()
    proxy.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy_port), timeout=2).close()
    proxy.communicate(timeout=15)
    hanging.close()
    assert proxy.returncode == 0
    # A 1 s grace period, plus the process's own start-up of its shutdown: well under 60 s.
    assert time.monotonic() - signalled < 5


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        pytest.param("127.0.0.1", False, id="loopback v4 is quiet"),
        pytest.param("::1", False, id="loopback v6 is quiet"),
        pytest.param("localhost", False, id="localhost is quiet"),
        pytest.param("0.0.0.0", True, id="all interfaces is warned about"),
        pytest.param("192.168.1.20", True, id="a LAN address is warned about"),
    ],
)
def test_binding_beyond_loopback_names_the_risk(host: str, warned: bool) -> None:
    warning = exposure_warning(host)
    assert (warning is not None) == warned
    if warning:
        assert "other machines on the network can use this proxy" in warning


# -- the terminal is honest ---------------------------------------------------------------


def test_serve_takes_the_rules_file_as_its_argument_and_names_the_inspector_once_bound(
    started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    upstream_port, proxy_port = start_demo_upstream(started), free_port()
    rules = tmp_path / "corsproxy.yaml"
    rules.write_text(f"upstream: http://127.0.0.1:{upstream_port}\n")
    proxy = spawn(started, "serve", str(rules), "--port", str(proxy_port), "--no-reload")
    wait_for_port(proxy_port, proxy)
    answer = http(proxy_port, f"GET /echo HTTP/1.1\nHost: 127.0.0.1\nOrigin: {LOCAL}\nConnection: close\n")
    assert answer.startswith("HTTP/1.1 200")
    proxy.send_signal(signal.SIGTERM)
    out, _ = proxy.communicate(timeout=15)
    assert f"on http://127.0.0.1:{proxy_port} ({rules})" in out
    assert f"inspector: http://127.0.0.1:{proxy_port}/__corsproxy/" in out


def test_a_port_in_use_exits_2_with_the_port_hint_and_no_banner() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = corsproxy("serve", "--upstream", "http://127.0.0.1:9", "--port", str(port))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "choose another with --port" in result.stderr
    # The banner would name a port the proxy does not have.
    assert f"corsproxy {__version__} on" not in result.stdout


def test_the_demo_banner_names_the_inspector(started: list[subprocess.Popen[str]]) -> None:
    port = free_port()
    demo = spawn(started, "demo", "--port", str(port))
    wait_for_port(port, demo)
    demo.send_signal(signal.SIGTERM)
    out, _ = demo.communicate(timeout=10)
    assert f"inspector: http://127.0.0.1:{port}/__corsproxy/" in out


def test_inside_the_container_image_the_all_interfaces_bind_is_a_note_on_publishing_not_a_warning(
    started: list[subprocess.Popen[str]],
) -> None:
    port = free_port()
    env = {"CORSPROXY_IN_CONTAINER": "1", "CORSPROXY_HOST": "0.0.0.0"}
    proxy = spawn(started, "serve", "--upstream", "http://127.0.0.1:9", "--port", str(port), env=env)
    wait_for_port(port, proxy)
    proxy.send_signal(signal.SIGTERM)
    _, err = proxy.communicate(timeout=15)
    assert "WARNING" not in err
    assert "publish the port on the host's loopback only (docker run -p 127.0.0.1:8080:8080" in err


def test_ctrl_c_says_what_it_waits_for_and_a_second_one_stops_at_once_and_cleanly(
    started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    proxy, proxy_port = serve_in_front_of_a_slow_upstream(started, tmp_path, seconds=20, grace=10)
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as connection:
        connection.sendall(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.5)
        proxy.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proxy.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        _, err = proxy.communicate(timeout=15)
    assert time.monotonic() - signalled < 5, "the second Ctrl-C did not stop at once"
    assert "waiting up to 10 s for 1 request(s) in flight (Ctrl-C again to stop now)" in err
    assert "Unclosed client session" not in err
    assert "Traceback" not in err


def test_serve_without_a_config_finds_one_in_a_parent_folder_and_says_which(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "web" / "src").mkdir(parents=True)
    port = free_port()
    found = project / ".corsproxy.yaml"
    found.write_text(f"upstream: http://127.0.0.1:9\nserver: {{port: {port}}}\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "corsproxy", "serve"],
        cwd=project / "web" / "src",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, process)
    finally:
        process.terminate()
        out, errors = process.communicate(timeout=15)
    assert f"corsproxy: using {found}" in errors
    assert f"({found})" in out  # the banner names the file it serves


def test_discovery_looks_no_higher_than_the_repository_root_and_says_where_it_looked(tmp_path: Path) -> None:
    (tmp_path / "corsproxy.yaml").write_text("upstream: http://127.0.0.1:9\n")  # above the repository
    repository = tmp_path / "repo"
    (repository / ".git").mkdir(parents=True)
    (repository / "app").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "corsproxy", "serve"],
        cwd=repository / "app",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert (
        f"nothing to proxy: no corsproxy.yaml or .corsproxy.yaml in {repository / 'app'}, {repository}; "
        in result.stderr
    )


def test_replay_on_the_command_line_goes_on_top_of_the_config_file_found(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    (tmp_path / ".git").mkdir()
    (tmp_path / "corsproxy.yaml").write_text(
        f"server: {{port: {port}}}\nmocks:\n  - path: /from-the-file\n    body: mocked\n"
    )
    har = tmp_path / "x.har"
    har.write_text('{"log": {"version": "1.2", "creator": {"name": "t", "version": "1"}, "entries": []}}')
    process = subprocess.Popen(
        [sys.executable, "-m", "corsproxy", "serve", "--replay", str(har)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started.append(process)
    wait_for_port(port, process)
    assert http(port, "GET /from-the-file HTTP/1.1\nHost: localhost\nConnection: close\n").endswith("mocked")
