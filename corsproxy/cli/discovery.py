"""Finding the config file when none is named: ``corsproxy.yaml`` or ``.corsproxy.yaml``
in the current folder or the nearest parent that has one, looking no higher than the
repository root (a folder with ``.git``) or the home folder."""

from __future__ import annotations

from pathlib import Path

NAMES = ("corsproxy.yaml", ".corsproxy.yaml")


def folders_searched(start: Path, home: Path) -> list[Path]:
    """``start`` and its parents, up to and including the repository root or ``home``."""
    folders = []
    for folder in (start, *start.parents):
        folders.append(folder)
        if (folder / ".git").exists() or folder == home:
            break
    return folders


def find_config(start: Path, home: Path) -> Path | None:
    for folder in folders_searched(start, home):
        for name in NAMES:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def not_found_message(start: Path, home: Path) -> str:
    searched = folders_searched(start, home)
    shown = ", ".join(str(folder) for folder in searched[:4]) + (", ..." if len(searched) > 4 else "")
    return (
        f"nothing to proxy: no {' or '.join(NAMES)} in {shown}; run `corsproxy init` to write one "
        "for this project, or give --config FILE, --upstream URL or --replay FILE.har; try "
        "`corsproxy demo` for an offline example"
    )
