"""Validate a YAML configuration, collecting every error with its key path and line.

The YAML is composed into nodes rather than loaded into plain objects, so that each
value still knows the line it came from. Every check appends to one list and carries
on, so the user sees all their mistakes in one run.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import yaml

from corsproxy.config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_METHODS,
    DEFAULT_READ_TIMEOUT,
    Config,
    ConfigError,
    RouteConfig,
    RuleConfig,
    ServerConfig,
)
from corsproxy.globs import GlobError, compile_glob
from corsproxy.headers import TOKEN
from corsproxy.origins import LOCAL_DEV_ORIGINS, OriginPatternError, parse_origin_pattern

T = TypeVar("T")

TOP_KEYS = ("server", "upstream", "routes", "rules")
SERVER_KEYS = ("host", "port")
ROUTE_KEYS = ("path", "upstream", "strip_prefix", "request_headers", "connect_timeout", "read_timeout")
RULE_KEYS = (
    "path",
    "origins",
    "allow_methods",
    "allow_headers",
    "expose_headers",
    "allow_credentials",
    "max_age",
    "allow_private_network",
)
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def default_rule(origins: tuple[str, ...] = LOCAL_DEV_ORIGINS, credentials: bool = False) -> RuleConfig:
    """What applies when no rules are written: local-development origins, any method,
    any header (Authorization named, since ``*`` never covers it), every header exposed."""
    return RuleConfig(
        origins=origins,
        allow_methods=("*",),
        allow_headers=("*", "Authorization"),
        expose_headers=("*",),
        allow_credentials=credentials,
    )


def parse_config(text: str, source: str, env: Mapping[str, str]) -> Config:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError([f"not valid YAML: {error.problem or error}{where}"], source) from error
    except yaml.YAMLError as error:
        raise ConfigError([f"not valid YAML: {error}"], source) from error
    return _Checker(source, env).config(root)


class _Checker:
    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env
        self.errors: list[str] = []
        self._lines: list[int] = []
        self.secrets: set[str] = set()
        self._constructor = yaml.constructor.SafeConstructor()

    # -- reporting -------------------------------------------------------------

    def fail(self, path: str, node: yaml.Node, message: str) -> None:
        line = node.start_mark.line + 1
        # Kept in file order, so the list reads top to bottom like the file.
        at = sum(1 for seen in self._lines if seen <= line)
        self._lines.insert(at, line)
        self.errors.insert(at, f"{path}: {message} (line {line})")

    def value(self, node: yaml.Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    # -- shapes ----------------------------------------------------------------

    def mapping(self, path: str, node: yaml.Node, allowed: tuple[str, ...]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.fail(path, node, f"must be a mapping with keys {', '.join(allowed)}")
            return {}
        found: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(self.value(key_node))
            key_path = f"{path}.{key}" if path else key
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(allowed)}"
                self.fail(key_path, key_node, f"unknown key{hint}")
            elif key in found:
                self.fail(key_path, key_node, "given twice")
            else:
                found[key] = value_node
        return found

    def sequence(self, path: str, node: yaml.Node) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(path, node, "must be a list")
            return []
        return list(node.value)

    def scalar(self, path: str, node: yaml.Node, kind: type[T], describe: str) -> T | None:
        if not isinstance(node, yaml.ScalarNode):
            self.fail(path, node, f"must be {describe}")
            return None
        value = self.value(node)
        # bool is an int in Python; YAML's `true` is never a port or a max_age.
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            self.fail(path, node, f"must be {describe}, got {node.value!r}")
            return None
        return value

    def string(self, path: str, node: yaml.Node) -> str | None:
        return self.scalar(path, node, str, "a string")

    def boolean(self, path: str, node: yaml.Node) -> bool | None:
        return self.scalar(path, node, bool, "true or false")

    def strings(self, path: str, node: yaml.Node, check: Callable[[str], str | None]) -> tuple[str, ...]:
        items = []
        for index, item in enumerate(self.sequence(path, node)):
            text = self.string(f"{path}[{index}]", item)
            if text is None:
                continue
            problem = check(text)
            if problem:
                self.fail(f"{path}[{index}]", item, problem)
            else:
                items.append(text)
        return tuple(items)

    def number(self, path: str, node: yaml.Node, default: float) -> float:
        if not isinstance(node, yaml.ScalarNode):
            self.fail(path, node, "must be a number of seconds")
            return default
        value = self.value(node)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            self.fail(path, node, f"must be a positive number of seconds, got {node.value!r}")
            return default
        return float(value)

    def expand(self, path: str, node: yaml.Node, text: str) -> str:
        """Replace ${VAR} and ${VAR:-default} from the environment; the results are secrets."""

        def substitute(match: re.Match[str]) -> str:
            name, fallback = match[1], match[2]
            if name in self.env:
                value = self.env[name]
            elif fallback is not None:
                value = fallback
            else:
                self.fail(
                    path,
                    node,
                    f"environment variable {name} is not set; export it, or write ${{{name}:-default}}",
                )
                return ""
            if value:
                self.secrets.add(value)
            return value

        return ENV_REFERENCE.sub(substitute, text)

    # -- sections ----------------------------------------------------------------

    def config(self, root: yaml.Node | None) -> Config:
        if root is None:
            raise ConfigError(["the file is empty: give at least `upstream:` or `routes:`"], self.source)
        top = self.mapping("", root, TOP_KEYS)
        if not top and self.errors:
            raise ConfigError(self.errors, self.source)
        server = self.server(top["server"]) if "server" in top else ServerConfig()
        routes: tuple[RouteConfig, ...] = ()
        if "upstream" in top and "routes" in top:
            self.fail("upstream", top["upstream"], "give either `upstream` or `routes`, not both")
        elif "upstream" in top:
            url = self.upstream_url("upstream", top["upstream"])
            if url is not None:
                routes = (RouteConfig(path="/", upstream=url, line=top["upstream"].start_mark.line + 1),)
        elif "routes" in top:
            routes = self.routes(top["routes"])
        else:
            self.fail("upstream", root, "missing: give `upstream: URL` or a list of `routes`")
        rules = self.rules(top["rules"]) if "rules" in top else (default_rule(),)
        if self.errors:
            raise ConfigError(self.errors, self.source)
        return Config(routes, rules, server, self.source, frozenset(self.secrets))

    def server(self, node: yaml.Node) -> ServerConfig:
        keys = self.mapping("server", node, SERVER_KEYS)
        host = ServerConfig.host
        port = ServerConfig.port
        if "host" in keys:
            host = self.string("server.host", keys["host"]) or host
        if "port" in keys:
            value = self.scalar("server.port", keys["port"], int, "a port number")
            if value is not None and not 0 <= value <= 65535:
                self.fail("server.port", keys["port"], f"must be between 0 and 65535, got {value}")
            elif value is not None:
                port = value
        return ServerConfig(host, port)

    def upstream_url(self, path: str, node: yaml.Node) -> str | None:
        text = self.string(path, node)
        if text is None:
            return None
        url = self.expand(path, node, text)
        problem = upstream_problem(url, shown=text)
        if problem:
            self.fail(path, node, problem)
            return None
        return url.rstrip("/")

    def routes(self, node: yaml.Node) -> tuple[RouteConfig, ...]:
        routes: list[RouteConfig] = []
        seen: dict[str, int] = {}
        items = self.sequence("routes", node)
        if isinstance(node, yaml.SequenceNode) and not items:
            self.fail("routes", node, "must list at least one route")
        for index, item in enumerate(items):
            where = f"routes[{index}]"
            keys = self.mapping(where, item, ROUTE_KEYS)
            if not isinstance(item, yaml.MappingNode):
                continue
            prefix = "/"
            if "path" in keys:
                prefix = self.route_prefix(f"{where}.path", keys["path"]) or prefix
            if prefix in seen:
                self.fail(
                    f"{where}.path", keys["path"], f"{prefix!r} is already the path of routes[{seen[prefix]}]"
                )
            seen[prefix] = index
            if "upstream" not in keys:
                self.fail(f"{where}.upstream", item, "missing: the base URL to forward to")
                continue
            url = self.upstream_url(f"{where}.upstream", keys["upstream"])
            strip = True
            if "strip_prefix" in keys:
                strip_value = self.boolean(f"{where}.strip_prefix", keys["strip_prefix"])
                strip = True if strip_value is None else strip_value
            headers: tuple[tuple[str, str], ...] = ()
            if "request_headers" in keys:
                headers = self.request_headers(f"{where}.request_headers", keys["request_headers"])
            connect = DEFAULT_CONNECT_TIMEOUT
            if "connect_timeout" in keys:
                connect = self.number(f"{where}.connect_timeout", keys["connect_timeout"], connect)
            read = DEFAULT_READ_TIMEOUT
            if "read_timeout" in keys:
                read = self.number(f"{where}.read_timeout", keys["read_timeout"], read)
            if url is not None:
                routes.append(
                    RouteConfig(prefix, url, strip, headers, connect, read, item.start_mark.line + 1)
                )
        return tuple(routes)

    def route_prefix(self, path: str, node: yaml.Node) -> str | None:
        text = self.string(path, node)
        if text is None:
            return None
        if not text.startswith("/") or "*" in text or "?" in text or "#" in text:
            self.fail(path, node, f"must be a plain path prefix starting with '/', got {text!r}")
            return None
        if text.startswith("/__corsproxy"):
            self.fail(path, node, "the /__corsproxy/ prefix belongs to the proxy itself")
            return None
        return text.rstrip("/") or "/"

    def request_headers(self, path: str, node: yaml.Node) -> tuple[tuple[str, str], ...]:
        if not isinstance(node, yaml.MappingNode):
            self.fail(path, node, "must be a mapping of header name to value")
            return ()
        headers = []
        for key_node, value_node in node.value:
            name = str(self.value(key_node))
            where = f"{path}.{name}"
            if not TOKEN.match(name):
                self.fail(where, key_node, "is not a valid header name")
                continue
            raw = self.value(value_node) if isinstance(value_node, yaml.ScalarNode) else None
            if raw is None or isinstance(raw, bool) or not isinstance(raw, str | int | float):
                self.fail(where, value_node, "must be a string value")
                continue
            value = self.expand(where, value_node, str(raw))
            if "\r" in value or "\n" in value:
                self.fail(where, value_node, "must not contain a line break")
                continue
            headers.append((name, value))
        return tuple(headers)

    def rules(self, node: yaml.Node) -> tuple[RuleConfig, ...]:
        rules = []
        items = self.sequence("rules", node)
        if isinstance(node, yaml.SequenceNode) and not items:
            self.fail(
                "rules",
                node,
                "must list at least one rule (leave `rules` out for the local-development default)",
            )
        for index, item in enumerate(items):
            rule = self.rule(f"rules[{index}]", item)
            if rule is not None:
                rules.append(rule)
        return tuple(rules)

    def rule(self, where: str, node: yaml.Node) -> RuleConfig | None:
        keys = self.mapping(where, node, RULE_KEYS)
        if not isinstance(node, yaml.MappingNode):
            return None
        errors_before = len(self.errors)
        path = "/**"
        if "path" in keys:
            path = self.string(f"{where}.path", keys["path"]) or path
            try:
                compile_glob(path)
            except GlobError as error:
                self.fail(f"{where}.path", keys["path"], str(error))
        if "origins" not in keys:
            self.fail(
                f"{where}.origins",
                node,
                "missing: list the origins this rule allows, e.g. ['http://localhost:5173']",
            )
            origins: tuple[str, ...] = ()
        else:
            origins = self.strings(f"{where}.origins", keys["origins"], origin_problem)
            if isinstance(keys["origins"], yaml.SequenceNode) and not keys["origins"].value:
                self.fail(f"{where}.origins", keys["origins"], "must list at least one origin")
        methods: tuple[str, ...] = DEFAULT_METHODS
        if "allow_methods" in keys:
            methods = self.strings(f"{where}.allow_methods", keys["allow_methods"], _method_problem)
        allow_headers: tuple[str, ...] = ()
        if "allow_headers" in keys:
            allow_headers = self.strings(f"{where}.allow_headers", keys["allow_headers"], _header_problem)
        expose: tuple[str, ...] = ()
        if "expose_headers" in keys:
            expose = self.strings(f"{where}.expose_headers", keys["expose_headers"], _header_problem)
        credentials = False
        if "allow_credentials" in keys:
            credentials = bool(self.boolean(f"{where}.allow_credentials", keys["allow_credentials"]))
            if credentials and "*" in origins:
                # Fetch standard, CORS check: a credentialed response with ACAO "*" is
                # rejected by every browser, so this rule could never work.
                self.fail(
                    f"{where}.allow_credentials",
                    keys["allow_credentials"],
                    "cannot be true with origins ['*']: browsers reject '*' with credentials; "
                    "list the exact origins instead, e.g. ['http://localhost:5173']",
                )
        max_age = None
        if "max_age" in keys:
            value = keys["max_age"]
            max_age_value = self.value(value) if isinstance(value, yaml.ScalarNode) else None
            if isinstance(max_age_value, bool) or not isinstance(max_age_value, int) or max_age_value < 0:
                shown = value.value if isinstance(value, yaml.ScalarNode) else "a list or mapping"
                self.fail(f"{where}.max_age", value, f"must be a non-negative integer, got {shown}")
            else:
                max_age = max_age_value
        private_network = False
        if "allow_private_network" in keys:
            private_network = bool(
                self.boolean(f"{where}.allow_private_network", keys["allow_private_network"])
            )
        if len(self.errors) != errors_before:
            return None
        return RuleConfig(
            origins=origins,
            path=path,
            allow_methods=methods,
            allow_headers=allow_headers,
            expose_headers=expose,
            allow_credentials=credentials,
            max_age=max_age,
            allow_private_network=private_network,
            line=node.start_mark.line + 1,
        )


def upstream_problem(url: str, shown: str | None = None) -> str | None:
    """Why ``url`` cannot be an upstream base URL, or None when it can. ``shown`` is the
    text before ${VAR} expansion: the message must not reveal a secret."""
    if re.match(r"^https?://[^/?#@\s]+(/[^?#\s]*)?$", url):
        return None
    if "://" not in url and (shown is None or shown == url):
        hint = f"; did you mean 'https://{url}'?"
    elif re.match(r"^https?://[^/?#]*@", url):
        hint = "; put credentials in request_headers, not in the URL"
    elif re.match(r"^https?://", url):
        hint = "; the upstream is a base URL: no query string or fragment"
    else:
        hint = ""
    return f"must be an http:// or https:// URL, got {shown or url!r}{hint}"


def origin_problem(text: str) -> str | None:
    try:
        parse_origin_pattern(text)
    except OriginPatternError as error:
        return str(error)
    return None


def _method_problem(text: str) -> str | None:
    if text == "*" or TOKEN.match(text):
        return None
    return f"{text!r} is not an HTTP method"


def _header_problem(text: str) -> str | None:
    if text == "*" or TOKEN.match(text):
        return None
    return f"{text!r} is not a header name"
