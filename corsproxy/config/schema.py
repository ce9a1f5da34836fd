"""The JSON Schema (draft 2020-12) of the config file, made from the loader's own parts:
its field tables name every key (checker.py), the dataclasses give the defaults
(model.py), and each reader is paired here with the JSON type it accepts. The README's
configuration reference gives the descriptions. The schema is shipped in the package
(``schema.json``), and a test holds that file to what this module makes from the
checkout: it is never written by hand.

    python -m corsproxy.config.schema README.md > corsproxy/config/schema.json

Where the loader is stricter than a schema can say, the difference is listed in
STRICTER_THAN_THE_SCHEMA.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from corsproxy.config import checker as c
from corsproxy.config import model as m

SCHEMA_ID = "urn:corsproxy:config"
Json = dict[str, Any]

# Checks the loader makes that JSON Schema cannot express (or should not: they depend on
# the machine the config is loaded on). A file may pass the schema and still fail these.
STRICTER_THAN_THE_SCHEMA = {
    "regular expressions compile": "origins 'regex:...' and path_rewrites[].match must compile; "
    "a schema can only say they are strings",
    "templates match their regex": "path_rewrites[].replace may only name groups its match has",
    "${VAR} is set": "a ${VAR} without a :-default must be set in the environment or the .env file",
    "files exist": "tls files, mock files, env_file and replay.file must exist; record.file's "
    "folder must exist; replay.file must be a HAR",
    "globs compile": "rules[].path, mocks[].path and simulate[].path must be valid globs",
    "combinations": "upstream and routes exclude each other; a mock gives at most one of json, "
    "body and file, and none with status 204 or 304; fail takes rate or every, and a reset or "
    "hang no status; credentials never go with origin '*'",
    "origins and URLs are well formed": "an origin has no trailing slash, path or upper case; an "
    "upstream URL has a host and no query",
    "ranges read as ranges": "a latency range must not end before it starts",
}

STRING: Json = {"type": "string"}
BOOLEAN: Json = {"type": "boolean"}
TOKEN = "^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$"
SIZE = {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": c.BYTE_SIZE.pattern}]}
DURATION = "\\d+(\\.\\d+)?\\s*(ms|s)"
STRING_MAP: Json = {"type": "object", "additionalProperties": {"type": "string"}}
# An upstream URL, or one made from ${VAR} values (checked once they are expanded).
UPSTREAM_URL: Json = {"type": "string", "pattern": "^(https?://|.*\\$\\{)"}


def _strings(item: Json, min_items: int = 0) -> Json:
    schema: Json = {"type": "array", "items": item}
    if min_items:
        schema["minItems"] = min_items
    return schema


def _section(table: Mapping[str, Any], dataclass: type, where: str, descriptions: Mapping[str, str]) -> Json:
    """A mapping read through a field table: its keys, their types and defaults."""
    defaults = {}
    for field in dataclasses.fields(dataclass):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
    properties = {}
    for key, reader in table.items():
        schema = dict(_reader_schema(reader, f"{where}.{key}" if where else key, descriptions))
        value = defaults.get(key)
        if isinstance(value, str | int | float | bool):
            schema.setdefault("default", value)
        elif isinstance(value, tuple) and value and all(isinstance(item, str) for item in value):
            schema.setdefault("default", list(value))
        text = descriptions.get(f"{where}.{key}" if where else key)
        if text:
            schema["description"] = text
        properties[key] = schema
    return {"type": "object", "properties": properties, "additionalProperties": False}


def _reader_schema(reader: Callable[..., Any], where: str, descriptions: Mapping[str, str]) -> Json:
    """The JSON a reader accepts: looked up by the reader itself, or by the key it reads."""
    found = READERS.get(reader)
    if found is not None:
        return found(where, descriptions) if callable(found) else found
    by_key = KEYS.get(where.split(".")[-1].split("[")[0])
    if by_key is not None:
        return by_key(where, descriptions) if callable(by_key) else by_key
    raise LookupError(f"no JSON type for the reader of {where}: add it to READERS in {__file__}")


# Readers, by identity, and what they accept.
READERS: dict[Any, Json | Callable[[str, Mapping[str, str]], Json]] = {
    c._Checker.port: {"type": "integer", "minimum": 0, "maximum": 65535},
    c._Checker.positive_int: {"type": "integer", "minimum": 1},
    c._Checker.non_negative_int: {"type": "integer", "minimum": 0},
    c._Checker.boolean: BOOLEAN,
    c._Checker.seconds: {"type": "number", "exclusiveMinimum": 0},
    c._Checker.existing_file: STRING,
    c._Checker.upstream_url: UPSTREAM_URL,
    c._Checker.route_prefix: {"type": "string", "pattern": "^/"},
    c._Checker.rule_path: STRING,
    c._Checker.mock_path: {"type": "string", "pattern": "^/(?!__corsproxy)"},
    c._Checker.origins: _strings(STRING, min_items=1),
    c._Checker.request_headers: STRING_MAP,
    c._Checker.mock_headers: STRING_MAP,
    c._Checker.mock_query: STRING_MAP,
    c._Checker.mock_methods: {
        "oneOf": [{"type": "string", "pattern": TOKEN}, _strings({"type": "string", "pattern": TOKEN})]
    },
    c._Checker.mock_status: {"type": "integer", "minimum": 200, "maximum": 599},
    c._Checker.mock_json: {},
    c._Checker.mock_body: STRING,
    c._Checker.rewrite_origin: STRING,
    c._Checker.record_file: STRING,
    c._Checker.byte_size: SIZE,
    c._Checker.replay_miss: {"enum": [*m.REPLAY_MISSES, 404]},
    c._Checker.latency: {"type": "string", "pattern": f"^{DURATION}(\\.\\.{DURATION})?$"},
    c._Checker.throttle: {"type": "string", "pattern": c.BYTE_RATE.pattern},
    c._Checker.fail_rate: {"type": "number", "minimum": 0, "maximum": 1},
    c._Checker.path_rewrites: _strings(
        {
            "type": "object",
            "properties": {"match": STRING, "replace": STRING},
            "required": ["match", "replace"],
            "additionalProperties": False,
        }
    ),
    c._Checker.cookies: lambda where, d: _section(c.COOKIE_FIELDS, m.CookieConfig, where, d),
    c._Checker.upstream_tls: lambda where, d: _section(c.UPSTREAM_TLS_FIELDS, m.UpstreamTLS, where, d),
    c._Checker.fail_entry: lambda where, d: _section(c.FAIL_FIELDS, m.FailConfig, where, d),
    c._Checker.server_tls: {
        "oneOf": [
            {"const": "auto"},
            {
                "type": "object",
                "properties": {"cert": STRING, "key": STRING},
                "required": ["cert", "key"],
                "additionalProperties": False,
            },
        ]
    },
}
# Readers made inline in the tables (closures), by the key they read.
KEYS: dict[str, Json | Callable[[str, Mapping[str, str]], Json]] = {
    "host": STRING,
    "allowed_hosts": _strings(STRING),
    "remove_request_headers": _strings({"type": "string", "pattern": TOKEN}),
    "allow_methods": _strings({"type": "string", "pattern": TOKEN}),
    "allow_headers": _strings({"type": "string", "pattern": TOKEN}),
    "expose_headers": _strings({"type": "string", "pattern": TOKEN}),
    "mode": {"enum": list(m.FAIL_MODES)},
    "max_body": {"oneOf": [{"type": "integer", "minimum": 0}, SIZE["oneOf"][1]]},
    "inspector": lambda where, d: _section(c.ROUTE_INSPECTOR_FIELDS, m.RouteInspector, where, d),
    **{name: {"enum": list(choices)} for name, choices in c.COOKIE_CHOICES.items()},
}


def _list_of(section: Json) -> Json:
    return {"type": "array", "items": section}


def build(descriptions: Mapping[str, str]) -> Json:
    """The whole schema; ``descriptions`` by key path (``routes[].upstream``)."""
    d = descriptions
    routes = _section(c.ROUTE_FIELDS, m.RouteConfig, "routes[]", d)
    routes["required"] = ["path", "upstream"]
    rules = _section(c.RULE_FIELDS, m.RuleConfig, "rules[]", d)
    rules["required"] = ["origins"]
    mocks = _section(c.MOCK_FIELDS, m.MockConfig, "mocks[]", d)
    mocks["required"] = ["path"]
    simulate = _section(c.SIMULATE_FIELDS, m.SimulateConfig, "simulate[]", d)
    simulate["required"] = ["path"]
    record = _section(c.RECORD_FIELDS, m.RecordConfig, "record", d)
    record["required"] = ["file"]
    replay = _section(c.REPLAY_FIELDS, m.ReplayConfig, "replay", d)
    replay["required"] = ["file"]
    top: dict[str, Json] = {
        "server": _section(c.SERVER_FIELDS, m.ServerConfig, "server", d),
        "upstream": dict(UPSTREAM_URL),
        "routes": {**_list_of(routes), "minItems": 1},
        "rules": {**_list_of(rules), "minItems": 1},
        "mocks": _list_of(mocks),
        "record": {"oneOf": [STRING, record]},
        "replay": {"oneOf": [STRING, replay]},
        "simulate": _list_of(simulate),
        "seed": {"type": "integer"},
        "inspector": _section(c.INSPECTOR_FIELDS, m.InspectorConfig, "inspector", d),
        "env_file": STRING,
    }
    assert set(top) == set(c.TOP_KEYS), "every top-level key the loader reads is in the schema"
    for key, schema in top.items():
        if key in d:
            schema["description"] = d[key]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "corsproxy configuration",
        "description": "A corsproxy.yaml: routes to upstreams, CORS rules, mocks, recording, replay "
        "and simulated networks. The loader checks more than this schema can; see "
        "corsproxy/config/schema.py, STRICTER_THAN_THE_SCHEMA.",
        "type": "object",
        "properties": top,
        "additionalProperties": False,
        "not": {"required": ["upstream", "routes"]},
        "anyOf": [{"required": [key]} for key in ("upstream", "routes", "mocks", "replay")],
    }


# A key line of the reference: "  key: value  # what it means" (not "- http://..." items).
KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<dash>- )?(?P<key>[a-z_]+):(?!//)(?P<rest>.*)$")


def readme_descriptions(readme: str) -> dict[str, str]:
    """Each key's comment in the README's configuration reference (its first ```yaml block
    under "## Configuration reference" and the ones after it there), by key path."""
    section = readme.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    found: dict[str, str] = {}
    for block in re.findall(r"```yaml\n(.*?)```", section, re.S):
        stack: list[tuple[int, str]] = []
        for line in block.splitlines():
            match = KEY_LINE.match(line)
            if match is None:
                continue
            dash_indent = len(match["indent"])
            indent = dash_indent + (2 if match["dash"] else 0)
            # A list item is a container one column in from its dash: its keys sit under it.
            while stack and stack[-1][0] >= (dash_indent + 1 if match["dash"] else indent):
                stack.pop()
            key = match["key"]
            parent = stack[-1][1] if stack else ""
            if match["dash"]:
                parent = f"{parent}[]"
                stack.append((dash_indent + 1, parent))
            path = f"{parent}.{key}" if parent else key
            parts = re.split(r"\s#\s", match["rest"], maxsplit=1)
            comment = parts[1].strip() if len(parts) == 2 else ""
            if comment and path not in found:
                found[path] = comment
            stack.append((indent, path))
    return found


def shipped() -> Json:
    """The schema the package ships."""
    loaded: Json = json.loads(resources.files("corsproxy.config").joinpath("schema.json").read_text())
    return loaded


def main(argv: list[str]) -> int:
    readme = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "README.md"
    print(json.dumps(build(readme_descriptions(readme.read_text())), indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
