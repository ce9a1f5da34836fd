"""The config file's JSON Schema: made from the loader's own tables and the README's
descriptions (never by hand), shipped in the package, and in agreement with the loader
on what is valid, except where the loader is knowingly stricter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from corsproxy.config.checker import parse_config
from corsproxy.config.model import ConfigError
from corsproxy.config.schema import STRICTER_THAN_THE_SCHEMA, build, readme_descriptions, shipped
from tests.processes import corsproxy

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [
    ROOT / "config.example.yaml",
    ROOT / "examples" / "compose" / "corsproxy.yaml",
    ROOT / "examples" / "compose" / "third-party" / "corsproxy.yaml",
]


def validator() -> jsonschema.Draft202012Validator:
    schema = shipped()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_problems(data: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(data)]


def test_the_shipped_schema_is_the_one_made_from_the_loader_and_the_readme() -> None:
    made = build(readme_descriptions((ROOT / "README.md").read_text()))
    assert shipped() == made, (
        "regenerate: python -m corsproxy.config.schema README.md > corsproxy/config/schema.json"
    )


def test_corsproxy_schema_prints_it() -> None:
    result = corsproxy("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout) == shipped()


def test_every_key_has_a_description_from_the_readme() -> None:
    missing = []

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        for key, child in node.get("properties", {}).items():
            where = f"{path}.{key}" if path else key
            if "description" not in child:
                missing.append(where)
            walk(child, where)
        walk(node.get("items"), f"{path}[]")
        for alternative in node.get("oneOf", []):
            if alternative.get("type") == "object":
                walk(alternative, path)

    walk(shipped(), "")
    assert missing == []


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: str(path.relative_to(ROOT)))
def test_the_example_configs_validate(path: Path) -> None:
    assert schema_problems(yaml.safe_load(path.read_text())) == []


def test_the_example_config_starts_with_the_editors_schema_line() -> None:
    first = (ROOT / "config.example.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=corsproxy/config/schema.json"
    assert (ROOT / "corsproxy" / "config" / "schema.json").is_file()


@pytest.mark.parametrize(
    ("data", "where"),
    [
        pytest.param({"upstrem": "http://x.example"}, "", id="a typo"),
        pytest.param({"upstream": "api.example.com"}, "upstream", id="no scheme"),
        pytest.param({"upstream": "http://a", "routes": []}, "", id="upstream and routes"),
        pytest.param({"server": {"port": 70000}, "upstream": "http://a"}, "server/port", id="port"),
        pytest.param(
            {"upstream": "http://a", "rules": [{"origins": []}]}, "rules/0/origins", id="no origins"
        ),
        pytest.param({"mocks": [{"path": "/a", "status": 700}]}, "mocks/0/status", id="mock status"),
        pytest.param(
            {"upstream": "http://a", "simulate": [{"path": "/a", "latency": "300"}]},
            "simulate/0/latency",
            id="unit",
        ),
        pytest.param(
            {"upstream": "http://a", "simulate": [{"path": "/a", "fail": {"rate": 2}}]},
            "simulate/0/fail/rate",
            id="rate",
        ),
        pytest.param({"server": {}}, "", id="nothing to proxy"),
    ],
)
def test_the_schema_refuses_what_the_loader_refuses(data: dict[str, Any], where: str) -> None:
    problems = schema_problems(data)
    assert any(problem.startswith(f"{where}:") for problem in problems), problems
    with pytest.raises(ConfigError):
        parse_config(yaml.safe_dump(data), "test.yaml", {})


def test_where_the_loader_is_stricter_it_is_said_in_one_place() -> None:
    # A regex that does not compile passes the schema, and the list says why.
    data = {"upstream": "http://a", "rules": [{"origins": ["regex:(unclosed"]}]}
    assert schema_problems(data) == []
    with pytest.raises(ConfigError):
        parse_config(yaml.safe_dump(data), "test.yaml", {})
    assert "regular expressions compile" in STRICTER_THAN_THE_SCHEMA


# Generated configs, from values the schema can judge (no regexes, files, globs or
# ${VAR}: STRICTER_THAN_THE_SCHEMA), valid and not.
ports = st.one_of(st.integers(-5, 70_000), st.sampled_from(["8080", True]))
origins = st.lists(
    st.sampled_from(["http://localhost:5173", "https://*.example.com", "*"]), max_size=2, unique=True
)
rule = st.fixed_dictionaries(
    {"origins": origins},
    optional={
        "max_age": st.integers(-3, 1000),
        "allow_credentials": st.booleans(),
        "allow_methods": st.just(["GET"]),
    },
)
mock = st.fixed_dictionaries(
    {"path": st.sampled_from(["/a", "/api/**", "a", "/__corsproxy/x"])},
    optional={"status": st.integers(100, 700), "body": st.just("ok")},
)
configs = st.fixed_dictionaries(
    {},
    optional={
        "upstream": st.sampled_from(["http://127.0.0.1:9", "ftp://x", "x"]),
        "server": st.fixed_dictionaries({}, optional={"port": ports, "max_header_size": st.integers(-1, 5)}),
        "rules": st.lists(rule, max_size=2),
        "mocks": st.lists(mock, max_size=2),
        "seed": st.one_of(st.integers(), st.just("lucky")),
        "inspector": st.fixed_dictionaries(
            {}, optional={"max_body": st.sampled_from([0, 5, "1MiB", "big", -1])}
        ),
        "upstrem": st.just("http://a"),
    },
)


def loader_accepts(data: dict[str, Any]) -> bool:
    try:
        parse_config(yaml.safe_dump(data), "generated.yaml", {})
    except ConfigError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(configs)
def test_the_schema_and_the_loader_agree_on_generated_configs(data: dict[str, Any]) -> None:
    credentials_with_star = any(
        r.get("allow_credentials") and "*" in r["origins"] for r in data.get("rules", [])
    )  # a combination the schema does not state (STRICTER_THAN_THE_SCHEMA, "combinations")
    if credentials_with_star:
        return
    assert (schema_problems(data) == []) == loader_accepts(data), (data, schema_problems(data))


def test_the_browser_tests_config_validates() -> None:
    from tests.browser.conftest import PROXY_YAML

    text = PROXY_YAML.format(upstream_port=1, closed_port=2, page_port=3, proxy_port=4)
    assert schema_problems(yaml.safe_load(text)) == []
