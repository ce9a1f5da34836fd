"""The browser's CORS rules (corsproxy.check.browser) against the Fetch standard's cases, as tables."""

from __future__ import annotations

import pytest

from corsproxy.check.browser import (
    BrowserRequest,
    Code,
    HeaderList,
    check_preflight,
    check_response,
    is_forbidden_header_name,
    is_safelisted_header,
    needs_preflight,
    normalize_method,
    preflight_request_headers,
    serialize_origin,
    unsafe_header_names,
)

PAGE = "http://localhost:5173"


@pytest.mark.parametrize(
    ("name", "value", "safelisted"),
    [
        pytest.param("Accept", "application/json", True, id="Accept with a media type is safelisted"),
        pytest.param("accept", "*/*", True, id="header names are case-insensitive"),
        pytest.param("Accept", 'text/html; q="1"', False, id="Accept with a double quote is not"),
        pytest.param("Accept", "text/html\tq=1", True, id="a tab is the one control byte allowed"),
        pytest.param("Accept", "a" * 128, True, id="a 128-byte value is safelisted"),
        pytest.param("Accept", "a" * 129, False, id="a 129-byte value is not"),
        pytest.param("Accept-Language", "en-US,en;q=0.9", True, id="a usual Accept-Language is safelisted"),
        pytest.param("Accept-Language", "en_US", False, id="Accept-Language with an underscore is not"),
        pytest.param("Content-Language", "de-DE", True, id="Content-Language de-DE is safelisted"),
        pytest.param("Content-Language", "de/DE", False, id="Content-Language with a slash is not"),
        pytest.param("Content-Type", "text/plain", True, id="Content-Type text/plain is safelisted"),
        pytest.param("Content-Type", "text/plain;charset=UTF-8", True, id="a charset parameter is fine"),
        pytest.param("Content-Type", "TEXT/Plain", True, id="the MIME essence is compared in lower case"),
        pytest.param(
            "Content-Type", "multipart/form-data; boundary=x", True, id="multipart form data is safelisted"
        ),
        pytest.param(
            "Content-Type", "application/x-www-form-urlencoded", True, id="urlencoded forms are safelisted"
        ),
        pytest.param("Content-Type", "application/json", False, id="Content-Type application/json is not"),
        pytest.param(
            "Content-Type", 'text/plain; charset="utf-8"', False, id="a quoted parameter is an unsafe byte"
        ),
        pytest.param("Content-Type", "text", False, id="a Content-Type that is no MIME type is not"),
        pytest.param("Range", "bytes=0-499", True, id="a single Range with start and end is safelisted"),
        pytest.param("Range", "bytes=500-", True, id="an open-ended Range is safelisted"),
        pytest.param("Range", "bytes=-500", False, id="a suffix Range is not"),
        pytest.param("Range", "bytes=0-1,5-9", False, id="a Range list is not"),
        pytest.param("Range", "bytes=9-1", False, id="a Range ending before its start is not"),
        pytest.param("Range", "bytes = 0-1", False, id="a Range with whitespace is not"),
        pytest.param("X-API-Key", "k", False, id="a custom header is never safelisted"),
        pytest.param("Authorization", "Bearer t", False, id="Authorization is never safelisted"),
    ],
)
def test_safelisted_request_headers(name: str, value: str, safelisted: bool) -> None:
    assert is_safelisted_header(name, value) is safelisted


@pytest.mark.parametrize(
    ("method", "headers", "private_network", "reasons"),
    [
        pytest.param("GET", [], False, [], id="a plain GET needs no preflight"),
        pytest.param("HEAD", [], False, [], id="a HEAD needs no preflight"),
        pytest.param("post", [], False, [], id="a lower-case post is normalised to POST by fetch"),
        pytest.param("PUT", [], False, ["method PUT is not GET, HEAD or POST"], id="a PUT is preflighted"),
        pytest.param(
            "delete", [], False, ["method DELETE is not GET, HEAD or POST"], id="a delete is upper-cased"
        ),
        pytest.param(
            "POST",
            [("Content-Type", "text/plain;charset=UTF-8"), ("Accept", "*/*")],
            False,
            [],
            id="a form-like POST needs no preflight",
        ),
        pytest.param(
            "POST",
            [("Content-Type", "application/json")],
            False,
            [
                "Content-Type application/json is not one of application/x-www-form-urlencoded, "
                "multipart/form-data, text/plain"
            ],
            id="a JSON POST is preflighted because of its Content-Type",
        ),
        pytest.param(
            "GET",
            [("X-API-Key", "k"), ("Authorization", "Bearer t")],
            False,
            ["header X-API-Key is not CORS-safelisted", "header Authorization is not CORS-safelisted"],
            id="custom headers and Authorization are preflighted",
        ),
        pytest.param(
            "GET",
            [("Accept", "a" * 128)] * 8,
            False,
            [],
            id="safelisted values adding up to exactly 1024 bytes need no preflight",
        ),
        pytest.param(
            "GET",
            [("Accept", "a" * 128)] * 8 + [("Content-Language", "de")],
            False,
            ["the safelisted header values add up to 1026 bytes, over the 1024-byte limit"],
            id="safelisted values over 1024 bytes in total are preflighted",
        ),
        pytest.param(
            "GET", [], True, ["the request asks for private network access"], id="private network access"
        ),
    ],
)
def test_needs_preflight(method: str, headers: HeaderList, private_network: bool, reasons: list[str]) -> None:
    assert needs_preflight(method, headers, private_network=private_network) == reasons


def test_a_lower_case_patch_is_sent_as_written_and_preflighted() -> None:
    (reason,) = needs_preflight("patch")
    assert reason.startswith("method patch is not GET, HEAD or POST (fetch() sends 'patch' as written")


def test_needs_preflight_takes_a_dict_as_fetch_does() -> None:
    assert needs_preflight("GET", {"Accept": "application/json"}) == []
    assert needs_preflight("GET", {"X-Requested-With": "fetch"}) == [
        "header X-Requested-With is not CORS-safelisted"
    ]


def test_unsafe_names_are_lower_cased_sorted_and_unique() -> None:
    headers = [("X-B", "1"), ("x-a", "2"), ("X-A", "3"), ("Accept", "*/*")]
    assert unsafe_header_names(headers) == ["x-a", "x-b"]


def test_preflight_request_announces_method_and_headers_without_spaces() -> None:
    request = BrowserRequest(
        PAGE, "PUT", (("X-API-Key", "k"), ("Content-Type", "application/json")), credentials=True
    )
    assert preflight_request_headers(request) == [
        ("Accept", "*/*"),
        ("Origin", PAGE),
        ("Access-Control-Request-Method", "PUT"),
        ("Access-Control-Request-Headers", "content-type,x-api-key"),
    ]


@pytest.mark.parametrize(
    ("method", "sent"),
    [("get", "GET"), ("Put", "PUT"), ("options", "OPTIONS"), ("patch", "patch"), ("PROPFIND", "PROPFIND")],
)
def test_normalize_method_upper_cases_only_the_six_fetch_knows(method: str, sent: str) -> None:
    assert normalize_method(method) == sent


@pytest.mark.parametrize(
    ("name", "forbidden"),
    [
        ("Cookie", True),
        ("Host", True),
        ("Sec-Fetch-Mode", True),
        ("Proxy-Authorization", True),
        ("X-A", False),
    ],
)
def test_forbidden_request_header_names(name: str, forbidden: bool) -> None:
    assert is_forbidden_header_name(name) is forbidden


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://MyApp.com/page?q=1", "https://myapp.com"),
        ("https://myapp.com:443/", "https://myapp.com"),
        ("http://localhost:5173/", "http://localhost:5173"),
        ("http://[::1]:8080/x", "http://[::1]:8080"),
    ],
)
def test_serialize_origin_as_the_browser_sends_it(url: str, origin: str) -> None:
    assert serialize_origin(url) == origin


def request(
    method: str = "PUT",
    headers: tuple[tuple[str, str], ...] = (("X-API-Key", "k"),),
    credentials: bool = False,
    private_network: bool = False,
) -> BrowserRequest:
    return BrowserRequest(PAGE, method, headers, credentials, private_network)


def allow(methods: str | None = "PUT", headers: str | None = "X-API-Key", **extra: str) -> HeaderList:
    answer = [("Access-Control-Allow-Origin", extra.pop("origin", PAGE))]
    if methods is not None:
        answer.append(("Access-Control-Allow-Methods", methods))
    if headers is not None:
        answer.append(("Access-Control-Allow-Headers", headers))
    answer += [(name.replace("_", "-"), value) for name, value in extra.items()]
    return answer


@pytest.mark.parametrize(
    ("browser_request", "status", "headers", "codes"),
    [
        pytest.param(request(), 204, allow(), [], id="preflight listing method and header passes"),
        pytest.param(request(), 200, allow(), [], id="a 200 preflight passes too"),
        pytest.param(request(), 404, allow(), [Code.PREFLIGHT_FAILED], id="a 404 preflight fails"),
        pytest.param(
            request(),
            500,
            [],
            [Code.PREFLIGHT_FAILED, Code.MISSING_ALLOW_ORIGIN],
            id="a 500 preflight without headers fails twice",
        ),
        pytest.param(
            request(),
            204,
            [],
            [Code.MISSING_ALLOW_ORIGIN, Code.METHOD_NOT_ALLOWED, Code.HEADER_NOT_ALLOWED],
            id="a 204 preflight without CORS headers names every missing part",
        ),
        pytest.param(
            request("patch"), 204, allow("PATCH"), [Code.METHOD_NOT_ALLOWED], id="methods are case-sensitive"
        ),
        pytest.param(
            request(), 204, allow("GET, POST"), [Code.METHOD_NOT_ALLOWED], id="PUT not listed fails"
        ),
        pytest.param(request(), 204, allow("*"), [], id="a wildcard method without credentials passes"),
        pytest.param(
            request(credentials=True),
            204,
            allow("*", Access_Control_Allow_Credentials="true"),
            [Code.METHOD_NOT_ALLOWED],
            id="a wildcard method with credentials is a literal",
        ),
        pytest.param(request("POST"), 204, allow(None), [], id="POST needs no listing in Allow-Methods"),
        pytest.param(
            request(), 204, allow(headers="x-api-key"), [], id="header names compare case-insensitively"
        ),
        pytest.param(
            request(),
            204,
            allow(headers=" , X-Other,X-API-Key ,"),
            [],
            id="spacing and empty items are ignored",
        ),
        pytest.param(
            request(),
            204,
            allow(headers="Content-Type"),
            [Code.HEADER_NOT_ALLOWED],
            id="custom header not listed",
        ),
        pytest.param(
            request(), 204, allow(headers="*"), [], id="a wildcard header without credentials passes"
        ),
        pytest.param(
            request(credentials=True),
            204,
            allow(headers="*", Access_Control_Allow_Credentials="true"),
            [Code.HEADER_NOT_ALLOWED],
            id="a wildcard header with credentials is a literal",
        ),
        pytest.param(
            request(headers=(("Authorization", "Bearer t"),)),
            204,
            allow(headers="*"),
            [Code.HEADER_NOT_ALLOWED],
            id="a wildcard never covers Authorization",
        ),
        pytest.param(
            request(headers=(("Authorization", "Bearer t"),)),
            204,
            allow(headers="*, Authorization"),
            [],
            id="Authorization listed by name passes",
        ),
        pytest.param(
            request(),
            204,
            allow("PUT;DELETE"),
            [Code.INVALID_ALLOW_LIST],
            id="an unparsable method list fails",
        ),
        pytest.param(
            request(credentials=True),
            204,
            allow(Access_Control_Allow_Credentials="True"),
            [Code.CREDENTIALS_NOT_ALLOWED],
            id="Allow-Credentials must be exactly lower-case true",
        ),
        pytest.param(
            request(private_network=True),
            204,
            allow(),
            [Code.PRIVATE_NETWORK_NOT_ALLOWED],
            id="private network access without Allow-Private-Network fails",
        ),
        pytest.param(
            request(private_network=True),
            204,
            allow(Access_Control_Allow_Private_Network="true"),
            [],
            id="private network access allowed passes",
        ),
    ],
)
def test_check_preflight(
    browser_request: BrowserRequest, status: int, headers: HeaderList, codes: list[Code]
) -> None:
    assert [finding.code for finding in check_preflight(browser_request, status, headers)] == codes


@pytest.mark.parametrize(
    ("credentials", "headers", "codes"),
    [
        pytest.param(False, [("Access-Control-Allow-Origin", PAGE)], [], id="the exact origin passes"),
        pytest.param(
            False, [("Access-Control-Allow-Origin", "*")], [], id="a wildcard without credentials passes"
        ),
        pytest.param(
            True,
            [("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Credentials", "true")],
            [Code.WILDCARD_WITH_CREDENTIALS],
            id="a wildcard with credentials fails",
        ),
        pytest.param(
            True,
            [("Access-Control-Allow-Origin", PAGE), ("Access-Control-Allow-Credentials", "true")],
            [],
            id="the exact origin with Allow-Credentials true passes",
        ),
        pytest.param(
            True,
            [("Access-Control-Allow-Origin", PAGE)],
            [Code.CREDENTIALS_NOT_ALLOWED],
            id="credentials without Allow-Credentials fail",
        ),
        pytest.param(False, [], [Code.MISSING_ALLOW_ORIGIN], id="no Allow-Origin fails"),
        pytest.param(
            False,
            [("Via", "1.1 webpack")],
            [Code.PROXY_NOT_ADDING_HEADERS],
            id="no Allow-Origin behind a proxy",
        ),
        pytest.param(
            False,
            [("Access-Control-Allow-Origin", PAGE), ("Access-Control-Allow-Origin", PAGE)],
            [Code.MULTIPLE_ALLOW_ORIGIN],
            id="two Allow-Origin lines fail even when equal",
        ),
        pytest.param(
            False,
            [("Access-Control-Allow-Origin", f"*, {PAGE}")],
            [Code.MULTIPLE_ALLOW_ORIGIN],
            id="a comma-separated Allow-Origin fails",
        ),
        pytest.param(
            False,
            [("Access-Control-Allow-Origin", "https://other.example")],
            [Code.ORIGIN_MISMATCH],
            id="another site's origin fails",
        ),
    ],
)
def test_check_response(credentials: bool, headers: HeaderList, codes: list[Code]) -> None:
    browser_request = request("GET", (), credentials)
    assert [finding.code for finding in check_response(browser_request, headers)] == codes


def test_a_known_proxy_without_headers_is_named() -> None:
    (finding,) = check_response(request("GET", ()), [], via="http://localhost:8080")
    assert finding.code is Code.PROXY_NOT_ADDING_HEADERS
    assert "'http://localhost:8080'" in finding.message


def test_the_null_origin_matches_only_null() -> None:
    null_request = BrowserRequest("null", "GET")
    assert check_response(null_request, [("Access-Control-Allow-Origin", "null")]) == []


@pytest.mark.parametrize(
    ("allowed", "explanation"),
    [
        pytest.param(
            PAGE + "/", "the header has a trailing slash, which browsers never send", id="trailing slash"
        ),
        pytest.param(
            "http://LocalHost:5173",
            "the header has upper-case letters, while browsers send origins in lower case",
            id="upper case",
        ),
        pytest.param("http://localhost:3000", "the port differs (3000 instead of 5173)", id="another port"),
        pytest.param(
            "https://localhost:5173", "the scheme differs (https:// instead of http://)", id="another scheme"
        ),
    ],
)
def test_origin_near_misses_name_the_difference(allowed: str, explanation: str) -> None:
    (finding,) = check_response(request("GET", ()), [("Access-Control-Allow-Origin", allowed)])
    assert finding.code is Code.ORIGIN_MISMATCH
    assert finding.message == (
        f"'Access-Control-Allow-Origin' on the response is {allowed!r} but the page's origin is "
        f"'{PAGE}'; origins must match exactly: {explanation}"
    )


def test_an_allow_origin_that_is_no_url_is_a_plain_mismatch() -> None:
    (finding,) = check_response(
        request("GET", ()), [("Access-Control-Allow-Origin", "http://localhost:99999")]
    )
    assert finding.code is Code.ORIGIN_MISMATCH
    assert finding.message.endswith("origins must match exactly")


def test_a_default_port_written_out_is_a_near_miss() -> None:
    https_page = BrowserRequest("https://myapp.com", "GET")
    (finding,) = check_response(https_page, [("Access-Control-Allow-Origin", "https://myapp.com:443")])
    assert finding.message.endswith("the header writes out the default port, which browsers leave off")
