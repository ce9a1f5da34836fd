"""``corsproxy init`` on real project skeletons (package.json and config files, no npm
install): the file it writes loads and validates, and it says the one frontend change."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
import yaml

from corsproxy.config.loader import load_config
from corsproxy.config.schema import shipped


def init(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corsproxy", "init", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def package(folder: Path, scripts: dict[str, str], dependencies: dict[str, str] | None = None) -> None:
    (folder / "package.json").write_text(
        json.dumps({"name": "app", "scripts": scripts, "dependencies": dependencies or {}})
    )


def vite_with_port(folder: Path) -> None:
    package(folder, {"dev": "vite"})
    (folder / "vite.config.ts").write_text("export default defineConfig({\n  server: { port: 5174 },\n})\n")


def vite(folder: Path) -> None:
    package(folder, {"dev": "vite"})
    (folder / "vite.config.js").write_text("export default {}\n")


def next_js(folder: Path) -> None:
    package(folder, {"dev": "next dev"}, {"next": "15", "react": "19"})


def create_react_app(folder: Path) -> None:
    package(folder, {"start": "react-scripts start"}, {"react-scripts": "5"})


def angular(folder: Path) -> None:
    package(folder, {"start": "ng serve"})
    (folder / "angular.json").write_text("{}")


def plain(folder: Path) -> None:
    package(folder, {"dev": "webpack serve --port 9000"})


def nothing(folder: Path) -> None:
    pass


SKELETONS = [
    pytest.param(
        vite_with_port, "Vite (vite.config.ts)", 5174, "VITE_API_URL=http://localhost:8080", id="vite port"
    ),
    pytest.param(vite, "Vite (vite.config.js)", 5173, "VITE_API_URL=", id="vite"),
    pytest.param(next_js, "Next.js", 3000, "NEXT_PUBLIC_API_URL=", id="next"),
    pytest.param(create_react_app, "Create React App", 3000, "REACT_APP_API_URL=", id="create react app"),
    pytest.param(angular, "Angular (angular.json)", 4200, "apiUrl: 'http://localhost:8080'", id="angular"),
    pytest.param(plain, "a package.json with a dev script", 9000, "API_URL=", id="plain dev script"),
    pytest.param(nothing, "no known frontend project", "*", "call http://localhost:8080", id="nothing"),
]


@pytest.mark.parametrize(("make", "kind", "port", "change"), SKELETONS)
def test_init_writes_a_config_for_the_project_it_finds(
    tmp_path: Path, make: Callable[[Path], None], kind: str, port: int | str, change: str
) -> None:
    make(tmp_path)
    origins = [f"http://localhost:{port}", f"http://127.0.0.1:{port}"]
    result = init(tmp_path, "--upstream", "https://api.example.org/v1")
    assert result.returncode == 0, result.stderr
    written = tmp_path / "corsproxy.yaml"
    assert f"wrote {written} for {kind}" in result.stdout
    assert change in result.stdout
    config = load_config(written, {})
    assert config.routes[0].upstream == "https://api.example.org/v1"
    assert list(config.rules[0].origins) == origins
    jsonschema.validate(yaml.safe_load(written.read_text()), shipped())
    # Every line of YAML is explained.
    assert all(
        "#" in line
        for line in written.read_text().splitlines()
        if line.strip().startswith(("port", "upstream", "allow_"))
    )


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    (tmp_path / "corsproxy.yaml").write_text("upstream: http://127.0.0.1:9\n")
    refused = init(tmp_path)
    assert refused.returncode == 2
    assert "exists; it is left as it is (give --force to replace it)" in refused.stderr
    assert (tmp_path / "corsproxy.yaml").read_text() == "upstream: http://127.0.0.1:9\n"
    assert init(tmp_path, "--force").returncode == 0
    assert "api.example.com" in (tmp_path / "corsproxy.yaml").read_text()


def test_init_refuses_a_bad_upstream_with_exit_2(tmp_path: Path) -> None:
    result = init(tmp_path, "--upstream", "api.example.com")
    assert result.returncode == 2
    assert "--upstream api.example.com: " in result.stderr
    assert not (tmp_path / "corsproxy.yaml").exists()
