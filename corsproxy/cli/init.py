"""``corsproxy init``: a starter corsproxy.yaml for the project in this folder, its dev
server's origin allowed, every line explained, and the one change to make in the frontend.

The project is recognised from its files, as its own tools would: Vite (vite.config.*, and
its ``server.port`` when set), Next.js, Create React App, Angular, a package.json with a
dev script, or nothing known (the usual local development ports).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corsproxy.config.checker import upstream_problem
from corsproxy.config.model import DEFAULT_PORT

VITE_CONFIGS = ("vite.config.ts", "vite.config.js", "vite.config.mts", "vite.config.mjs", "vite.config.cjs")
PLACEHOLDER_UPSTREAM = "https://api.example.com"


class InitError(Exception):
    """Bad input for init: said, exit 2."""


@dataclass(frozen=True)
class Project:
    kind: str  # what was recognised, as said to the user
    origin: str | None  # the dev server's origin; None: nothing known
    change: str  # the one change in the frontend: where it reads the API's base URL ({url})


def _package(folder: Path) -> dict[str, Any]:
    """package.json, or an empty one when there is none (or it is not JSON)."""
    try:
        data = json.loads((folder / "package.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _depends_on(package: dict[str, Any], name: str) -> bool:
    return any(
        isinstance(package.get(key), dict) and name in package[key]
        for key in ("dependencies", "devDependencies")
    )


def _port_in(text: str) -> int | None:
    """A port named in a config or a script: ``port: 5174`` or ``--port 5174`` / ``-p 5174``."""
    match = re.search(r"\bport\s*:\s*(\d{2,5})\b", text) or re.search(r"(?:--port|-p)[ =](\d{2,5})\b", text)
    return int(match[1]) if match else None


def detect(folder: Path) -> Project:
    package = _package(folder)
    scripts = package.get("scripts")
    scripts = scripts if isinstance(scripts, dict) else {}
    dev = " ".join(str(scripts.get(name, "")) for name in ("dev", "start", "serve"))
    for name in VITE_CONFIGS:
        if (folder / name).is_file():
            port = _port_in((folder / name).read_text(errors="replace")) or _port_in(dev) or 5173
            return Project(f"Vite ({name})", f"http://localhost:{port}", "VITE_API_URL={url} (in .env.local)")
    if any(
        (folder / name).is_file() for name in ("next.config.js", "next.config.mjs", "next.config.ts")
    ) or _depends_on(package, "next"):
        return Project(
            "Next.js",
            f"http://localhost:{_port_in(dev) or 3000}",
            "NEXT_PUBLIC_API_URL={url} (in .env.local)",
        )
    if _depends_on(package, "react-scripts"):
        return Project(
            "Create React App",
            f"http://localhost:{_port_in(dev) or 3000}",
            "REACT_APP_API_URL={url} (in .env.local)",
        )
    if (folder / "angular.json").is_file():
        return Project(
            "Angular (angular.json)",
            f"http://localhost:{_port_in(dev) or 4200}",
            "apiUrl: '{url}' in src/environments/environment.ts",
        )
    if dev.strip():
        return Project(
            "a package.json with a dev script", f"http://localhost:{_port_in(dev) or 3000}", "API_URL={url}"
        )
    return Project("no known frontend project", None, "call {url} instead of the API's own URL")


def render(project: Project, upstream: str | None, port: int) -> str:
    target = upstream or PLACEHOLDER_UPSTREAM
    lines = [
        f"# corsproxy config, written by `corsproxy init` for {project.kind}.",
        "# Run it with `corsproxy serve` (it finds this file); every key: `corsproxy schema` and the README.",
        "",
        "server:",
        f"  port: {port}                 # the proxy listens on http://localhost:{port}",
        "",
        f"upstream: {target}   # the API: every request goes here, path and query appended"
        + ("" if upstream else "; change it to the one you call"),
        "",
        "rules:",
        "  # The page's origin: scheme, host and port, exactly as the browser sends it.",
    ]
    if project.origin is not None:
        lines += [
            "  - origins:",
            f"      - {project.origin}       # the dev server this project runs",
            f"      - {project.origin.replace('localhost', '127.0.0.1')}   # the same by address",
        ]
    else:
        lines += ["  - origins: ['http://localhost:*', 'http://127.0.0.1:*']   # any local port"]
    lines += [
        "    allow_methods: [GET, POST, PUT, PATCH, DELETE]   # methods the page may use",
        "    allow_headers: [Content-Type, Authorization]     # headers the page may send",
        "    allow_credentials: true   # cookies and Authorization from the page",
        "",
    ]
    return "\n".join(lines)


def write(
    folder: Path, upstream: str | None, force: bool, port: int = DEFAULT_PORT
) -> tuple[Path, Project, str]:
    """Write ``corsproxy.yaml``; returns it, the project, and the change for the frontend."""
    if upstream is not None:
        problem = upstream_problem(upstream)
        if problem:
            raise InitError(f"--upstream {upstream}: {problem}")
    target = folder / "corsproxy.yaml"
    if target.exists() and not force:
        raise InitError(f"{target} exists; it is left as it is (give --force to replace it)")
    project = detect(folder)
    target.write_text(render(project, upstream, port))
    return target, project, project.change.format(url=f"http://localhost:{port}")
