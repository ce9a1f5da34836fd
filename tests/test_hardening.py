"""HTTP hardening: the proxy passes messages on as received, or refuses them saying why.

Every test sends raw bytes over a socket to the real proxy, in front of an upstream that
records the exact bytes it receives (tests/raw_http.py), and asserts what the upstream
got and what the client got. Each runs through both transports (the ``door_to`` fixture):
a fresh connection that starts at the front door, and one already handed to aiohttp.
"""

from __future__ import annotations

import gzip
import os
import socket
import zlib
from typing import Any

import pytest

from corsproxy import create_app
from corsproxy.state import STATE
from tests.conftest import HEALTH_REQUEST, DoorFactory, ProxyServerFactory, config_from_yaml
from tests.raw_http import Connect, ReceivedRequest, RecordingUpstream

LOCAL = "http://localhost:5173"


def config(upstream: RecordingUpstream, *, key: bool = True) -> str:
    """One route, /api -> /v1, injecting an API key unless ``key`` is False."""
    injects = "\n    request_headers:\n      X-Api-Key: k-123" if key else ""
    return f"""
routes:
  - path: /api
    upstream: {upstream.url}/v1{injects}
rules:
  - origins: ["{LOCAL}"]
    allow_methods: [GET]
    allow_headers: [X-Trace]
"""


def raw(method: str, target: str, *headers: str, body: bytes = b"", host: str = "localhost") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- 1. request bodies pass byte for byte, whatever their Content-Encoding -------------


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        pytest.param("gzip", gzip.compress(b"hi"), id="a gzip body that inflates to fewer bytes"),
        pytest.param("deflate", zlib.compress(b"hi"), id="a deflate body that inflates to fewer bytes"),
        pytest.param("gzip", os.urandom(8192), id="an incompressible body labelled gzip"),
        pytest.param("br", b"\x8b\x00\x80hello\x03", id="a brotli body"),
        pytest.param("zstd", b"\x28\xb5\x2f\xfd\x20\x05\x29\x00\x00hello", id="a zstd body"),
    ],
)
async def test_an_encoded_request_body_reaches_the_upstream_byte_for_byte_and_the_next_request_intact(
    door_to: DoorFactory, recording_upstream: RecordingUpstream, encoding: str, body: bytes
) -> None:
    door = await door_to(config(recording_upstream))
    first = await door.open()
    await first.send(raw("POST", "/api/upload", f"Content-Encoding: {encoding}", body=body))
    (answer,) = await first.next_answers()
    assert (answer.status, bytes(answer.body)) == (200, f"POST /v1/upload {len(body)}".encode())
    # The next request the client pool sends on that upstream connection: if the first
    # body had been decoded, the upstream would read this one's bytes as its rest.
    second = await door.open()
    await second.send(raw("POST", "/api/next", body=b"x"))
    (answer,) = await second.next_answers()
    assert (answer.status, bytes(answer.body)) == (200, b"POST /v1/next 1")
    (on_one_connection,) = recording_upstream.requests
    upload, following = on_one_connection
    assert (upload.body, upload.header("Content-Encoding")) == (body, encoding.encode())
    assert upload.header("Content-Length") == str(len(body)).encode()
    assert (following.method, following.target, following.body) == ("POST", "/v1/next", b"x")
    door.assert_served(1, front_door_can=False)


# -- 2. dot segments never reach an upstream -------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/api/../admin", id="a plain .. segment"),
        pytest.param("/api/%2e%2e/admin", id="an encoded .. segment"),
        pytest.param("/api/.%2E/admin", id="a half-encoded .. segment in upper case"),
        pytest.param("/api/..%2fadmin", id="a .. segment ended by an encoded slash"),
        pytest.param("/api/..%5cadmin", id="a .. segment ended by an encoded backslash"),
        pytest.param("/api/..;/admin", id="a .. segment with a path parameter"),
        pytest.param("/api/./x", id="a . segment"),
        pytest.param("/api/x/..", id="a trailing .. segment"),
        pytest.param("/api/%252e%252e/admin", id="a twice-encoded .. segment"),
        pytest.param("/api/..%00/admin", id="a .. segment ended by NUL"),
        pytest.param("/api/..%20/admin", id="a .. segment ended by a space"),
    ],
)
async def test_a_path_with_a_dot_segment_is_refused_with_a_400_that_says_why(
    door_to: DoorFactory, recording_upstream: RecordingUpstream, target: str
) -> None:
    door = await door_to(config(recording_upstream))
    connection = await door.open()
    await connection.send(raw("GET", target, f"Origin: {LOCAL}"))
    (answer,) = await connection.next_answers()
    assert answer.status == 400
    assert "dot segment" in answer.body.decode()
    # The page can read why: the refusal carries the rules' CORS headers.
    assert answer.get("Access-Control-Allow-Origin") == LOCAL
    assert recording_upstream.all_requests == []
    door.assert_served(1, front_door_can=True)


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        pytest.param("/api/.../x", "/v1/.../x", id="three dots are a name"),
        pytest.param("/api/.well-known/x", "/v1/.well-known/x", id="a name starting with a dot"),
        pytest.param("/api/a..b/c.", "/v1/a..b/c.", id="dots inside names"),
        pytest.param("/api/%2e%2e%2e", "/v1/%2e%2e%2e", id="three encoded dots, as sent"),
    ],
)
async def test_a_path_that_merely_has_dots_is_forwarded_as_sent(
    door_to: DoorFactory, recording_upstream: RecordingUpstream, target: str, forwarded: str
) -> None:
    door = await door_to(config(recording_upstream))
    connection = await door.open()
    await connection.send(raw("GET", target))
    (answer,) = await connection.next_answers()
    assert answer.status == 200
    (received,) = recording_upstream.all_requests
    assert received.target == forwarded
    door.assert_served(1, front_door_can=True)


# -- routes and rules agree about every path -------------------------------------------


def two_routes(upstream: RecordingUpstream) -> str:
    return f"""
routes:
  - path: /api
    upstream: {upstream.url}/public
  - path: /
    upstream: {upstream.url}/secret
    request_headers:
      X-Api-Key: k-123
rules:
  - path: /api/**
    origins: ["https://partner.example"]
  - path: /**
    origins: ["{LOCAL}"]
"""


@pytest.mark.parametrize(
    ("target", "status", "forwarded"),
    [
        pytest.param("/%61pi/x", 200, "/public/x", id="an encoded letter is the letter for routes and rules"),
        pytest.param("/api%2Fx", 403, None, id="an encoded slash is part of its segment for both"),
    ],
)
async def test_routes_and_rules_match_the_same_path(
    door_to: DoorFactory,
    recording_upstream: RecordingUpstream,
    target: str,
    status: int,
    forwarded: str | None,
) -> None:
    """Were routes matched on the raw path and rules on the decoded one, "/api%2Fx" would
    take the partner's rule for /api/** to the route that injects the key."""
    door = await door_to(two_routes(recording_upstream))
    connection = await door.open()
    await connection.send(raw("GET", target, "Origin: https://partner.example"))
    (answer,) = await connection.next_answers()
    assert answer.status == status, answer.body
    if forwarded is None:
        assert recording_upstream.all_requests == []
    else:
        (received,) = recording_upstream.all_requests
        assert (received.target, received.header("X-Api-Key")) == (forwarded, None)
        assert answer.get("Access-Control-Allow-Origin") == "https://partner.example"
    door.assert_served(1, front_door_can=True)


@pytest.mark.parametrize(
    ("request_bytes", "has_body"),
    [
        pytest.param(
            raw("POST", "/api/charge", "Origin: https://evil.example", body=b"x"), True, id="a POST"
        ),
        pytest.param(raw("DELETE", "/api/charge", "Origin: https://evil.example"), False, id="a DELETE"),
    ],
)
async def test_an_injected_key_is_never_spent_with_a_method_the_rule_does_not_list(
    door_to: DoorFactory, recording_upstream: RecordingUpstream, request_bytes: bytes, has_body: bool
) -> None:
    """Any origin may read GETs here, and gets CORS headers whatever the method; but a
    form POST needs no preflight, so the key's route refuses what its rule does not list."""
    door = await door_to(config(recording_upstream).replace(f'origins: ["{LOCAL}"]', 'origins: ["*"]'))
    connection = await door.open()
    await connection.send(request_bytes)
    (answer,) = await connection.next_answers()
    assert answer.status == 403
    assert "is not allowed by rules[0]" in answer.body.decode()
    assert recording_upstream.all_requests == []
    door.assert_served(1, front_door_can=not has_body)


# -- 3. Expect: 100-continue is met once, by the proxy ---------------------------------


async def test_expect_100_continue_is_answered_by_the_proxy_and_not_forwarded(
    door_to: DoorFactory, recording_upstream: RecordingUpstream
) -> None:
    door = await door_to(config(recording_upstream))
    connection = await door.open()
    await connection.send(raw("POST", "/api/upload", "Expect: 100-continue", "Content-Length: 5"))
    (interim,) = await connection.next_answers()
    assert interim.status == 100
    await connection.send(b"hello")
    (answer,) = await connection.next_answers()
    # The upstream never sends 100 Continue; it got the body anyway, and no Expect.
    assert (answer.status, bytes(answer.body)) == (200, b"POST /v1/upload 5")
    (received,) = recording_upstream.all_requests
    assert (received.body, received.header("Expect")) == (b"hello", None)
    door.assert_served(1, front_door_can=False)


# -- 4. an Upgrade the proxy declines loses no pipelined request -----------------------


async def test_a_declined_upgrade_is_answered_and_the_connection_closed_so_no_request_is_lost(
    door_to: DoorFactory, recording_upstream: RecordingUpstream
) -> None:
    door = await door_to(config(recording_upstream))
    connection = await door.open()
    upgrade = raw(
        "GET",
        "/api/a",
        "Upgrade: h2c",
        "Connection: Upgrade, HTTP2-Settings",
        "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA",
    )
    await connection.send(upgrade + raw("GET", "/api/b"))
    (answer,) = await connection.next_answers()
    assert (answer.status, bytes(answer.body)) == (200, b"GET /v1/a 0")
    # The client learns the pipelined request was not served, and sends it again.
    assert answer.get("Connection") == "close"
    assert await connection.closed_by_proxy()
    (received,) = recording_upstream.all_requests
    assert (received.header("Upgrade"), received.header("HTTP2-Settings")) == (None, None)
    door.assert_served(1, front_door_can=False)


# -- 5. transfer codings other than chunked are refused --------------------------------


async def test_a_transfer_coding_other_than_chunked_is_a_501_and_never_forwarded(
    door_to: DoorFactory, recording_upstream: RecordingUpstream
) -> None:
    door = await door_to(config(recording_upstream))
    connection = await door.open()
    compressed = gzip.compress(b"hello")
    chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(compressed), compressed)
    await connection.send(raw("POST", "/api/upload", "Transfer-Encoding: gzip, chunked") + chunk)
    (answer,) = await connection.next_answers()
    assert answer.status == 501
    assert "Transfer-Encoding 'gzip, chunked' is not supported" in answer.body.decode()
    assert await connection.closed_by_proxy()
    assert recording_upstream.all_requests == []
    door.assert_served(1, front_door_can=False)


async def test_a_chunked_request_body_arrives_whole(
    door_to: DoorFactory, recording_upstream: RecordingUpstream
) -> None:
    door = await door_to(config(recording_upstream))
    connection = await door.open()
    await connection.send(
        raw("POST", "/api/upload", "Transfer-Encoding: chunked") + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    (answer,) = await connection.next_answers()
    assert (answer.status, bytes(answer.body)) == (200, b"POST /v1/upload 5")
    (received,) = recording_upstream.all_requests
    assert received.body == b"abcde"
    door.assert_served(1, front_door_can=False)


# -- 6. the authority that is checked is the one that is used --------------------------


@pytest.mark.parametrize(
    ("target", "host", "status", "says"),
    [
        pytest.param(
            "http://evil.example/api/x", "localhost", 403, "evil.example", id="an absolute-form foreign host"
        ),
        pytest.param("/api/x", "localhost:1, evil.example", 400, "not a valid", id="two hosts in one Host"),
        pytest.param("/api/x", "localhost:1@evil.example", 400, "not a valid", id="userinfo in Host"),
        pytest.param("/api/x", "localhost:http", 400, "not a valid", id="a port that is not a number"),
        pytest.param(
            "http://user@localhost/api/x", "localhost", 400, "not a valid", id="userinfo in the target"
        ),
    ],
)
# The front door takes origin-form targets only; absolute-form ones are aiohttp's.
async def test_a_request_naming_a_foreign_or_invalid_host_is_refused(
    door_to: DoorFactory,
    recording_upstream: RecordingUpstream,
    target: str,
    host: str,
    status: int,
    says: str,
) -> None:
    door = await door_to(config(recording_upstream))
    connection = await door.open()
    await connection.send(raw("GET", target, host=host))
    (answer,) = await connection.next_answers()
    assert answer.status == status
    assert says in answer.body.decode()
    assert recording_upstream.all_requests == []
    door.assert_served(1, front_door_can=target.startswith("/"))


async def test_an_absolute_form_target_is_served_for_its_own_authority_not_for_host(
    door_to: DoorFactory, recording_upstream: RecordingUpstream
) -> None:
    door = await door_to(config(recording_upstream))
    connection = await door.open()
    # RFC 9112 section 3.2.2: with an absolute-form target, Host is ignored.
    await connection.send(raw("GET", "http://localhost:8080/api/x", host="evil.example"))
    (answer,) = await connection.next_answers()
    assert answer.status == 200
    (received,) = recording_upstream.all_requests
    assert (received.target, received.header("X-Forwarded-Host")) == ("/v1/x", b"localhost:8080")
    door.assert_served(1, front_door_can=False)


# -- 7. header bytes: UTF-8 passes as sent, anything else is refused on both paths -----


async def test_a_header_that_is_not_utf8_is_refused_with_a_400_naming_it(
    door_to: DoorFactory, recording_upstream: RecordingUpstream
) -> None:
    door = await door_to(config(recording_upstream))
    connection = await door.open()
    await connection.send(raw("GET", "/api/x").replace(b"\r\n\r\n", b"\r\nX-Obs: caf\xe9\r\n\r\n"))
    (answer,) = await connection.next_answers()
    assert answer.status == 400
    assert "request header X-Obs carries bytes that are not UTF-8" in answer.body.decode()
    assert recording_upstream.all_requests == []
    door.assert_served(1, front_door_can=True)


async def test_a_utf8_header_value_reaches_the_upstream_byte_for_byte(
    door_to: DoorFactory, recording_upstream: RecordingUpstream
) -> None:
    door = await door_to(config(recording_upstream))
    connection = await door.open()
    await connection.send(raw("GET", "/api/x", "X-Name: café"))
    (answer,) = await connection.next_answers()
    assert answer.status == 200
    (received,) = recording_upstream.all_requests
    assert received.header("X-Name") == "café".encode()
    door.assert_served(1, front_door_can=True)


# -- 8. CORS: actual responses are judged by origin, preflights let safelisted methods pass


@pytest.mark.parametrize("method", ["DELETE", "OPTIONS", "PUT"])
async def test_an_actual_request_gets_cors_headers_whatever_its_method(
    door_to: DoorFactory, recording_upstream: RecordingUpstream, method: str
) -> None:
    """The rule lists only GET, yet the Fetch standard's CORS check on a response looks
    at origin and credentials alone: the page must be able to read this answer."""
    door = await door_to(config(recording_upstream, key=False))
    connection = await door.open()
    await connection.send(raw(method, "/api/x", f"Origin: {LOCAL}"))
    (answer,) = await connection.next_answers()
    assert (answer.status, answer.get("Access-Control-Allow-Origin")) == (200, LOCAL)
    (received,) = recording_upstream.all_requests
    assert received.method == method
    door.assert_served(1, front_door_can=True)


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
async def test_a_preflight_for_a_safelisted_method_passes_whatever_allow_methods_lists(
    door_to: DoorFactory, recording_upstream: RecordingUpstream, method: str
) -> None:
    door = await door_to(config(recording_upstream).replace("allow_methods: [GET]", "allow_methods: [PUT]"))
    connection = await door.open()
    await connection.send(
        raw(
            "OPTIONS",
            "/api/x",
            f"Origin: {LOCAL}",
            f"Access-Control-Request-Method: {method}",
            "Access-Control-Request-Headers: x-trace",
        )
    )
    (answer,) = await connection.next_answers()
    assert answer.status == 204, answer.body
    assert (answer.get("Access-Control-Allow-Origin"), answer.get("Access-Control-Allow-Headers")) == (
        LOCAL,
        "X-Trace",
    )
    assert recording_upstream.all_requests == []
    door.assert_served(1, front_door_can=True)


# -- the differential: odd but legal requests give the upstream the same head ----------

ODD_BUT_LEGAL = [
    pytest.param(raw("GET", "/api/q?a=1&a=2&b=%20&c"), id="a repeated and empty query"),
    pytest.param(raw("GET", "/api/caf%C3%A9/%2F/x%25"), id="percent-encoded path bytes"),
    pytest.param(raw("GET", "/api//double//slash/"), id="double slashes"),
    pytest.param(raw("GET", "/api/a;b=c,d"), id="path parameters"),
    pytest.param(raw("GET", "/api/x", "x-CuStOm-CaSe: v"), id="header name case"),
    pytest.param(raw("GET", "/api/x", "X-Spaced:   inner  spaces   "), id="header value spacing"),
    pytest.param(raw("GET", "/api/x", "X-Empty:"), id="an empty header value"),
    pytest.param(raw("GET", "/api/x", "X-Long: " + "v" * 4000), id="a 4 KB header value"),
    pytest.param(raw("GET", "/api/x", "X-Name: café"), id="a UTF-8 header value"),
    pytest.param(
        raw(
            "GET",
            "/api/x",
            "Connection: keep-alive, X-Hop",
            "X-Hop: 1",
            "Keep-Alive: timeout=5",
            "TE: trailers",
        ),
        id="hop-by-hop headers, named and listed",
    ),
    pytest.param(raw("GET", "/api/x", "Max-Forwards: 0", "Via: 1.1 other"), id="Max-Forwards and Via"),
    pytest.param(raw("GET", "/api/x", "Cookie: corsproxy-__Host-id=1; b=2"), id="a set-aside cookie prefix"),
    pytest.param(raw("GET", "/api/x", "X-Forwarded-For: 10.1.2.3"), id="an earlier X-Forwarded-For"),
    pytest.param(raw("DELETE", "/api/x"), id="a DELETE without a body"),
    pytest.param(raw("OPTIONS", "/api/x", f"Origin: {LOCAL}"), id="an OPTIONS that is not a preflight"),
    pytest.param(raw("PATCH", "/api/x", "Content-Length: 0"), id="a zero Content-Length"),
]


def head_of(request: ReceivedRequest) -> tuple[str, str, list[tuple[bytes, bytes]]]:
    return request.method, request.target, request.headers


@pytest.mark.parametrize("request_bytes", ODD_BUT_LEGAL)
async def test_both_transports_send_the_upstream_the_same_head(
    proxy_server: ProxyServerFactory,
    connect_to: Any,
    recording_upstream: RecordingUpstream,
    request_bytes: bytes,
) -> None:
    # The key is injected (a header rule to compare too), and the guard is off so that the
    # OPTIONS from an origin the rule's methods do not list is forwarded.
    yaml_text = config(recording_upstream).replace(
        "X-Api-Key: k-123", "X-Api-Key: k-123\n    refuse_disallowed_origins: false"
    )
    app = create_app(config_from_yaml(yaml_text))
    server = await proxy_server(app)
    connect: Connect = connect_to(server.port)
    front = await connect()
    await front.send(request_bytes)
    (by_front,) = await front.next_answers()
    handed = await connect()
    await handed.send(HEALTH_REQUEST, request_bytes)
    _, by_aiohttp = await handed.next_answers(2)
    assert by_front.status == by_aiohttp.status == 200
    # Each transport served its copy: the front door the first, aiohttp the second.
    assert (app[STATE].front_door.served, app[STATE].front_door.handed_off) == (1, 1)
    via_front, via_aiohttp = await recording_upstream.wait_for_requests(2)
    assert head_of(via_front) == head_of(via_aiohttp)


async def test_a_declined_upgrade_whose_upstream_is_down_still_closes_after_the_502(
    door_to: DoorFactory, recording_upstream: RecordingUpstream
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    yaml_text = config(recording_upstream, key=False).replace(
        "rules:", f"  - path: /dead\n    upstream: http://127.0.0.1:{closed}\nrules:"
    )
    door = await door_to(yaml_text)
    connection = await door.open()
    upgrade = raw("GET", "/dead/x", "Upgrade: tcp", "Connection: upgrade")
    await connection.send(upgrade + raw("GET", "/api/b"))
    (answer,) = await connection.next_answers()
    assert (answer.status, answer.get("Connection")) == (502, "close")
    assert await connection.closed_by_proxy()
    assert recording_upstream.all_requests == []
    door.assert_served(1, front_door_can=False)
