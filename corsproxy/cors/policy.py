"""Pure CORS decisions: strings in, a Decision out, no I/O.

Everything that depends only on the configuration (compiled globs and origin
patterns, joined header values) is computed once in CompiledRule; the per-request
path looks rules up, checks, and copies prepared header tuples. Decisions are
cached per (rule, origin[, method, requested headers]) in bounded dictionaries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from corsproxy.config.model import RuleConfig
from corsproxy.headers import TOKEN, split_list
from corsproxy.patterns.globs import compile_glob
from corsproxy.patterns.origins import near_misses, parse_origin_pattern

ACAO = "Access-Control-Allow-Origin"
ACAC = "Access-Control-Allow-Credentials"
ACAM = "Access-Control-Allow-Methods"
ACAH = "Access-Control-Allow-Headers"
ACEH = "Access-Control-Expose-Headers"
ACMA = "Access-Control-Max-Age"
ACAPN = "Access-Control-Allow-Private-Network"

# Fetch standard, "CORS-safelisted response-header name": always readable by scripts.
SAFELISTED_RESPONSE_HEADERS = frozenset(
    {
        "cache-control",
        "content-language",
        "content-length",
        "content-type",
        "expires",
        "last-modified",
        "pragma",
    }
)

# Fetch standard, "CORS-safelisted method", compared byte for byte: fetch() upper-cases
# these names itself, so a preflight asking for one of them passes any allow_methods.
SAFELISTED_METHODS = frozenset({"GET", "HEAD", "POST"})

CACHE_LIMIT = 4096

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the proxy does about one request's CORS: the headers to add, and why."""

    allowed: bool
    reason: str
    rule: int | None = None
    headers: Headers = ()
    # expose_headers ["*"] with credentials: "*" would be a literal header name to the
    # browser (Fetch standard, CORS protocol), so the response's own names are listed.
    expose_response_headers: bool = False
    # Allowed by a rule, yet the browser will block the answer, and why: the page sent
    # credentials that the rule does not allow (Fetch standard, CORS check: no ACAC).
    browser_blocks: str | None = None


NO_ORIGIN = Decision(True, "no Origin header: not a CORS request, passed through")


class CompiledRule:
    """One rule with its patterns compiled and its static header values prepared."""

    __slots__ = (
        "acah_static",
        "acam_static",
        "any_header",
        "any_method",
        "any_origin",
        "credentials",
        "expose_value",
        "header_names",
        "index",
        "label",
        "max_age",
        "methods",
        "path_regex",
        "patterns",
        "rule",
        "where",
    )

    def __init__(self, index: int, rule: RuleConfig, source: str = "") -> None:
        self.index = index
        self.rule = rule
        self.label = f"rules[{index}] (path {rule.path})"
        # Where to make the change: " (line 19 of corsproxy.yaml)", so that a fix names
        # the file as well as the key; empty for rules from the command line.
        self.where = ""
        if rule.line:
            self.where = f" (line {rule.line} of {source})" if source else f" (line {rule.line})"
        self.path_regex: re.Pattern[str] | None = compile_glob(rule.path)
        self.patterns = tuple(parse_origin_pattern(text) for text in rule.origins)
        self.any_origin = "*" in rule.origins
        self.credentials = rule.allow_credentials
        self.any_method = "*" in rule.allow_methods
        self.methods = frozenset(rule.allow_methods)
        self.any_header = "*" in rule.allow_headers
        self.header_names = frozenset(name.lower() for name in rule.allow_headers if name != "*")
        self.acam_static = ", ".join(rule.allow_methods)
        self.acah_static = ", ".join(rule.allow_headers)
        expose = rule.expose_headers
        if "*" in expose and self.credentials:
            expose = tuple(name for name in expose if name != "*")
        self.expose_value = ", ".join(expose)
        self.max_age = None if rule.max_age is None else str(rule.max_age)

    def matches_path(self, path: str) -> bool:
        return self.path_regex is None or self.path_regex.fullmatch(path) is not None

    def matches_origin(self, origin: str) -> bool:
        return any(pattern.matches(origin) for pattern in self.patterns)

    def allows_method(self, method: str) -> bool:
        return self.any_method or method in self.methods

    def origin_headers(self, origin: str) -> list[tuple[str, str]]:
        # Fetch standard, CORS check: ACAO is "*" or the request's Origin byte for byte;
        # with credentials never "*", and ACAC must be exactly "true".
        if self.any_origin and not self.credentials:
            return [(ACAO, "*")]
        if self.credentials:
            return [(ACAO, origin), (ACAC, "true")]
        return [(ACAO, origin)]


class Policy:
    """The CORS decisions for one configuration's rules, first match wins."""

    def __init__(self, rules: tuple[RuleConfig, ...], source: str = "") -> None:
        """``source``: the config file the rules came from, named in every fix."""
        self.rules = tuple(CompiledRule(index, rule, source) for index, rule in enumerate(rules))
        self._by_origin: dict[str, tuple[CompiledRule, ...]] = {}
        self._actual: dict[tuple[int, str, bool], Decision] = {}
        self._preflight: dict[tuple[int, str, str, str, bool], Decision] = {}

    def _rules_for(self, origin: str) -> tuple[CompiledRule, ...]:
        found = self._by_origin.get(origin)
        if found is None:
            found = tuple(rule for rule in self.rules if rule.matches_origin(origin))
            if len(self._by_origin) >= CACHE_LIMIT:
                self._by_origin.clear()
            self._by_origin[origin] = found
        return found

    def find(self, path: str, origin: str) -> CompiledRule | None:
        for rule in self._rules_for(origin):
            if rule.matches_path(path):
                return rule
        return None

    def actual(self, path: str, origin: str, credentialed: bool = False) -> Decision:
        """CORS headers for a request that carries Origin and is not a preflight. The
        Fetch standard's CORS check on a response looks at the origin and credentials
        only, never at the method: allow_methods governs what preflights may ask for.
        ``credentialed``: the request carries a Cookie, which a browser sends cross-origin
        only in credentials mode "include"."""
        rule = self.find(path, origin)
        if rule is None:
            return Decision(False, self.explain_origin(path, origin))
        key = (rule.index, origin, credentialed)
        decision = self._actual.get(key)
        if decision is None:
            decision = self._decide_actual(rule, origin, credentialed)
            if len(self._actual) >= CACHE_LIMIT:
                self._actual.clear()
            self._actual[key] = decision
        return decision

    def _decide_actual(self, rule: CompiledRule, origin: str, credentialed: bool) -> Decision:
        headers = rule.origin_headers(origin)
        if rule.expose_value:
            headers.append((ACEH, rule.expose_value))
        expose_all = "*" in rule.rule.expose_headers and rule.credentials
        blocks = None
        if credentialed and not rule.credentials:
            fix = f"set allow_credentials: true on the rule{rule.where}, with exact origins (never '*')"
            blocks = (
                f"the page sent credentials (a Cookie), but {rule.label} does not allow them, so "
                f"the browser blocks the answer (no Access-Control-Allow-Credentials); {fix}"
            )
        return Decision(True, f"allowed by {rule.label}", rule.index, tuple(headers), expose_all, blocks)

    def method_refusal(self, decision: Decision, method: str) -> str | None:
        """Why the rule behind an allowed decision does not list ``method`` (HEAD goes with
        GET), or None. The CORS headers do not depend on it (the Fetch standard judges an
        actual response by its origin alone); the credentials guard does, so that no page
        spends an injected key with a method its rule does not list."""
        if decision.rule is None:
            return None
        rule = self.rules[decision.rule]
        if rule.allows_method(method) or (method == "HEAD" and rule.allows_method("GET")):
            return None
        return _method_refusal(rule, method)

    def preflight(
        self,
        path: str,
        origin: str,
        method: str,
        requested_headers: str | None,
        private_network: bool = False,
    ) -> Decision:
        """The answer to OPTIONS with Origin and Access-Control-Request-Method."""
        rule = self.find(path, origin)
        if rule is None:
            return Decision(False, self.explain_origin(path, origin))
        key = (rule.index, origin, method, requested_headers or "", private_network)
        decision = self._preflight.get(key)
        if decision is None:
            decision = self._decide_preflight(rule, origin, method, requested_headers, private_network)
            if len(self._preflight) >= CACHE_LIMIT:
                self._preflight.clear()
            self._preflight[key] = decision
        return decision

    def _decide_preflight(
        self,
        rule: CompiledRule,
        origin: str,
        method: str,
        requested_headers: str | None,
        private_network: bool,
    ) -> Decision:
        if not TOKEN.match(method):
            return Decision(False, f"Access-Control-Request-Method {method!r} is not a method", rule.index)
        # Fetch standard, CORS-preflight fetch step 7.5: a CORS-safelisted method passes
        # the browser's method check whatever Access-Control-Allow-Methods lists.
        if method not in SAFELISTED_METHODS and not rule.allows_method(method):
            return Decision(False, _method_refusal(rule, method), rule.index)
        names = split_list(requested_headers)
        for name in names:
            refusal = _header_refusal(rule, name)
            if refusal:
                return Decision(False, refusal, rule.index)
        if private_network and not rule.rule.allow_private_network:
            return Decision(
                False,
                f"private network access requested, but {rule.label} has allow_private_network: false",
                rule.index,
            )
        headers = rule.origin_headers(origin)
        if rule.any_method:
            # With credentials "*" is a literal method name (Fetch standard, CORS-preflight
            # fetch step 7): echo the one asked for. Without, "*" means any method.
            headers.append((ACAM, method if rule.credentials else "*"))
        else:
            headers.append((ACAM, rule.acam_static))
        if names:
            if rule.any_header and rule.credentials:
                headers.append((ACAH, ", ".join(names)))
            else:
                headers.append((ACAH, rule.acah_static))
        if rule.max_age is not None:
            headers.append((ACMA, rule.max_age))
        if private_network:
            headers.append((ACAPN, "true"))
        return Decision(True, f"preflight allowed by {rule.label}", rule.index, tuple(headers))

    def explain_origin(self, path: str, origin: str) -> str:
        """Why no rule applies to this origin on this path, and what to add where. A near
        miss (another port, case, a trailing slash) is named as what the config has, beside
        what the browser sent."""
        on_path = [rule for rule in self.rules if rule.matches_path(path)]
        if not on_path:
            return f"no rule matches the path {path}"
        allowed = tuple(dict.fromkeys(text for rule in on_path for text in rule.rule.origins))
        reason = f"origin {origin!r} is not allowed for {path} (allowed there: {', '.join(allowed)})"
        target = on_path[0]
        where = f"{target.label.split(' ')[0]}.origins{target.where}"
        close = near_misses(origin, allowed)
        if close:
            reason += (
                f"; the config has {close[0]!r} but the browser sent {origin!r}, and origins match "
                "exactly: scheme, host, port, lower case, no trailing slash"
            )
        sent = _sendable(origin)
        if sent == "null":
            reason += (
                "; 'null' is what sandboxed iframes and file:// pages send: list it only to allow "
                "every one of them"
            )
        elif sent is not None:
            reason += f"; to allow it, add {sent!r} to {where}"
            any_port = _any_port_pattern(sent)
            if any_port is not None:
                # Dev servers move to the next port when theirs is taken (Vite: 5173, 5174...).
                reason += f", or {any_port!r} for any port"
        return reason


def _sendable(origin: str) -> str | None:
    """The origin as a config entry, when a browser could have sent it as it is."""
    try:
        parse_origin_pattern(origin)
    except ValueError:
        return None
    return None if origin in ("*",) or origin.startswith("regex:") or "*" in origin else origin


def _any_port_pattern(origin: str) -> str | None:
    """``http://localhost:*`` for an origin on a loopback name with a port, else None."""
    scheme, _, authority = origin.partition("://")
    host, colon, port = authority.rpartition(":")
    if not colon or not port.isdigit() or host not in ("localhost", "127.0.0.1", "[::1]"):
        return None
    return f"{scheme}://{host}:*"


def _method_refusal(rule: CompiledRule, method: str) -> str:
    reason = f"method {method} is not allowed by {rule.label} (allow_methods: {rule.acam_static or 'none'})"
    if method.upper() in rule.methods and method != method.upper():
        reason += (
            f"; methods are case-sensitive and fetch() sends {method!r} as written: use {method.upper()!r}"
        )
    return reason


def _header_refusal(rule: CompiledRule, name: str) -> str | None:
    lower = name.lower()
    if not TOKEN.match(name):
        return f"requested header {name!r} is not a header name"
    if lower in rule.header_names:
        return None
    if rule.any_header and lower != "authorization":
        return None
    if rule.any_header:
        # Fetch standard, CORS-preflight fetch: "*" never covers Authorization.
        return (
            f"header Authorization is not covered by '*' in {rule.label}: "
            "list Authorization in allow_headers explicitly"
        )
    return (
        f"header {name} is not allowed by {rule.label} "
        f"(allow_headers: {rule.acah_static or 'none'}); add it to allow_headers{rule.where}"
    )
