"""``corsproxy check``: the browser's CORS verdict on one request, and the fix.

The requests go out as the browser sends them: a preflight first when the Fetch rules
in ``corsproxy.check.browser`` call for one, the request itself only if the preflight passes,
redirects not followed, bodies left encoded. The answers are judged by the same rules.
With ``--via`` the same request is checked again through a running corsproxy.

Exit status: 0 allowed, 1 blocked, 2 bad input or no answer (one line, never a traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shlex
import socket
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp
from yarl import URL

from corsproxy.check.browser import (
    FORBIDDEN_METHODS,
    BrowserRequest,
    Code,
    Finding,
    check_preflight,
    check_response,
    is_forbidden_header_name,
    needs_preflight,
    normalize_method,
    preflight_request_headers,
    serialize_origin,
)
from corsproxy.headers import TOKEN
from corsproxy.patterns.origins import same_origin

EXIT_ALLOWED = 0
EXIT_BLOCKED = 1
EXIT_ERROR = 2
DEFAULT_TIMEOUT = 10.0
# Where `corsproxy serve` listens unless told otherwise.
PROXY_PORT = 8080
# The header corsproxy puts on the answers it makes itself (answers.py, ANSWER_MARK).
ANSWER_MARK = "corsproxy-answer"
HEALTH_PATH = "/__corsproxy/health"
# Enough of a refused preflight's body to show the server's reason (corsproxy gives one, with
# what to change where).
EXCERPT_BYTES = 1024
# fetch() gives a string body this type unless the script sets one (Fetch, "extract a body").
STRING_BODY_TYPE = "text/plain;charset=UTF-8"


class CheckError(Exception):
    """Bad input, or a server that cannot be reached: one line for the user, exit 2."""


@dataclass(frozen=True)
class CheckOptions:
    url: URL
    request: BrowserRequest
    body: bytes | None = None
    # Sent with the request itself only, standing in for the browser's cookie jar
    # (a preflight never carries credentials: Fetch, "CORS-preflight fetch").
    cookie: str | None = None
    via: URL | None = None
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class Exchange:
    """One request sent and the answer's status and headers."""

    method: str
    url: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    excerpt: str = ""  # first line of a refused preflight's body: servers often say why there

    @property
    def relevant_headers(self) -> list[tuple[str, str]]:
        """The Access-Control-* headers, and Via, which names a proxy in between."""
        return [(name, value) for name, value in self.headers if _is_shown(name)]


@dataclass(frozen=True)
class Verdict:
    """What the browser makes of one request to one target."""

    target: str
    exchanges: tuple[Exchange, ...]
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.findings

    @property
    def label(self) -> str:
        return "ALLOWED" if self.allowed else "BLOCKED"


@dataclass(frozen=True)
class Fix:
    """corsproxy set up so the same request passes: a quick command and a rules file."""

    command: str | None  # None when the quick mode cannot express it (private network access)
    proxy_url: str
    yaml: str
    # The URL is a corsproxy already: what its own refusal says to change in its rules.
    config_advice: str | None = None


@dataclass(frozen=True)
class Report:
    options: CheckOptions
    preflight_reasons: tuple[str, ...]
    direct: Verdict
    via: Verdict | None
    fix: Fix | None

    @property
    def verdict(self) -> Verdict:
        """The verdict that sets the exit status: through the proxy when --via is given,
        since that is the request the page will make."""
        return self.via or self.direct

    @property
    def exit_code(self) -> int:
        return EXIT_ALLOWED if self.verdict.allowed else EXIT_BLOCKED


def add_check_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = subparsers.add_parser(
        "check",
        help="would a browser allow this cross-origin request? and the corsproxy setup that fixes it",
        description="Send a request the way a browser does from ORIGIN (preflight included), "
        "judge the answers by the Fetch standard's CORS rules, and print ALLOWED or BLOCKED "
        "with each failing check and the corsproxy command that makes it pass.",
        epilog="exit status: 0 allowed, 1 blocked, 2 bad input or no answer",
    )
    check.add_argument("url", metavar="URL", help="the URL the page fetches")
    check.add_argument("--origin", required=True, help="the page's origin, e.g. http://localhost:5173")
    check.add_argument("-X", "--method", help="as passed to fetch(); default GET, or POST with a body")
    check.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a header the script sets, repeatable",
    )
    body = check.add_mutually_exclusive_group()
    body.add_argument("--data", metavar="BODY", help=f"a string body (Content-Type {STRING_BODY_TYPE})")
    body.add_argument(
        "--json", dest="json_body", metavar="BODY", help="a body sent with Content-Type: application/json"
    )
    check.add_argument(
        "--credentials",
        action="store_true",
        help="credentials: 'include' (cookies, HTTP auth); give cookies with -H 'Cookie: ...'",
    )
    check.add_argument(
        "--private-network",
        action="store_true",
        help="a public page calling a private address: Private Network Access preflight",
    )
    check.add_argument(
        "--via",
        metavar="PROXY_URL",
        help="also check the request through a running corsproxy, e.g. http://localhost:8080",
    )
    check.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS", help="per request, default 10"
    )
    check.add_argument("--json-output", action="store_true", help="print one JSON object")


def run_check(args: argparse.Namespace) -> int:
    return asyncio.run(check_main(args, sys.stdout, sys.stderr))


async def check_main(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """The whole command: parse, send, judge, print; returns the exit status."""
    try:
        report = await run_checks(options_from_args(args))
    except CheckError as error:
        if args.json_output:
            print(json.dumps({"verdict": "ERROR", "error": str(error), "exit_code": EXIT_ERROR}), file=out)
        print(f"corsproxy check: {error}", file=err)
        return EXIT_ERROR
    if args.json_output:
        print(json.dumps(report_json(report), indent=2), file=out)
    else:
        print(render_text(report), file=out)
    return report.exit_code


# -- input -------------------------------------------------------------------------


def options_from_args(args: argparse.Namespace) -> CheckOptions:
    url = _http_url("URL", args.url)
    origin = _origin(args.origin)
    headers: list[tuple[str, str]] = []
    cookies: list[str] = []
    for text in args.header:
        name, value = _header(text)
        if name.lower() == "cookie" and args.credentials:
            cookies.append(value)
        elif name.lower() == "cookie":
            raise CheckError("-H Cookie: a browser sends cookies only with credentials: add --credentials")
        elif is_forbidden_header_name(name):
            raise CheckError(
                f"-H {name}: a page cannot set {name}, the browser does "
                "(a forbidden request-header in the Fetch standard); leave it out"
            )
        else:
            headers.append((name, value))
    body_text = args.json_body if args.json_body is not None else args.data
    body = None if body_text is None else body_text.encode("utf-8")
    if body is not None and not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(
            ("Content-Type", "application/json" if args.json_body is not None else STRING_BODY_TYPE)
        )
    method = _method(args.method or ("POST" if body is not None else "GET"))
    if body is not None and method in ("GET", "HEAD"):
        raise CheckError(f"a {method} request cannot have a body (fetch() throws a TypeError): use --method")
    if not args.timeout > 0:
        raise CheckError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    request = BrowserRequest(origin, method, tuple(headers), args.credentials, args.private_network)
    via = None if args.via is None else _http_url("--via", args.via)
    return CheckOptions(url, request, body, "; ".join(cookies) or None, via, args.timeout)


def _http_url(label: str, text: str) -> URL:
    try:
        url = URL(text)
        port = url.port  # yarl parses the port lazily; a bad one raises here
    except ValueError as error:
        raise CheckError(f"{label} {text!r} is not a URL: {error}") from error
    if url.scheme not in ("http", "https") or not url.host or port is None:
        raise CheckError(f"{label} {text!r} is not an http:// or https:// URL")
    return url


def _origin(text: str) -> str:
    if text == "null":
        return text
    shape = f"--origin {text!r} is not an origin: give scheme://host[:port], e.g. http://localhost:5173"
    if "://" not in text:
        raise CheckError(shape)
    try:
        serialized = serialize_origin(text)
    except ValueError as error:
        raise CheckError(f"{shape} ({error})") from error
    if serialized.endswith("://"):
        raise CheckError(shape)
    if serialized != text:
        # Browsers send exactly this serialisation; testing another spelling tests nothing real.
        raise CheckError(f"--origin {text!r}: a page there sends Origin {serialized!r}; use that")
    return text


def _header(text: str) -> tuple[str, str]:
    name, colon, raw = text.partition(":")
    name = name.strip()
    if not colon or not TOKEN.fullmatch(name):
        raise CheckError(f"-H {text!r}: give 'Name: value'")
    # Fetch, "normalize" a header value: leading and trailing HTTP whitespace removed.
    value = raw.strip(" \t\r\n")
    if any(char in value for char in "\r\n\0"):
        raise CheckError(f"-H {name}: a header value cannot contain a line break or NUL")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise CheckError(
            f"-H {name}: fetch() accepts only byte strings in headers (characters up to U+00FF)"
        ) from None
    return name, value


def _method(text: str) -> str:
    if not TOKEN.fullmatch(text):
        raise CheckError(f"--method {text!r} is not an HTTP method")
    if text.upper() in FORBIDDEN_METHODS:
        raise CheckError(f"--method {text}: fetch() refuses to send {text.upper()} (a forbidden method)")
    return normalize_method(text)


# -- sending and judging --------------------------------------------------------------


async def run_checks(options: CheckOptions) -> Report:
    request = options.request
    reasons = needs_preflight(request.method, request.headers, private_network=request.private_network)
    timeout = aiohttp.ClientTimeout(total=options.timeout)
    async with aiohttp.ClientSession(
        auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout
    ) as session:
        direct = await _check_target(session, options, options.url, bool(reasons), None)
        through = None
        if options.via is not None:
            routes = await _proxy_routes(session, options.via)
            target = via_target(options.via, options.url, routes)
            through = await _check_target(session, options, target, bool(reasons), str(options.via))
            warning = different_sites(options.request, options.via)
            if warning is not None:
                through = dataclasses.replace(through, notes=(*through.notes, warning))
    final = through or direct
    # corsproxy marks the answers it makes itself: the URL is a corsproxy already.
    served_by_corsproxy = any(
        name.lower() == ANSWER_MARK for exchange in direct.exchanges for name, _ in exchange.headers
    )
    if final.allowed:
        fix: Fix | None = None
    elif served_by_corsproxy and through is None:
        fix = proxy_config_fix(options, direct)
    else:
        fix = fix_for(options)
    return Report(options, tuple(reasons), direct, through, fix)


Routes = list[dict[str, Any]]


async def _proxy_routes(session: aiohttp.ClientSession, base: URL) -> Routes | None:
    """The routes of the corsproxy at ``base`` (its /__corsproxy/health), or None when no
    corsproxy answers there."""
    try:
        async with session.get(base.with_path(HEALTH_PATH).with_query(None)) as answer:
            if answer.status != 200:
                return None
            data = await answer.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    if not isinstance(data, dict) or "front_door" not in data or not isinstance(data.get("routes"), list):
        return None
    return [route for route in data["routes"] if isinstance(route, dict)]


def via_target(via: URL, url: URL, routes: Routes | None = None) -> URL:
    """The URL as the page would call it through the proxy: mapped through the proxy's
    routes (the route whose upstream serves the URL, and which the proxy's longest-prefix
    match picks again for the mapped path), or, when ``via`` is no corsproxy, the URL's path
    and query appended to ``via``."""
    base = str(via).rstrip("/")
    if routes is None:
        return URL(base + url.raw_path_qs, encoded=True)
    best: tuple[int, str] | None = None
    for route in routes:
        mapped = _mapped_path(route, url)
        if mapped is None or _route_for(routes, mapped) is not route:
            continue
        length = len(URL(str(route.get("upstream", ""))).raw_path.rstrip("/"))
        if best is None or length > best[0]:
            best = (length, mapped)
    if best is None:
        known = ", ".join(f"{route.get('path')} -> {route.get('upstream')}" for route in routes)
        raise CheckError(f"the corsproxy at {via} has no route to {url} (its routes: {known}); add one")
    query = f"?{url.raw_query_string}" if url.raw_query_string else ""
    return URL(base + best[1] + query, encoded=True)


def _mapped_path(route: dict[str, Any], url: URL) -> str | None:
    """The proxy-side path that this route forwards to ``url``, or None."""
    upstream = URL(str(route.get("upstream", "")))
    # Origins compared with default ports filled in: https://a:443 is https://a.
    if (upstream.scheme, upstream.host, upstream.port) != (url.scheme, url.host, url.port):
        return None
    upstream_path = upstream.raw_path.rstrip("/")
    path = url.raw_path
    if path != upstream_path and not path.startswith(upstream_path + "/"):
        return None
    rest = path[len(upstream_path) :] or "/"
    prefix = str(route.get("path", "/")).rstrip("/")
    if route.get("strip_prefix", True):
        return prefix + rest if rest != "/" or not prefix else prefix or "/"
    # Without strip_prefix the upstream sees the prefix too: the rest must lie under it.
    if prefix and rest != prefix and not rest.startswith(prefix + "/"):
        return None
    return rest


def _route_for(routes: Routes, path: str) -> dict[str, Any] | None:
    """The route the proxy picks for ``path``: the longest prefix, whole segments only."""
    chosen: dict[str, Any] | None = None
    for route in routes:
        prefix = str(route.get("path", "/")).rstrip("/")
        if (not prefix or path == prefix or path.startswith(prefix + "/")) and (
            chosen is None or len(prefix) > len(str(chosen.get("path", "/")).rstrip("/"))
        ):
            chosen = route
    return chosen


async def _check_target(
    session: aiohttp.ClientSession, options: CheckOptions, target: URL, preflight: bool, via: str | None
) -> Verdict:
    request = options.request
    if same_origin(request.origin, str(target)):
        # HTML Standard, same origin: fetch() uses no CORS at all; nothing can block.
        return Verdict(str(target), (), (), ("the page and the URL share an origin: no CORS involved",))
    exchanges = []
    if preflight:
        answer = await _send(session, "OPTIONS", target, preflight_request_headers(request), None, options)
        exchanges.append(answer)
        findings = check_preflight(request, answer.status, answer.headers, via=via)
        if findings:
            # Fetch, "CORS-preflight fetch": a failed preflight is a network error; the
            # request itself is never sent (so no side effect the browser would not cause).
            note = f"{request.method} not sent: the browser stops after a failed preflight"
            return Verdict(str(target), tuple(exchanges), tuple(findings), (note,))
    headers = [("Origin", request.origin), *request.headers]
    if options.cookie is not None:
        headers.append(("Cookie", options.cookie))
    answer = await _send(session, request.method, target, headers, options.body, options)
    exchanges.append(answer)
    notes = []
    location = dict((name.lower(), value) for name, value in answer.headers).get("location")
    if 300 <= answer.status < 400 and location:
        notes.append(f"redirect to {location} not followed: the browser would check CORS again there")
    findings = check_response(request, answer.headers, via=via)
    kind = dict((name.lower(), value) for name, value in answer.headers).get(ANSWER_MARK)
    if kind is not None and (kind.startswith("mock[") or kind == "replay"):
        # A mock or a recorded answer is the one the developer asked for: what the browser
        # makes of it stands.
        notes.append(f"answered by corsproxy's {kind}, not the upstream")
    elif kind is not None:
        message = (
            f"this {answer.status} is corsproxy's own answer ({kind}), not the upstream's: {answer.excerpt}"
        )
        findings.append(Finding(Code.ANSWERED_BY_CORSPROXY, "response", message))
    return Verdict(str(target), tuple(exchanges), tuple(findings), tuple(notes))


async def _send(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    headers: list[tuple[str, str]],
    body: bytes | None,
    options: CheckOptions,
) -> Exchange:
    try:
        async with session.request(method, url, headers=headers, data=body, allow_redirects=False) as answer:
            excerpt = ""
            refused_preflight = method == "OPTIONS" and not 200 <= answer.status <= 299
            explained = refused_preflight or ANSWER_MARK in answer.headers
            if explained and "Content-Encoding" not in answer.headers:
                text = (await answer.content.read(EXCERPT_BYTES)).decode("utf-8", "replace").strip()
                excerpt = text.splitlines()[0] if text else ""
            return Exchange(
                method, str(url), answer.status, answer.reason or "", tuple(answer.headers.items()), excerpt
            )
    except aiohttp.ClientConnectorError as error:
        raise CheckError(f"cannot reach {_host_port(url)}: {_cause(error)}") from error
    except TimeoutError as error:
        raise CheckError(f"no answer from {_host_port(url)} within {options.timeout:g}s") from error
    except aiohttp.ClientError as error:
        raise CheckError(f"{method} {url}: {error}") from error


def _host_port(url: URL) -> str:
    host = url.raw_host or ""
    return f"[{host}]:{url.port}" if ":" in host else f"{host}:{url.port}"


def _cause(error: aiohttp.ClientConnectorError) -> str:
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return f"its TLS certificate was refused ({error.certificate_error})"
    cause = error.os_error
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused (nothing listens on that port)"
    if isinstance(cause, socket.gaierror):
        return f"the host name does not resolve ({cause.strerror})"
    return cause.strerror or str(cause)


def fix_for(options: CheckOptions) -> Fix:
    """corsproxy in front of the URL's origin, allowing exactly this request."""
    request = options.request
    upstream = serialize_origin(str(options.url))
    command = None
    if not request.private_network:
        # The quick mode's rule allows any method and header, but not private network access.
        words = ["corsproxy", "serve", "--upstream", upstream, "--allow-origin", request.origin]
        command = shlex.join([*words, "--allow-credentials"] if request.credentials else words)
    spelled = {name.lower(): name for name, _ in request.headers}
    headers = [spelled[name] for name in request.unsafe_header_names]
    lines = [
        f"upstream: {json.dumps(upstream)}",
        "rules:",
        f"  - origins: [{json.dumps(request.origin)}]",
        f"    allow_methods: [{json.dumps(request.method)}]",
    ]
    if headers:
        lines.append(f"    allow_headers: [{', '.join(json.dumps(name) for name in headers)}]")
    lines.append(f"    allow_credentials: {json.dumps(request.credentials)}")
    if request.private_network:
        lines.append("    allow_private_network: true")
    return Fix(command, proxy_base_for(request.origin) + options.url.raw_path_qs, "\n".join(lines) + "\n")


def different_sites(request: BrowserRequest, via: URL) -> str | None:
    """A credentialed page and the proxy on different loopback names (localhost and
    127.0.0.1 are different sites): the browser keeps their cookies apart, silently."""
    page_host, proxy_host = URL(request.origin).host, via.host
    if not request.credentials or page_host is None or proxy_host is None or page_host == proxy_host:
        return None
    proxy_port = via.port or PROXY_PORT
    shown = f"[{page_host}]" if ":" in page_host else page_host
    return (
        f"warning: the page is on {page_host} and the proxy on {proxy_host}, which are different sites: "
        f"cookies set through the proxy will not be sent with credentials; call it as "
        f"http://{shown}:{proxy_port}"
    )


def proxy_base_for(origin: str) -> str:
    """Where the page should call the proxy: on the page's own host name (localhost,
    127.0.0.1 or [::1]), so that a credentialed page and the proxy are the same site."""
    host = URL(origin).host or "localhost"
    shown = f"[{host}]" if ":" in host else host
    loopback = host in ("localhost", "127.0.0.1", "::1") or host.endswith(".localhost")
    return f"http://{shown if loopback else 'localhost'}:{PROXY_PORT}"


def proxy_config_fix(options: CheckOptions, direct: Verdict) -> Fix:
    """The URL is served by corsproxy already: the fix is in its rules, not a second proxy."""
    reasons = [exchange.excerpt for exchange in direct.exchanges if exchange.excerpt]
    advice = reasons[-1] if reasons else "see the running corsproxy's log line for this request"
    return Fix(None, str(options.url), "", config_advice=advice)


# -- output --------------------------------------------------------------------------


def _is_shown(name: str) -> bool:
    return name.lower().startswith("access-control-") or name.lower() == "via"


def render_text(report: Report) -> str:
    request = report.options.request
    heading = f"{request.method} {report.options.url} from origin {request.origin}"
    lines = [heading + (", with credentials" if request.credentials else "")]
    if report.preflight_reasons:
        lines.append("Preflight: yes, because " + "; ".join(report.preflight_reasons))
    else:
        lines.append("Preflight: no (a simple request)")
    lines += ["", *_render_verdict("Direct to", report.direct)]
    if report.via is not None:
        lines += ["", *_render_verdict("Through", report.via)]
    if report.fix is not None:
        lines += ["", *_render_fix(report.fix)]
    where = " through the proxy" if report.via is not None else ""
    lines += ["", f"Verdict: {report.verdict.label}{where}"]
    return "\n".join(lines)


def _render_verdict(label: str, verdict: Verdict) -> list[str]:
    lines = [f"{label} {verdict.target}: {verdict.label}"]
    for exchange in verdict.exchanges:
        lines.append(f"  {exchange.method} -> {exchange.status} {exchange.reason}".rstrip())
        shown = exchange.relevant_headers
        lines += [f"    {name}: {value}" for name, value in shown] or ["    (no CORS headers)"]
        if exchange.excerpt:
            lines.append(f"    body: {exchange.excerpt}")
    lines += [f"  {note}" for note in verdict.notes]
    lines += [f"  - {finding.code} ({finding.stage}): {finding.message}" for finding in verdict.findings]
    return lines


def _render_fix(fix: Fix) -> list[str]:
    if fix.config_advice is not None:
        return [
            f"Fix: {fix.proxy_url} is served by corsproxy already: change its rules, not a proxy in front",
            f"  {fix.config_advice}",
        ]
    lines = ["Fix: put corsproxy in front of the API"]
    if fix.command is not None:
        lines += [f"  {fix.command}", f"  then fetch {fix.proxy_url} from the page"]
        lines.append("or with a rules file (corsproxy serve --config corsproxy.yaml):")
    else:
        lines.append(
            f"  with this rules file (corsproxy serve --config corsproxy.yaml), fetch {fix.proxy_url}:"
        )
    lines += [f"  {line}" for line in fix.yaml.splitlines()]
    return lines


def report_json(report: Report) -> dict[str, Any]:
    request = report.options.request
    fix = report.fix
    return {
        "verdict": report.verdict.label,
        "exit_code": report.exit_code,
        "url": str(report.options.url),
        "origin": request.origin,
        "method": request.method,
        "credentials": request.credentials,
        "private_network": request.private_network,
        "preflight": {"needed": bool(report.preflight_reasons), "reasons": list(report.preflight_reasons)},
        "direct": _verdict_json(report.direct),
        "via": None if report.via is None else _verdict_json(report.via),
        "fix": None
        if fix is None
        else {"command": fix.command, "proxy_url": fix.proxy_url, "yaml": fix.yaml},
    }


def _verdict_json(verdict: Verdict) -> dict[str, Any]:
    return {
        "url": verdict.target,
        "verdict": verdict.label,
        "exchanges": [
            {
                "method": exchange.method,
                "url": exchange.url,
                "status": exchange.status,
                "relevant_headers": [list(pair) for pair in exchange.relevant_headers],
                "body_excerpt": exchange.excerpt,
            }
            for exchange in verdict.exchanges
        ],
        "findings": [
            {"code": str(finding.code), "stage": finding.stage, "message": finding.message}
            for finding in verdict.findings
        ],
        "notes": list(verdict.notes),
    }
