"""Property tests: origin patterns, path globs, header lists and the config loader, fed
generated input. Each property states what must hold for every input, not for a table."""

from __future__ import annotations

import re
from contextlib import suppress

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from corsproxy.config.checker import parse_config
from corsproxy.config.model import Config, ConfigError, RuleConfig
from corsproxy.cors.policy import ACAH, Decision, Policy
from corsproxy.headers import split_list
from corsproxy.patterns.globs import GlobError, compile_glob
from corsproxy.patterns.origins import OriginPatternError, parse_origin_pattern

FAST = settings(max_examples=200, deadline=None)

# A DNS label: letters, digits and inner hyphens (RFC 1123 section 2.1).
LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10).map(
    lambda text: text.strip("-") or "a"
)
LABELS = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
VALID_PORT = st.integers(min_value=1, max_value=65535)
HEADER_NAME = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+.^_`|~-",
    min_size=1,
    max_size=12,
)


# -- origin patterns ---------------------------------------------------------------


def is_strict_subdomain_of_example_com(origin: str) -> bool:
    """The oracle for ``https://*.example.com``: https, no port, and one or more whole
    DNS labels in front of ``.example.com``."""
    if not origin.startswith("https://") or not origin.endswith(".example.com"):
        return False
    prefix = origin.removeprefix("https://").removesuffix(".example.com")
    label = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", re.ASCII)
    return bool(prefix) and all(label.fullmatch(part) for part in prefix.split("."))


SUFFIX_TRICK_HOSTS = st.one_of(
    st.builds("{}.example.com.{}".format, LABELS, LABELS),
    st.builds("{}example.com".format, LABEL),
    st.builds("example.com{}".format, st.sampled_from(["", ".", ":443", "/", "@evil.net", "%2eevil.net"])),
    st.builds("{}.{}".format, LABELS, st.sampled_from(["example.co", "example.com.", "examplexcom", "com"])),
    st.builds("{}@{}.example.com".format, LABELS, LABELS),
    st.builds("{}/.example.com".format, LABELS),
    st.builds("{}.example.com".format, st.text(max_size=12)),
    LABELS,
    st.text(max_size=30),
)


@FAST
@given(
    scheme=st.sampled_from(["https", "http", "wss", "HTTPS"]),
    host=SUFFIX_TRICK_HOSTS,
    port=st.one_of(st.just(""), VALID_PORT.map(":{}".format)),
)
@example(scheme="https", host="example.com", port="")
@example(scheme="https", host="evilexample.com", port="")
@example(scheme="https", host="example.com.evil.net", port="")
@example(scheme="https", host="a.example.com\n", port="")
def test_a_subdomain_wildcard_matches_only_strict_subdomains(scheme: str, host: str, port: str) -> None:
    origin = f"{scheme}://{host}{port}"
    pattern = parse_origin_pattern("https://*.example.com")
    assert pattern.matches(origin) == is_strict_subdomain_of_example_com(origin)


@FAST
@given(labels=LABELS)
def test_a_subdomain_wildcard_matches_every_subdomain_however_deep(labels: str) -> None:
    assert parse_origin_pattern("https://*.example.com").matches(f"https://{labels}.example.com")


@FAST
@given(port=VALID_PORT)
def test_a_port_wildcard_matches_localhost_on_every_port(port: int) -> None:
    pattern = parse_origin_pattern("http://localhost:*")
    assert pattern.matches(f"http://localhost:{port}")
    assert pattern.matches("http://localhost")


@FAST
@given(
    scheme=st.sampled_from(["http", "https", "ws", "HTTP"]),
    host=st.one_of(
        st.sampled_from(
            ["localhost.evil.com", "localhostx", "evil-localhost", "evil.localhost", "LOCALHOST"]
        ),
        st.builds("localhost.{}".format, LABELS),
        st.builds("{}localhost".format, LABEL),
        LABELS,
    ),
    suffix=st.sampled_from(["", ":80", ":5173", "/", ":5173/"]),
)
def test_a_port_wildcard_matches_no_other_host_or_scheme(scheme: str, host: str, suffix: str) -> None:
    origin = f"{scheme}://{host}{suffix}"
    exactly_localhost = scheme == "http" and host == "localhost" and suffix in ("", ":80", ":5173")
    assert parse_origin_pattern("http://localhost:*").matches(origin) == exactly_localhost


@FAST
@given(
    port=st.one_of(
        st.sampled_from(["0", "65536", "99999", "00080", "05173", "", "+80", "-1", "\u0661\u0662"]),
        st.integers(min_value=65536, max_value=99999).map(str),
        st.text(alphabet="0123456789", min_size=2, max_size=5).filter(lambda text: text.startswith("0")),
        st.text(min_size=1, max_size=6).filter(lambda text: not text.isascii()),
    )
)
def test_a_port_wildcard_matches_no_port_outside_1_to_65535(port: str) -> None:
    # A browser serialises the port as a plain decimal between 1 and 65535
    # (URL Standard, "URL serializing"); anything else is not an origin it sends.
    assert not parse_origin_pattern("http://localhost:*").matches(f"http://localhost:{port}")


ORIGIN = st.builds(
    "{}://{}{}".format,
    st.sampled_from(["http", "https"]),
    LABELS,
    st.one_of(st.just(""), VALID_PORT.map(":{}".format)),
)


@FAST
@given(origin=ORIGIN, other=st.one_of(ORIGIN, st.text(max_size=40)))
def test_an_exact_pattern_matches_only_the_identical_string(origin: str, other: str) -> None:
    pattern = parse_origin_pattern(origin)
    assert pattern.matches(origin)
    assert pattern.matches(other) == (other == origin)
    assert not pattern.matches(origin.upper()) or origin == origin.upper()
    assert not pattern.matches(origin + "/")


@FAST
@given(
    text=st.one_of(
        st.text(max_size=60),
        st.builds("regex:{}".format, st.text(max_size=30)),
        st.builds("{}://{}".format, st.text(max_size=8), st.text(max_size=30)),
    )
)
@example(text="regex:a{4294967296}")
@example(text="regex:" + "(" * 1000 + ")" * 1000)
@example(text="http://[::1")
@example(text="http://localhost:99999")
def test_parsing_an_origin_pattern_raises_nothing_but_origin_pattern_error(text: str) -> None:
    with suppress(OriginPatternError):
        parse_origin_pattern(text)


@FAST
@given(origin=ORIGIN, whitespace=st.sampled_from(["\n", " ", "\t", "\r\n"]))
def test_an_origin_pattern_with_trailing_whitespace_is_refused(origin: str, whitespace: str) -> None:
    # A YAML block scalar leaves a trailing newline; no browser sends one, so such a
    # pattern would silently never match. It must be an error instead.
    try:
        parse_origin_pattern(origin + whitespace)
    except OriginPatternError:
        return
    raise AssertionError(f"{origin + whitespace!r} was accepted as an origin pattern")


POLICY = Policy(
    (
        RuleConfig(origins=("https://*.example.com", "http://localhost:*"), path="/api/**"),
        RuleConfig(origins=("http://localhost:5173",), allow_credentials=True),
    )
)


@FAST
@given(
    origin=st.one_of(
        st.text(max_size=40),
        st.builds("http://{}".format, st.text(max_size=20)),
        st.builds("http://localhost:{}".format, st.text(max_size=8)),
    ),
    path=st.sampled_from(["/api/x", "/other"]),
)
@example(origin="http://[::1", path="/other")
@example(origin="http://localhost:99999", path="/other")
@example(origin="http://\u00e9.x\u3002", path="/other")
def test_a_cors_decision_never_raises_whatever_the_origin_header(origin: str, path: str) -> None:
    # The Origin header is whatever a client sends: a crash here is a 500 without CORS
    # headers, the misleading error rule 7 of the design forbids.
    assert isinstance(POLICY.actual(path, origin), Decision)
    assert isinstance(POLICY.preflight(path, origin, "PUT", "X-Custom"), Decision)


# -- path globs --------------------------------------------------------------------


@FAST
@given(glob=st.one_of(st.text(max_size=30), st.builds("/{}".format, st.text(max_size=30))))
def test_compiling_a_glob_raises_nothing_but_glob_error(glob: str) -> None:
    with suppress(GlobError):
        compile_glob(glob)


@FAST
@given(segment=st.text(max_size=10), rest=st.text(max_size=10))
def test_a_single_star_never_crosses_a_slash(segment: str, rest: str) -> None:
    regex = compile_glob("/x/*")
    assert regex is not None
    assert regex.fullmatch(f"/x/{segment}/{rest}") is None


@FAST
@given(segment=st.text(max_size=10).filter(lambda text: "/" not in text))
def test_a_single_star_matches_any_one_segment(segment: str) -> None:
    regex = compile_glob("/x/*")
    assert regex is not None
    assert regex.fullmatch(f"/x/{segment}") is not None


@FAST
@given(path=st.one_of(st.builds("/a{}".format, st.text(max_size=20)), st.text(max_size=20)))
@example(path="/a")
@example(path="/a/")
@example(path="/ab")
@example(path="/a/x\ny")
def test_a_double_star_matches_the_directory_and_everything_under_it(path: str) -> None:
    regex = compile_glob("/a/**")
    assert regex is not None
    under = path == "/a" or path.startswith("/a/")
    assert (regex.fullmatch(path) is not None) == under


# -- header lists ------------------------------------------------------------------

SEPARATOR = st.builds(
    "{}{},{}".format,
    st.text(alphabet=" \t", max_size=3),
    st.lists(st.text(alphabet=" \t", max_size=2).map("{},".format), max_size=2).map("".join),
    st.text(alphabet=" \t", max_size=3),
)


def join_with(items: list[str], separators: list[str], edges: tuple[str, str]) -> str:
    text = items[0]
    for item, separator in zip(items[1:], separators, strict=False):
        text += separator + item
    return edges[0] + text + edges[1]


@FAST
@given(
    items=st.lists(HEADER_NAME, min_size=1, max_size=6),
    separators=st.lists(SEPARATOR, min_size=5, max_size=5),
    edges=st.tuples(st.sampled_from(["", " ", ",", " , "]), st.sampled_from(["", "\t", ",", ", ,"])),
)
def test_splitting_a_header_list_gives_back_its_items_whatever_the_spacing(
    items: list[str], separators: list[str], edges: tuple[str, str]
) -> None:
    assert split_list(join_with(items, separators, edges)) == items


PREFLIGHT_RULES = {
    "listed headers": RuleConfig(
        origins=("http://localhost:5173",), allow_headers=("Content-Type", "X-Api-Key", "X-Trace")
    ),
    "star headers": RuleConfig(origins=("http://localhost:5173",), allow_headers=("*",)),
    "star headers with credentials": RuleConfig(
        origins=("http://localhost:5173",), allow_headers=("*",), allow_credentials=True
    ),
}
REQUESTABLE = ["Content-Type", "X-Api-Key", "X-Trace", "Authorization", "X-Other"]


def comparable(decision: Decision) -> tuple[bool, frozenset[tuple[str, str]]]:
    """A decision with the echoed header list read as the browser reads it: a set of
    case-insensitive names, in any order."""
    headers = set()
    for name, value in decision.headers:
        if name == ACAH:
            value = ",".join(sorted(item.lower() for item in split_list(value)))
        headers.add((name, value))
    return decision.allowed, frozenset(headers)


@FAST
@given(
    rule=st.sampled_from(sorted(PREFLIGHT_RULES)),
    requested=st.lists(st.sampled_from(REQUESTABLE), min_size=1, max_size=4, unique=True),
    data=st.data(),
)
def test_a_preflight_decision_ignores_order_case_and_spacing_of_requested_headers(
    rule: str, requested: list[str], data: st.DataObject
) -> None:
    policy = Policy((PREFLIGHT_RULES[rule],))
    canonical = policy.preflight("/", "http://localhost:5173", "POST", ", ".join(requested))
    shuffled = data.draw(st.permutations(requested))
    upper = data.draw(st.lists(st.booleans(), min_size=32, max_size=32))
    recased = ["".join(c.upper() if upper[i] else c.lower() for i, c in enumerate(name)) for name in shuffled]
    separators = data.draw(st.lists(SEPARATOR, min_size=3, max_size=3))
    edges = data.draw(st.tuples(st.sampled_from(["", " ,"]), st.sampled_from(["", ", "])))
    varied = policy.preflight("/", "http://localhost:5173", "POST", join_with(recased, separators, edges))
    assert comparable(varied) == comparable(canonical)


# -- the config loader ---------------------------------------------------------------

KEYS = st.sampled_from(
    [
        "server",
        "host",
        "port",
        "upstream",
        "routes",
        "rules",
        "path",
        "origins",
        "allow_methods",
        "allow_headers",
        "expose_headers",
        "allow_credentials",
        "max_age",
        "read_timeout",
        "connect_timeout",
        "strip_prefix",
        "request_headers",
        "allow_private_network",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(
        ["http://127.0.0.1:1", "/", "/api/**", "*", "http://localhost:*", "regex:(", "${HOME}", "${X:-y}"]
    ),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(KEYS, st.text(max_size=8)), children, max_size=5),
    ),
    max_leaves=25,
)

# YAML as text, with the tags and shapes a Python dump never writes: explicit tags on
# scalars, collections as keys, aliases.
TAGS = st.sampled_from(
    ["", "", "", "!!int ", "!!float ", "!!bool ", "!!timestamp ", "!!binary ", "!x ", "!!set "]
)
RAW_SCALARS = st.one_of(
    st.sampled_from(["1", "abc", "2020-99-99", "@@", ".nan", "-.inf", "~", "'a'", "http://a", "/x"]),
    st.from_regex(r"[a-z0-9_.:/*-]{1,10}", fullmatch=True),
).flatmap(lambda value: TAGS.map(lambda tag: tag + value))
RAW_YAML = st.recursive(
    RAW_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
        st.lists(st.tuples(st.one_of(KEYS, children.map("? {}".format)), children), max_size=4).map(
            lambda pairs: "{" + ", ".join(f"{key}: {value}" for key, value in pairs) + "}"
        ),
    ),
    max_leaves=20,
)


def load_or_config_error(text: str) -> None:
    try:
        config = parse_config(text, "fuzz.yaml", {})
    except ConfigError:
        return
    assert isinstance(config, Config)


@FAST
@given(document=DOCUMENTS)
def test_the_config_loader_turns_any_yaml_document_into_a_config_or_a_config_error(document: object) -> None:
    load_or_config_error(yaml.safe_dump(document))


@FAST
@given(document=st.dictionaries(KEYS, DOCUMENTS, max_size=4))
def test_the_config_loader_turns_any_mapping_of_known_keys_into_a_config_or_a_config_error(
    document: dict[str, object],
) -> None:
    load_or_config_error(yaml.safe_dump(document))


@FAST
@given(text=RAW_YAML)
@example(text="{rules: [{origins: ['*'], max_age: !!int abc}], upstream: http://a}")
@example(text="{server: {port: !foo 1}, upstream: http://a}")
@example(text="{? {[a]: b}: 1}")
@example(text="{upstream: http://a, ? !!timestamp 2020-99-99 : 1}")
@example(text="{upstream: http://a, rules: [{origins: ['regex:a{4294967296}']}]}")
def test_the_config_loader_survives_explicit_tags_and_collection_keys(text: str) -> None:
    load_or_config_error(text)


@FAST
@given(text=st.text(max_size=200))
@example(text="\x00")
@example(text="a: b\n---\nc: d")
@example(text="&a [*a]")
def test_the_config_loader_turns_any_text_into_a_config_or_a_config_error(text: str) -> None:
    load_or_config_error(text)
