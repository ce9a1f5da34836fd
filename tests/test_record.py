"""Recording to HAR: every forwarded exchange appended to a file that is a valid HAR 1.2
after every entry, bodies decoded, secrets never written. Through the real proxy on both
transports (the `transport` fixture), against a real upstream."""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from corsproxy.config.model import ConfigError
from corsproxy.har.entries import log_skeleton
from corsproxy.har.writer import append
from tests.codings import ENCODERS, coded_json
from tests.conftest import ProxyFactory, Upstream, config_from_yaml
from tests.har import load_valid_har, recorded, schema_errors
from tests.processes import corsproxy, free_port, http, spawn, start_demo_upstream, wait_for_port

LOCAL = "http://localhost:5173"
DOCUMENT = {"users": [{"id": 1, "name": "Ada"}, {"id": 2, "name": "Grace"}], "note": "é ✓"}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def coded_app() -> web.Application:
    """An upstream that answers in each content coding, with binary, and with an event
    stream that never ends."""

    async def coded(request: web.Request) -> web.Response:
        coding = request.match_info["coding"]
        return coded_json(coding, json.dumps(DOCUMENT).encode())

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        number = 0
        while True:  # until the client goes away
            await response.write(f"data: event {number}\n\n".encode())
            number += 1
            await asyncio.sleep(0.01)

    async def login(request: web.Request) -> web.Response:
        response = web.json_response({"ok": True})
        response.headers["Set-Cookie"] = "session=abc; Path=/; HttpOnly; Secure"
        return response

    app = web.Application()
    app.router.add_get("/coded/{coding}", coded)
    app.router.add_get("/image.png", image)
    app.router.add_get("/events", events)
    app.router.add_post("/login", login)
    return app


@pytest.fixture
async def coded(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> str:
    server = await aiohttp_server(coded_app())
    return str(server.make_url("")).rstrip("/")


def recording_yaml(upstream: str, har: Path, extra: str = "") -> str:
    return f"upstream: {upstream}\nrecord: {{file: {har}{extra}}}\n"


async def test_a_forwarded_exchange_is_an_entry_with_the_upstream_url_headers_status_body_and_timings(
    upstream: Upstream, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = tmp_path / "traffic.har"
    client = await make_proxy(recording_yaml(upstream.url, har))
    response = await client.get("/items?page=2", headers={"Origin": LOCAL})
    assert response.status == 200
    sent = await response.json()
    (entry,) = await recorded(har)
    request = entry["request"]
    assert request["method"] == "GET"
    assert request["url"] == f"{upstream.url}/items?page=2"
    assert {"name": "page", "value": "2"} in request["queryString"]
    names = {header["name"].lower(): header["value"] for header in request["headers"]}
    assert names["origin"] == LOCAL
    assert names["host"] == upstream.url.removeprefix("http://")
    assert "x-forwarded-for" in names
    answer = entry["response"]
    assert answer["status"] == 200
    # The upstream's own headers, as it sent them: not the proxy's CORS headers.
    answer_names = {header["name"].lower() for header in answer["headers"]}
    assert "x-request-id" in answer_names
    assert "access-control-allow-origin" not in answer_names
    assert json.loads(answer["content"]["text"]) == sent
    assert answer["content"]["mimeType"].startswith("application/json")
    assert entry["time"] >= entry["timings"]["wait"] >= 0


async def test_each_content_coding_is_stored_decoded_as_text_and_binary_as_base64(
    coded: str, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = tmp_path / "coded.har"
    client = await make_proxy(recording_yaml(coded, har))
    for coding in ENCODERS:
        response = await client.get(f"/coded/{coding}")
        # The browser gets the bytes as the upstream sent them: recording changes nothing.
        assert response.headers["Content-Encoding"] == coding
        assert await response.read() == ENCODERS[coding](json.dumps(DOCUMENT).encode())
    image = await client.get("/image.png")
    assert await image.read() == PNG
    entries = await recorded(har)
    assert len(entries) == 4
    for entry, coding in zip(entries, ENCODERS, strict=False):
        content = entry["response"]["content"]
        assert json.loads(content["text"]) == DOCUMENT, coding
        assert "encoding" not in content
        assert content["size"] == len(json.dumps(DOCUMENT).encode())
        assert entry["response"]["bodySize"] == len(ENCODERS[coding](json.dumps(DOCUMENT).encode()))
    picture = entries[3]["response"]["content"]
    assert picture["encoding"] == "base64"
    assert base64.b64decode(picture["text"]) == PNG


async def test_a_request_body_is_recorded_as_post_data_and_cookies_are_listed(
    coded: str, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = tmp_path / "login.har"
    client = await make_proxy(recording_yaml(coded, har))
    response = await client.post(
        "/login", json={"user": "ada", "password": "pw"}, headers={"Cookie": "theme=dark"}
    )
    assert response.status == 200
    (entry,) = await recorded(har)
    post = entry["request"]["postData"]
    assert json.loads(post["text"]) == {"user": "ada", "password": "pw"}
    assert post["mimeType"] == "application/json"
    assert entry["request"]["cookies"] == [{"name": "theme", "value": "dark"}]
    cookie = entry["response"]["cookies"][0]
    assert (cookie["name"], cookie["value"], cookie["httpOnly"], cookie["secure"]) == (
        "session",
        "abc",
        True,
        True,
    )


async def test_a_body_over_max_body_is_cut_and_marked_and_its_full_size_counted(
    upstream: Upstream, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = tmp_path / "big.har"
    client = await make_proxy(recording_yaml(upstream.url, har, ", max_body: 1000"))
    response = await client.get("/stream?size=300000")
    assert len(await response.read()) == 300000
    (entry,) = await recorded(har)
    content = entry["response"]["content"]
    assert content["size"] == 1000
    assert base64.b64decode(content["text"]) == b"x" * 1000
    assert "truncated at 1000 bytes" in content["comment"]
    assert entry["response"]["bodySize"] >= 1000


async def test_an_event_stream_that_never_ends_is_recorded_once_it_reaches_max_body(
    coded: str, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = tmp_path / "events.har"
    client = await make_proxy(recording_yaml(coded, har, ", max_body: 200"))
    response = await client.get("/events")
    # The stream is still open while the entry is already in the file.
    while len(await response.content.read(200)) and not har.exists():
        pass
    for _ in range(100):
        entries = await recorded(har) if har.exists() else []
        if entries:
            break
        await response.content.read(100)
    assert not response.content.at_eof()
    (entry,) = entries
    text = entry["response"]["content"]["text"]
    assert text.startswith("data: event 0\n\n")
    assert len(text) == 200
    response.close()


async def test_injected_values_are_written_as_stars_everywhere(
    upstream: Upstream, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = tmp_path / "secret.har"
    client = await make_proxy(
        f"routes:\n  - path: /\n    upstream: {upstream.url}\n"
        "    request_headers: {Authorization: 'Bearer ${API_TOKEN}', X-Key: '${API_TOKEN}'}\n"
        f"record: {har}\n",
        API_TOKEN="tok-3f9a-secret",
    )
    response = await client.get("/echo")
    # The upstream got the value, and echoed it in its body.
    assert "tok-3f9a-secret" in await response.text()
    (entry,) = await recorded(har)
    text = har.read_text()
    assert "tok-3f9a-secret" not in text
    sent = {header["name"]: header["value"] for header in entry["request"]["headers"]}
    assert sent["Authorization"] == "Bearer ***"
    assert sent["X-Key"] == "***"


async def test_preflights_refusals_and_mocks_are_not_recorded_only_forwards(
    upstream: Upstream, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = tmp_path / "only-forwards.har"
    client = await make_proxy(
        f"upstream: {upstream.url}\nrecord: {har}\nmocks:\n  - path: /mocked\n    json: {{}}\n"
    )
    preflight = await client.options("/x", headers={"Origin": LOCAL, "Access-Control-Request-Method": "PUT"})
    assert preflight.status == 204
    assert (await client.get("/mocked")).status == 200
    dot_segment = URL("/a/%2e%2e/b", encoded=True)
    assert (await client.get(dot_segment)).status == 400
    assert (await client.get("/forwarded")).status == 200
    entries = await recorded(har)
    assert [entry["request"]["url"] for entry in entries] == [f"{upstream.url}/forwarded"]


async def test_an_existing_har_from_another_tool_is_kept_and_appended_to(
    upstream: Upstream, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = tmp_path / "devtools.har"
    earlier = {
        "startedDateTime": "2026-01-01T00:00:00.000Z",
        "time": 1,
        "request": {
            "method": "GET",
            "url": "https://api.example.com/old",
            "httpVersion": "HTTP/2",
            "cookies": [],
            "headers": [],
            "queryString": [],
            "headersSize": -1,
            "bodySize": 0,
        },
        "response": {
            "status": 200,
            "statusText": "OK",
            "httpVersion": "HTTP/2",
            "cookies": [],
            "headers": [],
            "content": {"size": 2, "mimeType": "application/json", "text": "{}"},
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": 2,
        },
        "cache": {},
        "timings": {"send": 0, "wait": 1, "receive": 0},
    }
    log = {"version": "1.2", "creator": {"name": "WebInspector", "version": "537.36"}, "entries": [earlier]}
    har.write_text(json.dumps({"log": log}, indent=2))
    client = await make_proxy(recording_yaml(upstream.url, har))
    await client.get("/new")
    entries = await recorded(har)
    assert entries[0] == earlier
    assert entries[1]["request"]["url"] == f"{upstream.url}/new"
    assert load_valid_har(har)["log"]["creator"]["name"] == "WebInspector"


def _append_many(path: str, writer: int, count: int) -> None:
    for number in range(count):
        entry = {"writer": writer, "number": number, "pad": "x" * (number * 37 % 5000)}
        append(Path(path), [json.dumps(entry).encode()])


def test_processes_appending_at_once_never_tear_the_file(tmp_path: Path) -> None:
    har = tmp_path / "shared.har"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append_many, args=(str(har), n, 150)) for n in range(3)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(30)
        assert process.exitcode == 0
    entries = json.loads(har.read_bytes())["log"]["entries"]
    assert sorted((e["writer"], e["number"]) for e in entries) == [
        (w, n) for w in range(3) for n in range(150)
    ]
    for writer in range(3):
        # Each writer's entries are in the order it wrote them.
        assert [e["number"] for e in entries if e["writer"] == writer] == list(range(150))


def test_a_kill_9_while_recording_leaves_a_valid_har(
    tmp_path: Path, started: list[subprocess.Popen[str]], upstream_port_for_process: int
) -> None:
    har = tmp_path / "killed.har"
    port = free_port()
    proxy = spawn(
        started,
        "serve", "--upstream", f"http://127.0.0.1:{upstream_port_for_process}", "--port", str(port),
        "--record", str(har), "--log-level", "warning",
    )  # fmt: skip
    wait_for_port(port, proxy)
    stop = threading.Event()
    answered = [0]

    def traffic() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
                    while not stop.is_set():
                        connection.sendall(b"GET /api/echo?n=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
                        if not connection.recv(65536):
                            break
                        answered[0] += 1
            except OSError:
                return

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while answered[0] < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    proxy.send_signal(signal.SIGKILL)
    proxy.wait(10)
    stop.set()
    for thread in threads:
        thread.join(5)
    har_data = load_valid_har(har)
    # Every entry written is whole; at most those in flight are missing.
    assert len(har_data["log"]["entries"]) > 100
    assert all(entry["response"]["status"] == 200 for entry in har_data["log"]["entries"])


@pytest.fixture
def upstream_port_for_process(started: list[subprocess.Popen[str]]) -> int:
    """`corsproxy demo` as the upstream of a proxy process."""
    return start_demo_upstream(started)


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        pytest.param(
            "record: {}\n", "record.file: missing: the HAR file to record to (line 2)", id="no file"
        ),
        pytest.param(
            "record: {file: nowhere/x.har}\n", "record.file: cannot record there: the folder", id="no folder"
        ),
        pytest.param(
            "record: {file: a.har, max_body: ten}\n",
            "record.max_body: must be a size in bytes such as 1048576, 512KB or 10MiB, got ten (line 2)",
            id="bad size",
        ),
        pytest.param(
            "record: {file: a.har, max_bodys: 1}\n",
            "record.max_bodys: unknown key; did you mean 'max_body'?",
            id="typo",
        ),
        pytest.param("record: {file: notes.txt}\n", "record.file: cannot record there: ", id="not a HAR"),
    ],
)
def test_every_record_mistake_is_a_config_error_with_its_key_and_line(
    text: str, wanted: str, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("not json")
    from corsproxy.config.checker import parse_config

    with pytest.raises(ConfigError) as raised:
        parse_config("upstream: http://127.0.0.1:9\n" + text, "test.yaml", {}, tmp_path)
    assert any(wanted in error for error in raised.value.errors), raised.value.errors


def test_max_body_takes_units_and_the_default_is_10_mib(tmp_path: Path) -> None:
    base = "upstream: http://127.0.0.1:9\n"
    default = config_from_yaml(base + f"record: {tmp_path / 'a.har'}\n").record
    assert default is not None
    assert default.max_body == 10 * 1024 * 1024
    sized = config_from_yaml(base + f"record: {{file: {tmp_path / 'a.har'}, max_body: 512KB}}\n").record
    assert sized is not None
    assert sized.max_body == 512_000


def test_the_har_schema_takes_an_empty_log_and_refuses_what_the_spec_forbids() -> None:
    assert schema_errors({"log": {**log_skeleton(), "entries": []}}) == []
    assert schema_errors({"log": {"version": "1.2", "entries": []}})  # no creator
    entry_without_timings = {"startedDateTime": "2026-01-01T00:00:00Z", "time": 0}
    assert schema_errors({"log": {**log_skeleton(), "entries": [entry_without_timings]}})
    assert schema_errors({"log": {**log_skeleton(), "entries": [], "surprise": 1}})


def test_the_command_line_records_and_a_reload_of_the_config_file_keeps_it(
    tmp_path: Path, started: list[subprocess.Popen[str]], upstream_port_for_process: int
) -> None:
    config = tmp_path / "corsproxy.yaml"
    config.write_text(f"upstream: http://127.0.0.1:{upstream_port_for_process}\n")
    har = tmp_path / "cli.har"
    port = free_port()
    proxy = spawn(started, "serve", str(config), "--port", str(port), "--record", str(har))
    wait_for_port(port, proxy)
    assert " 200 " in http(port, "GET /api/echo?before HTTP/1.1\nHost: localhost\nConnection: close\n")
    config.write_text(f"upstream: http://127.0.0.1:{upstream_port_for_process}\nrules:\n  - origins: ['*']\n")
    deadline = time.monotonic() + 10
    while "*" not in http(port, "GET /__corsproxy/api/config HTTP/1.1\nHost: localhost\nConnection: close\n"):
        assert time.monotonic() < deadline, "the edit was not reloaded"
        time.sleep(0.2)
    assert " 200 " in http(port, "GET /api/echo?after HTTP/1.1\nHost: localhost\nConnection: close\n")
    proxy.send_signal(signal.SIGTERM)
    _, errors = proxy.communicate(timeout=15)
    urls = [entry["request"]["url"] for entry in load_valid_har(har)["log"]["entries"]]
    assert [url.rsplit("/", 1)[-1] for url in urls] == ["echo?before", "echo?after"], errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ("--record", "/no/such/folder/x.har"),
            "--record /no/such/folder/x.har: cannot record there: the folder",
            id="record",
        ),
        pytest.param(
            ("--replay", "/no/such.har"), "--replay /no/such.har: cannot read '/no/such.har'", id="replay"
        ),
    ],
)
def test_a_bad_record_or_replay_file_on_the_command_line_exits_2_naming_it(
    args: tuple[str, ...], message: str
) -> None:
    result = corsproxy("serve", "--upstream", "http://127.0.0.1:9", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_secret_that_also_reads_as_a_number_never_breaks_the_json(
    upstream: Upstream, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    har = tmp_path / "numbers.har"
    # ${CODE:-200} makes "200" a secret: only strings may lose it, never the status.
    client = await make_proxy(
        f"routes:\n  - path: /\n    upstream: {upstream.url}\n"
        f"    request_headers: {{X-Code: '${{CODE:-200}}'}}\nrecord: {har}\n"
    )
    assert (await client.get("/echo")).status == 200
    (entry,) = await recorded(har)
    assert entry["response"]["status"] == 200
    sent = {header["name"]: header["value"] for header in entry["request"]["headers"]}
    assert sent["X-Code"] == "***"


def test_a_file_whose_last_write_was_torn_is_cut_back_to_its_last_whole_entry(tmp_path: Path) -> None:
    har = tmp_path / "torn.har"
    for number in (1, 2):
        append(har, [json.dumps({"n": number}).encode()])
    whole = har.read_bytes()
    # As a machine that lost power mid-write leaves it: the trailer gone, half an entry.
    har.write_bytes(whole[: -len(b"\n]}}\n")] + b',\n{"n": 3, "pad": "xxxx')
    append(har, [json.dumps({"n": 4}).encode()])
    assert [entry["n"] for entry in json.loads(har.read_bytes())["log"]["entries"]] == [1, 2, 4]


def test_workers_share_one_file_and_every_entry_is_written_by_shutdown(
    tmp_path: Path, started: list[subprocess.Popen[str]], upstream_port_for_process: int
) -> None:
    har = tmp_path / "workers.har"
    port = free_port()
    upstream = f"http://127.0.0.1:{upstream_port_for_process}"
    proxy = spawn(
        started, "serve", "--upstream", upstream, "--port", str(port), "--workers", "2", "--record", str(har)
    )
    wait_for_port(port, proxy)
    time.sleep(0.5)  # both workers listening
    for number in range(40):
        assert " 200 " in http(
            port, f"GET /api/echo?n={number} HTTP/1.1\nHost: localhost\nConnection: close\n"
        )
    proxy.send_signal(signal.SIGTERM)
    proxy.communicate(timeout=20)
    numbers = sorted(
        int(entry["request"]["url"].rsplit("=", 1)[1]) for entry in load_valid_har(har)["log"]["entries"]
    )
    assert numbers == list(range(40))
