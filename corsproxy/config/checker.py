"""Validate a YAML configuration, collecting every error with its key path and line.

The YAML is composed into nodes rather than loaded into plain objects, so that each
value still knows the line it came from. Every check appends to one list and carries
on, so the user sees all their mistakes in one run.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from dotenv import dotenv_values

from corsproxy.config.model import (
    FAIL_MODES,
    REPLAY_MISSES,
    Config,
    ConfigError,
    CookieConfig,
    FailConfig,
    InspectorConfig,
    MockConfig,
    Problem,
    RecordConfig,
    ReplayConfig,
    RouteConfig,
    RouteInspector,
    RuleConfig,
    ServerConfig,
    ServerTLS,
    SimulateConfig,
    UpstreamTLS,
)
from corsproxy.har.reader import HarError, read_har
from corsproxy.har.writer import check_appendable
from corsproxy.headers import TOKEN
from corsproxy.patterns.globs import GlobError, compile_glob
from corsproxy.patterns.origins import (
    LOCAL_DEV_ORIGINS,
    OriginPatternError,
    likely_scheme,
    parse_origin_pattern,
)
from corsproxy.tls import client_ssl_context

T = TypeVar("T")

TOP_KEYS = (
    "server",
    "upstream",
    "routes",
    "rules",
    "mocks",
    "record",
    "replay",
    "simulate",
    "seed",
    "inspector",
    "env_file",
)
COOKIE_CHOICES = {
    "domain": ("rewrite", "keep"),
    "secure": ("auto", "keep"),
    "samesite": ("auto", "keep", "Lax", "Strict", "None"),
    "path": ("rewrite", "keep"),
}
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


def parse_config(text: str, source: str, env: Mapping[str, str], base_dir: Path | None = None) -> Config:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError([f"not valid YAML: {error.problem or error}{where}"], source) from error
    except yaml.YAMLError as error:
        raise ConfigError([f"not valid YAML: {error}"], source) from error
    try:
        # Constructing every value once up front turns a bad explicit tag (`!!int abc`,
        # `!!timestamp 1`) into an error here, so the checks below construct values freely.
        # PyYAML's constructors raise all sorts of exceptions for such input.
        yaml.safe_load(text)
    except Exception as error:
        raise ConfigError([f"not valid YAML: {type(error).__name__}: {error}"], source) from error
    return _Checker(source, env, base_dir or Path.cwd()).config(root)


class _Checker:
    def __init__(self, source: str, env: Mapping[str, str], base_dir: Path) -> None:
        self.source = source
        self.env = env
        self.base_dir = base_dir
        self.env_file: str | None = None
        self.problems: list[Problem] = []
        self.secrets: set[str] = set()
        self.secret_names: dict[str, str] = {}
        self._constructor = yaml.constructor.SafeConstructor()

    # -- reporting -------------------------------------------------------------

    def fail(self, path: str, node: yaml.Node, message: str) -> None:
        line = node.start_mark.line + 1
        # Kept in file order, so the list reads top to bottom like the file.
        at = sum(1 for seen in self.problems if seen.line is not None and seen.line <= line)
        self.problems.insert(at, Problem(message, path, line))

    def section(
        self, where: str, node: yaml.Node, fields: Mapping[str, Reader]
    ) -> tuple[dict[str, Any], dict[str, yaml.Node]]:
        """A mapping read through its field table: every key checked by its reader, unknown
        keys refused. Returns the values that passed (the dataclass's defaults stand for the
        rest) and the nodes by key."""
        keys = self.mapping(where, node, tuple(fields))
        values: dict[str, Any] = {}
        for key, value_node in keys.items():
            value = fields[key](self, f"{where}.{key}" if where else key, value_node)
            if value is not None:
                values[key] = value
        return values, keys

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

    def seconds(self, path: str, node: yaml.Node) -> float | None:
        if not isinstance(node, yaml.ScalarNode):
            self.fail(path, node, "must be a number of seconds")
            return None
        value = self.value(node)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
            self.fail(path, node, f"must be a positive number of seconds, got {node.value!r}")
            return None
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
                self.secret_names.setdefault(value, name)
            return value

        return ENV_REFERENCE.sub(substitute, text)

    # -- sections ----------------------------------------------------------------

    def config(self, root: yaml.Node | None) -> Config:
        if root is None:
            raise ConfigError(["the file is empty: give at least `upstream:` or `routes:`"], self.source)
        top = self.mapping("", root, TOP_KEYS)
        if not top and self.problems:
            raise ConfigError(self.problems, self.source)
        self.load_env_file(top.get("env_file"))
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
        elif "mocks" not in top and "replay" not in top:
            # With mocks or a replay alone, the proxy answers for an API that does not
            # exist yet, or cannot be reached.
            self.fail(
                "upstream", root, "missing: give `upstream: URL`, a list of `routes`, `mocks` or `replay`"
            )
        rules = self.rules(top["rules"]) if "rules" in top else (default_rule(),)
        mocks = self.mocks(top["mocks"]) if "mocks" in top else ()
        record = self.record(top["record"]) if "record" in top else None
        replay = self.replay(top["replay"]) if "replay" in top else None
        simulate = self.simulations(top["simulate"]) if "simulate" in top else ()
        seed = self.scalar("seed", top["seed"], int, "an integer") if "seed" in top else None
        inspector = (
            InspectorConfig(**self.section("inspector", top["inspector"], INSPECTOR_FIELDS)[0])
            if "inspector" in top
            else InspectorConfig()
        )
        if self.problems:
            raise ConfigError(self.problems, self.source)
        return Config(
            routes=routes,
            rules=rules,
            server=server,
            mocks=mocks,
            record=record,
            replay=replay,
            simulate=simulate,
            seed=seed,
            inspector=inspector,
            source=self.source,
            secrets=frozenset(self.secrets),
            secret_names=tuple(self.secret_names.items()),
            env_file=self.env_file,
        )

    def load_env_file(self, node: yaml.Node | None) -> None:
        """Variables from a .env file (python-dotenv's format); the real environment wins.
        Without an ``env_file`` key, a .env beside the config file is read if there is one."""
        if node is None:
            candidate = self.base_dir / ".env"
            if not candidate.is_file():
                return
        else:
            name = self.string("env_file", node)
            if name is None:
                return
            candidate = self.base_dir / name
            if not candidate.is_file():
                self.fail("env_file", node, f"{str(candidate)!r} does not exist")
                return
        values = {key: value for key, value in dotenv_values(candidate).items() if value is not None}
        self.env = {**values, **self.env}
        self.env_file = str(candidate)

    # -- small value kinds ---------------------------------------------------------

    def positive_int(self, path: str, node: yaml.Node) -> int | None:
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            shown = node.value if isinstance(node, yaml.ScalarNode) else "a list or mapping"
            self.fail(path, node, f"must be a positive integer, got {shown}")
            return None
        return value

    def choice(self, path: str, node: yaml.Node, choices: tuple[str, ...]) -> str | None:
        text = self.string(path, node)
        if text is not None and text not in choices:
            self.fail(path, node, f"must be one of {', '.join(choices)}, got {text!r}")
            return None
        return text

    def existing_file(self, path: str, node: yaml.Node) -> str | None:
        text = self.string(path, node)
        if text is None:
            return None
        resolved = self.base_dir / self.expand(path, node, text)
        if not resolved.is_file():
            self.fail(path, node, f"no such file: {str(resolved)!r}")
            return None
        return str(resolved)

    def port(self, path: str, node: yaml.Node) -> int | None:
        value = self.scalar(path, node, int, "a port number")
        if value is not None and not 0 <= value <= 65535:
            self.fail(path, node, f"must be between 0 and 65535, got {value}")
            return None
        return value

    def non_negative_int(self, path: str, node: yaml.Node) -> int | None:
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            shown = node.value if isinstance(node, yaml.ScalarNode) else "a list or mapping"
            self.fail(path, node, f"must be a non-negative integer, got {shown}")
            return None
        return value

    def server(self, node: yaml.Node) -> ServerConfig:
        values, _ = self.section("server", node, SERVER_FIELDS)
        return ServerConfig(**values)

    def server_tls(self, path: str, node: yaml.Node) -> ServerTLS | None:
        if isinstance(node, yaml.ScalarNode) and node.value == "auto":
            return ServerTLS(auto=True)
        if not isinstance(node, yaml.MappingNode):
            self.fail(path, node, "must be `auto` or a mapping with cert and key")
            return None
        keys = self.mapping(path, node, ("cert", "key"))
        if "cert" not in keys or "key" not in keys:
            self.fail(path, node, "needs both cert and key (or write `tls: auto`)")
            return None
        cert = self.existing_file(f"{path}.cert", keys["cert"])
        key = self.existing_file(f"{path}.key", keys["key"])
        return ServerTLS(cert, key) if cert and key else None

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
            values, keys = self.section(where, item, ROUTE_FIELDS)
            if not isinstance(item, yaml.MappingNode):
                continue
            prefix = values.setdefault("path", "/")
            if prefix in seen:
                self.fail(
                    f"{where}.path",
                    keys.get("path", item),
                    f"{prefix!r} is already the path of routes[{seen[prefix]}]",
                )
            seen[prefix] = index
            if "upstream" not in keys:
                self.fail(f"{where}.upstream", item, "missing: the base URL to forward to")
            elif "upstream" in values:
                routes.append(RouteConfig(**values, line=item.start_mark.line + 1))
        return tuple(routes)

    def cookies(self, path: str, node: yaml.Node) -> CookieConfig:
        values, _ = self.section(path, node, COOKIE_FIELDS)
        return CookieConfig(**values)

    def rewrite_origin(self, path: str, node: yaml.Node) -> str | None:
        text = self.string(path, node)
        if text is None or text in ("keep", "upstream", "none"):
            return text
        if text == "*" or "*" in text or text.startswith("regex:") or origin_problem(text):
            self.fail(path, node, f"must be keep, upstream, none or an exact origin, got {text!r}")
            return None
        return text

    def path_rewrites(self, path: str, node: yaml.Node) -> tuple[tuple[str, str], ...]:
        rewrites = []
        for index, item in enumerate(self.sequence(path, node)):
            where = f"{path}[{index}]"
            keys = self.mapping(where, item, ("match", "replace"))
            if "match" not in keys or "replace" not in keys:
                if isinstance(item, yaml.MappingNode):
                    self.fail(where, item, "needs both match (a regex) and replace (a template like /v2/\\1)")
                continue
            pattern = self.string(f"{where}.match", keys["match"])
            template = self.string(f"{where}.replace", keys["replace"])
            if pattern is None or template is None:
                continue
            try:
                compiled = re.compile(pattern)
            except (re.error, OverflowError, RecursionError) as error:
                self.fail(f"{where}.match", keys["match"], f"does not compile: {error}")
                continue
            # A bad group reference must fail here, at load, not on some later request.
            problem = _template_problem(template, compiled)
            if problem:
                self.fail(f"{where}.replace", keys["replace"], problem)
                continue
            rewrites.append((pattern, template))
        return tuple(rewrites)

    def upstream_tls(self, path: str, node: yaml.Node) -> UpstreamTLS:
        values, keys = self.section(path, node, UPSTREAM_TLS_FIELDS)
        tls = UpstreamTLS(**values)
        if all(name in values for name in keys if name != "verify"):
            try:
                # Built once here so a bad certificate is a config error with a line,
                # not a failure on the first request.
                client_ssl_context(tls.verify, tls.ca_file, tls.client_cert, tls.client_key)
            except ValueError as error:
                self.fail(path, node, str(error))
        return tls

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
        return self.string_mapping(path, node, "header name to value", _header_name_problem)

    def string_mapping(
        self, path: str, node: yaml.Node, shape: str, name_problem: Callable[[str], str | None] | None = None
    ) -> tuple[tuple[str, str], ...]:
        """A mapping of names to string values, ${VAR} expanded; each bad name or value
        is a problem at its own line."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(path, node, f"must be a mapping of {shape}")
            return ()
        pairs = []
        for key_node, value_node in node.value:
            name = str(self.value(key_node))
            where = f"{path}.{name}"
            problem = None if name_problem is None else name_problem(name)
            if problem is not None:
                self.fail(where, key_node, problem)
                continue
            raw = self.value(value_node) if isinstance(value_node, yaml.ScalarNode) else None
            if raw is None or isinstance(raw, bool) or not isinstance(raw, str | int | float):
                self.fail(where, value_node, "must be a string value")
                continue
            value = self.expand(where, value_node, str(raw))
            if "\r" in value or "\n" in value:
                self.fail(where, value_node, "must not contain a line break")
                continue
            pairs.append((name, value))
        return tuple(pairs)

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
        problems_before = len(self.problems)
        values, keys = self.section(where, node, RULE_FIELDS)
        if not isinstance(node, yaml.MappingNode):
            return None
        if "origins" not in keys:
            self.fail(
                f"{where}.origins",
                node,
                "missing: list the origins this rule allows, e.g. ['http://localhost:5173']",
            )
        if values.get("allow_credentials") and "*" in values.get("origins", ()):
            # Fetch standard, CORS check: a credentialed response with ACAO "*" is
            # rejected by every browser, so this rule could never work.
            self.fail(
                f"{where}.allow_credentials",
                keys["allow_credentials"],
                "cannot be true with origins ['*']: browsers reject '*' with credentials; "
                "list the exact origins instead, e.g. ['http://localhost:5173']",
            )
        if len(self.problems) != problems_before:
            return None
        return RuleConfig(**values, line=node.start_mark.line + 1)

    def rule_path(self, path: str, node: yaml.Node) -> str | None:
        text = self.string(path, node)
        if not text:
            return None  # an empty path is the default, /**
        try:
            compile_glob(text)
        except GlobError as error:
            self.fail(path, node, str(error))
            return None
        return text

    def origins(self, path: str, node: yaml.Node) -> tuple[str, ...]:
        origins = self.strings(path, node, origin_problem)
        if isinstance(node, yaml.SequenceNode) and not node.value:
            self.fail(path, node, "must list at least one origin")
        return origins

    # -- mocks -------------------------------------------------------------------

    def mocks(self, node: yaml.Node) -> tuple[MockConfig, ...]:
        mocks = []
        for index, item in enumerate(self.sequence("mocks", node)):
            mock = self.mock(f"mocks[{index}]", item)
            if mock is not None:
                mocks.append(mock)
        return tuple(mocks)

    def mock(self, where: str, node: yaml.Node) -> MockConfig | None:
        problems_before = len(self.problems)
        values, keys = self.section(where, node, MOCK_FIELDS)
        if not isinstance(node, yaml.MappingNode):
            return None
        if "path" not in keys:
            self.fail(f"{where}.path", node, "missing: the path (a glob, as in rules) this mock answers")
        given = [key for key in MOCK_BODIES if key in keys]
        if len(given) > 1:
            self.fail(
                f"{where}.{given[1]}",
                keys[given[1]],
                f"give one of {', '.join(MOCK_BODIES)}, not {' and '.join(given)}",
            )
        status = values.get("status", 200)
        if status in (204, 304) and given:
            # RFC 9110 sections 15.3.5 and 15.4.5: these answers have no content.
            self.fail(f"{where}.{given[0]}", keys[given[0]], f"a {status} answer has no body")
        if len(self.problems) != problems_before:
            return None
        return MockConfig(**values, line=node.start_mark.line + 1)

    def mock_path(self, path: str, node: yaml.Node) -> str | None:
        text = self.string(path, node)
        if text is None:
            return None
        if not text.startswith("/"):
            self.fail(path, node, f"must be a glob starting with '/', got {text!r}")
            return None
        if text.startswith("/__corsproxy"):
            self.fail(path, node, "the /__corsproxy/ prefix belongs to the proxy itself")
            return None
        return self.rule_path(path, node)

    def mock_methods(self, path: str, node: yaml.Node) -> tuple[str, ...]:
        """One method or a list of them; case as written, as the request's is compared."""
        if isinstance(node, yaml.ScalarNode):
            text = self.string(path, node)
            problem = None if text is None else _method_problem(text)
            if problem is not None:
                self.fail(path, node, problem)
            return () if text is None or problem is not None or text == "*" else (text,)
        methods = self.strings(path, node, _method_problem)
        return () if "*" in methods else methods

    def mock_query(self, path: str, node: yaml.Node) -> tuple[tuple[str, str], ...]:
        return self.string_mapping(path, node, 'parameter to value, e.g. {page: "2"}')

    def mock_status(self, path: str, node: yaml.Node) -> int | None:
        value = self.scalar(path, node, int, "an HTTP status")
        if value is not None and not 200 <= value <= 599:
            reason = "; 1xx are not final answers" if 100 <= value < 200 else ""
            self.fail(path, node, f"must be a status from 200 to 599, got {value}{reason}")
            return None
        return value

    def mock_headers(self, path: str, node: yaml.Node) -> tuple[tuple[str, str], ...]:
        return self.string_mapping(path, node, "header name to value", _mock_header_problem)

    def mock_json(self, path: str, node: yaml.Node) -> str | None:
        try:
            return json.dumps(self.value(node), ensure_ascii=False)
        except (TypeError, ValueError) as error:
            self.fail(path, node, f"is not JSON data: {error}")
            return None

    def mock_body(self, path: str, node: yaml.Node) -> str | None:
        return self.string(path, node)

    # -- recording and replay ------------------------------------------------------

    def record(self, node: yaml.Node) -> RecordConfig | None:
        """``record: FILE.har`` or ``record: {file, max_body}``."""
        if isinstance(node, yaml.ScalarNode):
            file = self.record_file("record", node)
            return None if file is None else RecordConfig(file, line=node.start_mark.line + 1)
        values, keys = self.section("record", node, RECORD_FIELDS)
        if isinstance(node, yaml.MappingNode) and "file" not in keys:
            self.fail("record.file", node, "missing: the HAR file to record to")
        if "file" not in values:
            return None
        return RecordConfig(**values, line=node.start_mark.line + 1)

    def record_file(self, path: str, node: yaml.Node) -> str | None:
        text = self.string(path, node)
        if text is None:
            return None
        resolved = self.base_dir / self.expand(path, node, text)
        problem = check_appendable(resolved)
        if problem is not None:
            self.fail(path, node, f"cannot record there: {problem}")
            return None
        return str(resolved)

    def replay(self, node: yaml.Node) -> ReplayConfig | None:
        """``replay: FILE.har`` or ``replay: {file, miss}``; the file is read now."""
        if isinstance(node, yaml.ScalarNode):
            values: dict[str, Any] = {}
            file = self.existing_file("replay", node)
            if file is not None:
                values["file"] = file
            keys: dict[str, yaml.Node] = {"file": node}
        else:
            values, keys = self.section("replay", node, REPLAY_FIELDS)
            if isinstance(node, yaml.MappingNode) and "file" not in keys:
                self.fail("replay.file", node, "missing: the HAR file to answer from")
        if "file" not in values:
            return None
        where = "replay.file" if isinstance(node, yaml.MappingNode) else "replay"
        try:
            entries = read_har(Path(values["file"]))
        except HarError as error:
            for problem in error.problems:
                self.fail(where, keys["file"], f"cannot replay it: {problem}")
            return None
        return ReplayConfig(**values, entries=entries, line=node.start_mark.line + 1)

    def byte_size(self, path: str, node: yaml.Node, allow_zero: bool = False) -> int | None:
        """A number of bytes: an integer, or a number with a unit (``512KB``, ``10MiB``;
        KB = 1000 bytes, KiB = 1024)."""
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (value > 0 or (allow_zero and value == 0))
        ):
            return value
        match = BYTE_SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None or float(match[1]) <= 0:
            shown = node.value if isinstance(node, yaml.ScalarNode) else "a list or mapping"
            self.fail(path, node, f"must be a size in bytes such as 1048576, 512KB or 10MiB, got {shown}")
            return None
        return int(float(match[1]) * BYTE_UNITS[(match[2] or "b").lower()])

    def replay_miss(self, path: str, node: yaml.Node) -> str | None:
        # `miss: 404` is a number in YAML: taken as the word it is meant as.
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        if text not in REPLAY_MISSES:
            shown = node.value if isinstance(node, yaml.ScalarNode) else "a list or mapping"
            self.fail(path, node, f"must be one of {', '.join(REPLAY_MISSES)}, got {shown!r}")
            return None
        return text

    # -- simulated bad networks ----------------------------------------------------

    def simulations(self, node: yaml.Node) -> tuple[SimulateConfig, ...]:
        entries = []
        for index, item in enumerate(self.sequence("simulate", node)):
            entry = self.simulation(f"simulate[{index}]", item)
            if entry is not None:
                entries.append(entry)
        return tuple(entries)

    def simulation(self, where: str, node: yaml.Node) -> SimulateConfig | None:
        problems_before = len(self.problems)
        values, keys = self.section(where, node, SIMULATE_FIELDS)
        if not isinstance(node, yaml.MappingNode):
            return None
        if "path" not in keys:
            self.fail(f"{where}.path", node, "missing: the path (a glob, as in rules) this entry applies to")
        if not any(key in keys for key in SIMULATE_EFFECTS):
            self.fail(where, node, f"does nothing: give at least one of {', '.join(SIMULATE_EFFECTS)}")
        if len(self.problems) != problems_before:
            return None
        return SimulateConfig(**values, line=node.start_mark.line + 1)

    def latency(self, path: str, node: yaml.Node) -> tuple[float, float] | None:
        """``300ms``, ``1.5s``, or a range ``200ms..1500ms`` (uniform)."""
        text = str(self.value(node)) if isinstance(node, yaml.ScalarNode) else None
        low_text, dots, high_text = (text or "").partition("..")
        low = _duration(low_text)
        high = _duration(high_text) if dots else low
        if low is None or high is None:
            shown = node.value if isinstance(node, yaml.ScalarNode) else "a list or mapping"
            self.fail(
                path,
                node,
                f"must be a duration such as 300ms or 1.5s, or a range 200ms..1500ms, got {shown!r}",
            )
            return None
        if high < low:
            self.fail(path, node, f"the range ends before it starts: {text}")
            return None
        return (low, high)

    def throttle(self, path: str, node: yaml.Node) -> int | None:
        """A rate such as ``50KB/s`` (KB = 1000 bytes, KiB = 1024)."""
        text = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        match = BYTE_RATE.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None or float(match[1]) <= 0:
            shown = node.value if isinstance(node, yaml.ScalarNode) else "a list or mapping"
            self.fail(path, node, f"must be a rate such as 50KB/s, 1MB/s or 512KiB/s, got {shown!r}")
            return None
        return max(1, int(float(match[1]) * BYTE_UNITS[(match[2] or "b").lower()]))

    def fail_entry(self, path: str, node: yaml.Node) -> FailConfig | None:
        problems_before = len(self.problems)
        values, keys = self.section(path, node, FAIL_FIELDS)
        if not isinstance(node, yaml.MappingNode):
            return None
        if "rate" in keys and "every" in keys:
            self.fail(f"{path}.every", keys["every"], "give rate or every, not both")
        elif "rate" not in keys and "every" not in keys:
            self.fail(path, node, "say how often: rate (0 to 1, at random) or every: N (every N-th request)")
        mode = values.get("mode", "status")
        for key in ("status", "retry_after"):
            if key in keys and mode != "status":
                self.fail(
                    f"{path}.{key}", keys[key], f"a {mode} sends no answer: {key} goes with mode: status"
                )
        if len(self.problems) != problems_before:
            return None
        return FailConfig(**values)

    def fail_rate(self, path: str, node: yaml.Node) -> float | None:
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            shown = node.value if isinstance(node, yaml.ScalarNode) else "a list or mapping"
            self.fail(
                path, node, f"must be a number from 0 to 1 (the share of requests that fail), got {shown}"
            )
            return None
        return float(value)


Reader = Callable[[_Checker, str, yaml.Node], Any]


def _strings(problem: Callable[[str], str | None]) -> Reader:
    """A reader of a list of strings, each checked by ``problem``."""
    return lambda checker, path, node: checker.strings(path, node, problem)


def _choice(choices: tuple[str, ...]) -> Reader:
    return lambda checker, path, node: checker.choice(path, node, choices)


# The field tables: one reader per key, each key a field of the dataclass it fills
# (tests/test_config.py holds the tables to the dataclasses). Where a reader returns
# nothing, the problem is recorded and the dataclass's own default stands.
SERVER_FIELDS: dict[str, Reader] = {
    # An empty host is the default (loopback), never "every interface".
    "host": lambda checker, path, node: checker.string(path, node) or None,
    "port": _Checker.port,
    "allowed_hosts": _strings(lambda text: _host_problem(text)),
    "tls": _Checker.server_tls,
    "max_header_size": _Checker.positive_int,
    "max_upstream_connections": _Checker.positive_int,
}
COOKIE_FIELDS: dict[str, Reader] = {name: _choice(choices) for name, choices in COOKIE_CHOICES.items()}
UPSTREAM_TLS_FIELDS: dict[str, Reader] = {
    "verify": _Checker.boolean,
    "ca_file": _Checker.existing_file,
    "client_cert": _Checker.existing_file,
    "client_key": _Checker.existing_file,
}
ROUTE_FIELDS: dict[str, Reader] = {
    "path": _Checker.route_prefix,
    "upstream": _Checker.upstream_url,
    "strip_prefix": _Checker.boolean,
    "request_headers": _Checker.request_headers,
    "remove_request_headers": _strings(lambda text: _header_problem(text)),
    "rewrite_origin": _Checker.rewrite_origin,
    "path_rewrites": _Checker.path_rewrites,
    "cookies": _Checker.cookies,
    "rewrite_redirects": _Checker.boolean,
    "tls": _Checker.upstream_tls,
    "connect_timeout": _Checker.seconds,
    "read_timeout": _Checker.seconds,
    "max_body_size": _Checker.positive_int,
    "refuse_disallowed_origins": _Checker.boolean,
    "inspector": lambda checker, path, node: RouteInspector(
        **checker.section(path, node, ROUTE_INSPECTOR_FIELDS)[0]
    ),
}
ROUTE_INSPECTOR_FIELDS: dict[str, Reader] = {"bodies": _Checker.boolean}
MOCK_FIELDS: dict[str, Reader] = {
    "path": _Checker.mock_path,
    "method": _Checker.mock_methods,
    "query": _Checker.mock_query,
    "status": _Checker.mock_status,
    "headers": _Checker.mock_headers,
    "json": _Checker.mock_json,
    "body": _Checker.mock_body,
    "file": _Checker.existing_file,
}
MOCK_BODIES = ("json", "body", "file")
RECORD_FIELDS: dict[str, Reader] = {
    "file": _Checker.record_file,
    "max_body": _Checker.byte_size,
}
REPLAY_FIELDS: dict[str, Reader] = {
    "file": _Checker.existing_file,
    "miss": _Checker.replay_miss,
}
INSPECTOR_FIELDS: dict[str, Reader] = {
    "max_body": lambda checker, path, node: checker.byte_size(path, node, allow_zero=True),
    "max_total": _Checker.byte_size,
}
SIMULATE_EFFECTS = ("latency", "throttle", "fail")
SIMULATE_FIELDS: dict[str, Reader] = {
    "path": _Checker.mock_path,
    "method": _Checker.mock_methods,
    "latency": _Checker.latency,
    "throttle": _Checker.throttle,
    "fail": _Checker.fail_entry,
}
FAIL_FIELDS: dict[str, Reader] = {
    "rate": _Checker.fail_rate,
    "every": _Checker.positive_int,
    "mode": _choice(FAIL_MODES),
    "status": _Checker.mock_status,
    "retry_after": _Checker.non_negative_int,
}
BYTE_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)/s", re.IGNORECASE)
DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s)")
BYTE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
BYTE_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?", re.IGNORECASE)
MOCK_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "content-encoding"})
RULE_FIELDS: dict[str, Reader] = {
    "path": _Checker.rule_path,
    "origins": _Checker.origins,
    "allow_methods": _strings(lambda text: _method_problem(text)),
    "allow_headers": _strings(lambda text: _header_problem(text)),
    "expose_headers": _strings(lambda text: _header_problem(text)),
    "allow_credentials": _Checker.boolean,
    "max_age": _Checker.non_negative_int,
    "allow_private_network": _Checker.boolean,
}


def _duration(text: str) -> float | None:
    """Seconds in ``300ms`` or ``1.5s``; None when it is not such a duration."""
    match = DURATION.fullmatch(text.strip())
    if match is None:
        return None
    return float(match[1]) / (1000 if match[2] == "ms" else 1)


def parse_mock_entry(data: Any, base_dir: Path) -> MockConfig:
    """One ``mocks`` entry given as data (the inspector's "mock this"): checked as the
    file's entries are; raises ConfigError naming each bad key."""
    checker = _Checker("the mock", {}, base_dir)
    node = yaml.compose(json.dumps(data))
    entry = checker.mock("", node) if node is not None else None
    if checker.problems or entry is None:
        problems = checker.problems or [Problem("must be a mapping with a path")]
        raise ConfigError(
            [Problem(problem.message, problem.path.lstrip(".")) for problem in problems], "the mock"
        )
    return entry


def parse_simulate_entry(data: Any) -> SimulateConfig:
    """One ``simulate`` entry given as data (the inspector's API): checked as the file's
    entries are; raises ConfigError naming each bad key."""
    checker = _Checker("the entry", {}, Path.cwd())
    node = yaml.compose(json.dumps(data))
    entry = checker.simulation("", node) if node is not None else None
    if checker.problems or entry is None:
        problems = checker.problems or [
            Problem("must be a mapping with a path and latency, throttle or fail")
        ]
        raise ConfigError([Problem(problem.message, problem.path) for problem in problems], "the entry")
    return entry


def upstream_problem(url: str, shown: str | None = None) -> str | None:
    """Why ``url`` cannot be an upstream base URL, or None when it can. ``shown`` is the
    text before ${VAR} expansion: the message must not reveal a secret."""
    if re.fullmatch(r"https?://[^/?#@\s]+(/[^?#\s]*)?", url):
        return None
    if "://" not in url and (shown is None or shown == url):
        hint = f"; did you mean '{likely_scheme(url)}://{url}'?"
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


def _template_problem(template: str, pattern: re.Pattern[str]) -> str | None:
    for number, name in re.findall(r"\\(\d+)|\\g<(\w+)>", template):
        if number and int(number) > pattern.groups:
            return f"refers to group {number}, but the match has {pattern.groups} group(s)"
        if name and not name.isdigit() and name not in pattern.groupindex:
            return f"refers to group {name!r}, which the match does not define"
        if name.isdigit() and int(name) > pattern.groups:
            return f"refers to group {name}, but the match has {pattern.groups} group(s)"
    return None


def _host_problem(text: str) -> str | None:
    if text == "*" or re.fullmatch(r"(\*\.)?[A-Za-z0-9.-]+|\[[0-9a-fA-F:.]+\]", text):
        return None
    return f"{text!r} is not a host name (no scheme or port: 'myapp.test', '*.myapp.test')"


def _header_name_problem(name: str) -> str | None:
    return None if TOKEN.match(name) else "is not a valid header name"


def _mock_header_problem(name: str) -> str | None:
    lower = name.lower()
    if lower.startswith("access-control-"):
        return "cannot be set on a mock: CORS headers come from the rules, as on every answer"
    if lower in MOCK_FRAMING_HEADERS:
        return "cannot be set on a mock: the proxy sets the message framing from the body it sends"
    return _header_name_problem(name)


def _header_problem(text: str) -> str | None:
    if text == "*" or TOKEN.match(text):
        return None
    return f"{text!r} is not a header name"
