"""The package's shape: no import cycles, and no lower layer importing an upper one.

Read from the source with ast, so a lazy import inside a function counts as much as one at
the top of a module. The package's ``__init__`` and ``__main__`` are its front, which may
name anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import aiohttp
import pytest

from corsproxy.upstream.aiohttp_client import AiohttpAnswer, AiohttpClient
from corsproxy.upstream.client import UpstreamAnswer, UpstreamClient
from corsproxy.upstream.lean_client import LeanAnswer, LeanClient
from corsproxy.upstream.pool import ConnectionPool

PACKAGE = Path(__file__).resolve().parent.parent / "corsproxy"

# Lowest first. A module may import from its own layer or from lower ones.
LAYERS: list[tuple[str, ...]] = [
    # foundations, pure: errors, header lists, patterns, TLS contexts, the log output
    (
        "corsproxy.version",
        "corsproxy.errors",
        "corsproxy.headers",
        "corsproxy.patterns",
        "corsproxy.tls",
        "corsproxy.log_writer",
        "corsproxy.har",
        "corsproxy.secrets",
    ),
    # the configuration, checked with the patterns
    ("corsproxy.config",),
    # decisions on the configuration: CORS, the message checks, the browser's rules
    (
        "corsproxy.cors",
        "corsproxy.message",
        "corsproxy.check",
        "corsproxy.mocks",
        "corsproxy.simulate",
    ),
    # towards the upstream: routes, header rules, both clients, WebSockets
    ("corsproxy.upstream",),
    # recorded traffic: HAR written from forwarded exchanges, and replayed
    ("corsproxy.recording", "corsproxy.replay"),
    # what both transports share
    ("corsproxy.exchanges", "corsproxy.state"),
    # the request flow and the answers it leads to
    ("corsproxy.flow", "corsproxy.answers"),
    ("corsproxy.inspector",),
    # the two transports
    ("corsproxy.server",),
    ("corsproxy.cli",),
]
FRONT = ("corsproxy", "corsproxy.__main__")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "corsproxy" or name.startswith("corsproxy.")}


GRAPH = {module_name(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    for index, members in enumerate(LAYERS):
        if any(module == member or module.startswith(member + ".") for member in members):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def test_every_module_is_in_a_layer() -> None:
    for module in GRAPH:
        if module not in FRONT:
            layer_of(module)


@pytest.mark.parametrize("module", sorted(name for name in GRAPH if name not in FRONT))
def test_no_module_imports_a_higher_layer(module: str) -> None:
    own = layer_of(module)
    higher = sorted(name for name in GRAPH[module] if name not in FRONT and layer_of(name) > own)
    assert higher == [], f"{module} (layer {own}) imports {higher}"
    assert not GRAPH[module] & set(FRONT), f"{module} imports the package's front"


def test_there_is_no_import_cycle() -> None:
    # Depth-first search; a module seen again while still on the path closes a cycle.
    on_path: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        if module in on_path:
            cycle = [*on_path[on_path.index(module) :], module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        on_path.append(module)
        for imported in sorted(GRAPH.get(module, set())):
            if imported in GRAPH:
                visit(imported)
        on_path.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)


def test_the_check_finds_a_cycle_and_an_upward_import_when_there_is_one() -> None:
    """The checks above can fail: fed a made-up graph, they do."""
    saved = dict(GRAPH)
    try:
        GRAPH["corsproxy.errors"] = {"corsproxy.server.app"}
        GRAPH["corsproxy.server.app"] = {"corsproxy.errors"}
        with pytest.raises(AssertionError, match="import cycle"):
            test_there_is_no_import_cycle()
        with pytest.raises(AssertionError, match="imports"):
            test_no_module_imports_a_higher_layer("corsproxy.errors")
    finally:
        GRAPH.clear()
        GRAPH.update(saved)


async def test_both_upstream_clients_implement_the_one_interface() -> None:
    """Checked twice: by mypy (the annotations below) and at run time."""
    async with aiohttp.ClientSession() as session:
        clients: list[UpstreamClient] = [AiohttpClient(session), LeanClient(ConnectionPool())]
        assert all(isinstance(client, UpstreamClient) for client in clients)
    answers: list[type[UpstreamAnswer]] = [AiohttpAnswer, LeanAnswer]
    for answer in answers:
        assert {"status", "reason", "headers", "abort"} <= set(dir(answer))
