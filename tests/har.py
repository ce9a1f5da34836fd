"""Reading and checking HAR files in tests: JSON, the HAR 1.2 schema (tests/data), waiting
for the recording thread."""

from __future__ import annotations

import asyncio
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from corsproxy.har.writer import flush_all

SCHEMA_FILE = Path(__file__).parent / "data" / "har-1.2.schema.json"


@cache
def har_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(har: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in har_validator().iter_errors(har)]


def load_valid_har(path: Path) -> Any:
    """The file as JSON, asserted to be a valid HAR 1.2."""
    har = json.loads(path.read_bytes())
    errors = schema_errors(har)
    assert not errors, errors[:5]
    return har


async def recorded(path: Path) -> list[dict[str, Any]]:
    """The entries in the file once everything recorded so far is written."""
    await asyncio.to_thread(flush_all)
    return list(load_valid_har(path)["log"]["entries"])
