"""The configuration: frozen, typed dataclasses, and the problems a configuration can have.

Validation lives in ``checker.py`` and reading a file in ``loader.py``; this module only says
what a valid configuration is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from corsproxy.har.reader import RecordedExchange

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_METHODS = ("GET", "HEAD", "POST")
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 300.0


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration: where (key path and line, when known) and why."""

    message: str
    path: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line is not None else ""
        return f"{self.path}: {self.message}{where}" if self.path else f"{self.message}{where}"


class ConfigError(Exception):
    """Every problem found in a configuration, each naming its key path and line."""

    def __init__(self, problems: Sequence[Problem | str], source: str = "<config>") -> None:
        self.problems = [item if isinstance(item, Problem) else Problem(item) for item in problems]
        self.source = source
        super().__init__(self.render())

    @property
    def errors(self) -> list[str]:
        """The problems as the lines they are shown as."""
        return [str(problem) for problem in self.problems]

    def render(self) -> str:
        count = len(self.problems)
        heading = f"{self.source}: {count} error{'s' if count != 1 else ''}"
        return "\n".join([heading, *("  " + error for error in self.errors)])


DEFAULT_MAX_HEADER_SIZE = 16384
DEFAULT_MAX_UPSTREAM_CONNECTIONS = 100


@dataclass(frozen=True)
class ServerTLS:
    """Serve the proxy itself over HTTPS: a certificate and key, or ``auto`` (self-signed)."""

    cert: str | None = None
    key: str | None = None
    auto: bool = False


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # Host names a request's Host header may carry (DNS-rebinding guard); the loopback
    # names and the configured host are always added. "*" turns the guard off.
    allowed_hosts: tuple[str, ...] = ()
    tls: ServerTLS | None = None
    # Longest request line or header line accepted; longer gets 431-style 400 from the parser.
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE
    # Requests forwarded at once; more wait (up to the route's connect_timeout) for a slot.
    max_upstream_connections: int = DEFAULT_MAX_UPSTREAM_CONNECTIONS


@dataclass(frozen=True)
class CookieConfig:
    """How Set-Cookie from the upstream is adapted so the cookie sticks on the proxy's host."""

    domain: str = "rewrite"  # rewrite | keep
    secure: str = "auto"  # auto | keep
    samesite: str = "auto"  # auto | keep | Lax | Strict | None
    path: str = "rewrite"  # rewrite | keep


@dataclass(frozen=True)
class UpstreamTLS:
    verify: bool = True
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


@dataclass(frozen=True)
class RouteInspector:
    """What the inspector keeps of this route's exchanges."""

    # False: request bodies sent to this route are never captured (passwords, uploads).
    bodies: bool = True


DEFAULT_INSPECTOR_MAX_BODY = 1024 * 1024
DEFAULT_INSPECTOR_MAX_TOTAL = 64 * 1024 * 1024


@dataclass(frozen=True)
class InspectorConfig:
    """How much of the bodies the inspector's record keeps."""

    max_body: int = DEFAULT_INSPECTOR_MAX_BODY  # per body; 0 turns capture off
    # All bodies in the record together; beyond it, the oldest exchanges lose theirs.
    max_total: int = DEFAULT_INSPECTOR_MAX_TOTAL


@dataclass(frozen=True)
class RouteConfig:
    """A path prefix on the proxy side and the upstream base URL it forwards to."""

    path: str
    upstream: str
    strip_prefix: bool = True
    # Headers set on every request sent upstream, after ${VAR} expansion.
    request_headers: tuple[tuple[str, str], ...] = ()
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    # Longest silence allowed while waiting for the upstream's headers or its next
    # body chunk; there is no total timeout, so event streams live as long as they talk.
    read_timeout: float = DEFAULT_READ_TIMEOUT
    remove_request_headers: tuple[str, ...] = ()
    # What the upstream sees as Origin (and Referer): "keep", "upstream" (its own origin,
    # for APIs that check it), "none" (removed), or a fixed origin.
    rewrite_origin: str = "keep"
    # (regex, template) pairs applied in order to the upstream path; the first match wins.
    path_rewrites: tuple[tuple[str, str], ...] = ()
    cookies: CookieConfig = field(default_factory=CookieConfig)
    rewrite_redirects: bool = True
    tls: UpstreamTLS = field(default_factory=UpstreamTLS)
    max_body_size: int | None = None
    # Refuse (403) requests whose Origin no rule allows instead of forwarding them.
    # None means "when this route injects request_headers": other sites must not spend
    # the developer's API key, not even with simple requests that need no preflight.
    refuse_disallowed_origins: bool | None = None
    inspector: RouteInspector = field(default_factory=RouteInspector)
    line: int = 0

    @property
    def guards_credentials(self) -> bool:
        if self.refuse_disallowed_origins is None:
            return bool(self.request_headers)
        return self.refuse_disallowed_origins


@dataclass(frozen=True)
class RuleConfig:
    """A CORS policy for the paths matching ``path`` and the origins matching ``origins``."""

    origins: tuple[str, ...]
    path: str = "/**"
    allow_methods: tuple[str, ...] = DEFAULT_METHODS
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age: int | None = None
    allow_private_network: bool = False
    line: int = 0


@dataclass(frozen=True)
class MockConfig:
    """An answer the proxy gives itself for requests matching ``path`` (a glob on the
    proxy-side path, as in rules), ``method`` and ``query``; never forwarded."""

    path: str
    method: tuple[str, ...] = ()  # empty: any method
    # These query parameters must be present with these values (others may be too).
    query: tuple[tuple[str, str], ...] = ()
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    # At most one of the three; none is an empty body. ``json`` is the encoded text.
    json: str | None = None
    body: str | None = None
    file: str | None = None  # resolved against the config file's folder, read per request
    line: int = 0


DEFAULT_RECORD_MAX_BODY = 10 * 1024 * 1024
REPLAY_MISSES = ("forward", "404")


@dataclass(frozen=True)
class RecordConfig:
    """Every exchange the proxy forwards, appended to a HAR 1.2 file."""

    file: str  # resolved against the config file's folder
    # Bodies (decoded) are cut at this many bytes and marked truncated.
    max_body: int = DEFAULT_RECORD_MAX_BODY
    line: int = 0


@dataclass(frozen=True)
class ReplayConfig:
    """Requests answered from a HAR's entries; ``miss`` says what happens to the others."""

    file: str  # resolved against the config file's folder
    miss: str = "forward"  # forward | 404
    # The file's entries, read (and checked) when the config loads.
    entries: tuple[RecordedExchange, ...] = field(default=(), repr=False, compare=False)
    line: int = 0


FAIL_MODES = ("status", "reset", "hang")


@dataclass(frozen=True)
class FailConfig:
    """A simulated failure: at random (``rate``) or every ``every``-th matching request."""

    rate: float | None = None  # 0 to 1
    every: int | None = None
    # status: answer ``status`` (with CORS headers); reset: close the connection without an
    # answer; hang: never answer.
    mode: str = "status"
    status: int = 503
    retry_after: int | None = None  # seconds, sent as Retry-After


@dataclass(frozen=True)
class SimulateConfig:
    """A bad network on purpose for requests matching ``path`` (a glob, as in rules) and
    ``method``: latency, a throttled body, failures. Every matching entry applies."""

    path: str
    method: tuple[str, ...] = ()  # empty: any method
    latency: tuple[float, float] | None = None  # seconds, uniform between the two
    throttle: int | None = None  # bytes per second
    fail: FailConfig | None = None
    line: int = 0


@dataclass(frozen=True)
class Config:
    routes: tuple[RouteConfig, ...]
    rules: tuple[RuleConfig, ...]
    server: ServerConfig = field(default_factory=ServerConfig)
    # Answered by the proxy before any route is looked up; first match wins.
    mocks: tuple[MockConfig, ...] = ()
    record: RecordConfig | None = None
    # Answered after mocks, before any route is looked up.
    replay: ReplayConfig | None = None
    simulate: tuple[SimulateConfig, ...] = ()
    # Makes every random choice of ``simulate`` the same on every run.
    seed: int | None = None
    inspector: InspectorConfig = field(default_factory=InspectorConfig)
    source: str = "<config>"
    # Values that came from the environment: shown as *** wherever the proxy displays headers.
    secrets: frozenset[str] = frozenset()
    # (value, VAR) for each of them: copies of requests show $VAR, never the value.
    secret_names: tuple[tuple[str, str], ...] = ()
    # The .env file that was read, if any (its values count as environment variables).
    env_file: str | None = None
