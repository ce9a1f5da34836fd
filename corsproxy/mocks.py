"""Mock answers: which mock, if any, answers a request, and the body it answers with.

Mocks are matched on the same path as rules and routes (upstream/route.py match_path),
first match wins, before any route is looked up: a mock works for a path no route
serves, and for a config with no upstream at all. With no mocks, ``match`` returns at
once, so the hot path pays one attribute test.
"""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qsl

from corsproxy.config.model import MockConfig
from corsproxy.patterns.globs import compile_glob

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


class MockBody(NamedTuple):
    """What a mock answers with: the body and its Content-Type, or why it has none."""

    content: bytes
    content_type: str | None
    missing: str | None = None  # the file could not be read: the 500's reason


class CompiledMock:
    """One mock with its glob compiled and its fixed body encoded."""

    __slots__ = ("_fixed", "config", "index", "label", "methods", "path_regex", "query")

    def __init__(self, index: int, config: MockConfig, label: str | None = None) -> None:
        self.index = index
        self.config = config
        self.label = label or f"mock[{index}]"
        self.path_regex: re.Pattern[str] | None = compile_glob(config.path)
        self.methods = frozenset(config.method)
        self.query = config.query
        self._fixed: MockBody | None = None
        if config.json is not None:
            self._fixed = MockBody(config.json.encode(), JSON)
        elif config.body is not None:
            self._fixed = MockBody(config.body.encode(), TEXT)
        elif config.file is None:
            self._fixed = MockBody(b"", None)

    def matches(self, method: str, path: str, query_string: str) -> bool:
        # HEAD goes with GET, as in rules; the transport sends no body for it.
        if self.methods and method not in self.methods and not (method == "HEAD" and "GET" in self.methods):
            return False
        if self.path_regex is not None and self.path_regex.fullmatch(path) is None:
            return False
        if self.query:
            given = parse_qsl(query_string, keep_blank_values=True)
            return all((name, value) in given for name, value in self.query)
        return True

    def body(self) -> MockBody:
        """The body to send now. A file is read on every request, so an edit shows at
        once; one deleted since the config loaded is named in the 500 that replaces it."""
        if self._fixed is not None:
            return self._fixed
        assert self.config.file is not None
        path = Path(self.config.file)
        try:
            content = path.read_bytes()
        except OSError as error:
            return MockBody(b"", None, f"{self.label} cannot read its file {str(path)!r}: {error.strerror}")
        guessed, _ = mimetypes.guess_type(path.name)
        if guessed is not None and guessed.startswith("text/"):
            guessed += "; charset=utf-8"
        return MockBody(content, guessed or "application/octet-stream")


class AddedMocks:
    """Mocks added for this run (the inspector's "mock this"), newest first: they outlive
    a config reload, and go when removed or when the proxy stops. Labelled "mock[+N]"."""

    def __init__(self) -> None:
        self.mocks: list[CompiledMock] = []
        self.count = 0

    def add(self, config: MockConfig) -> CompiledMock:
        mock = CompiledMock(self.count, config, label=f"mock[+{self.count}]")
        self.count += 1
        self.mocks.insert(0, mock)
        return mock

    def remove(self, number: int) -> bool:
        before = len(self.mocks)
        self.mocks = [mock for mock in self.mocks if mock.index != number]
        return len(self.mocks) != before


class Mocks:
    """The mocks added for this run, then the config's, in order: the first match wins."""

    def __init__(self, mocks: tuple[MockConfig, ...], added: AddedMocks | None = None) -> None:
        self.mocks = tuple(CompiledMock(index, mock) for index, mock in enumerate(mocks))
        self.added = added or AddedMocks()

    def match(self, method: str, path: str, query_string: str) -> CompiledMock | None:
        added = self.added.mocks
        if not self.mocks and not added:
            return None
        for mock in added:
            if mock.matches(method, path, query_string):
                return mock
        for mock in self.mocks:
            if mock.matches(method, path, query_string):
                return mock
        return None
