"""Installed from a built package, not from a checkout: ``python -m build`` makes an sdist
and a wheel; the wheel, installed with pip into a fresh venv and with pipx, carries the
inspector's files and runs ``corsproxy demo``. Opt-in (``pytest -m package``, as .ci/run
does): it downloads the dependencies from PyPI into new venvs."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from corsproxy.version import __version__
from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
STATIC = ("inspector.html", "inspector.css", "inspector.js", "workbench.js")

pytestmark = [pytest.mark.package, pytest.mark.timeout(900)]


def run(
    *argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, check=True, timeout=600, cwd=cwd, env=env
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


def test_the_sdist_and_wheel_carry_the_version_the_license_and_the_inspector(
    built: tuple[Path, Path],
) -> None:
    wheel, sdist = built
    assert wheel.name.startswith(f"corsproxy-{__version__}-")
    assert sdist.name == f"corsproxy-{__version__}.tar.gz"
    names = zipfile.ZipFile(wheel).namelist()
    for name in STATIC:
        assert f"corsproxy/inspector/static/{name}" in names
    assert "corsproxy/config/schema.json" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    assert f"corsproxy-{__version__}/LICENSE" in members
    assert f"corsproxy-{__version__}/README.md" in members


def serves_demo(command: Path, cwd: Path) -> None:
    """`corsproxy demo` from an install: the proxy answers, and its inspector's files load."""
    port = free_port()
    process = subprocess.Popen(
        [str(command), "demo", "--port", str(port)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/__corsproxy/health", timeout=2
                ) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "the installed demo did not start"
                time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/__corsproxy/workbench.js", timeout=5) as script:
            assert b"mockThis" in script.read()
    finally:
        process.terminate()
        process.communicate(timeout=15)


def test_the_wheel_installed_into_a_fresh_venv_runs_the_demo(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    wheel, _ = built
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "pip", "install", "-q", wheel)
    # Not the checkout: run from elsewhere, and the package is the installed one.
    where = run(
        venv / "bin" / "python", "-c", "import corsproxy; print(corsproxy.__file__)", cwd=tmp_path
    ).stdout
    assert str(venv) in where
    assert (
        run(venv / "bin" / "corsproxy", "--version", cwd=tmp_path).stdout.strip()
        == f"corsproxy {__version__}"
    )
    serves_demo(venv / "bin" / "corsproxy", tmp_path)


def test_pipx_installs_the_wheel(built: tuple[Path, Path], tmp_path: Path) -> None:
    wheel, _ = built
    tools = tmp_path / "tools"
    run(sys.executable, "-m", "venv", tools)
    run(tools / "bin" / "pip", "install", "-q", "pipx")
    env = {**os.environ, "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin")}
    run(tools / "bin" / "pipx", "install", wheel, env=env)
    installed = tmp_path / "bin" / "corsproxy"
    assert run(installed, "--version", cwd=tmp_path).stdout.strip() == f"corsproxy {__version__}"
    serves_demo(installed, tmp_path)
