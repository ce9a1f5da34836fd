"""Shell completion (argcomplete): each script is generated, and bash really completes
commands, options, choices and file names through it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import corsproxy

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("shell", "mark"),
    [
        pytest.param(
            "bash",
            "complete -o nospace -o default -o bashdefault -F _python_argcomplete corsproxy",
            id="bash",
        ),
        pytest.param("zsh", "#compdef corsproxy", id="zsh"),
        pytest.param("fish", "complete --command corsproxy", id="fish"),
    ],
)
def test_each_shells_script_is_generated(shell: str, mark: str) -> None:
    result = corsproxy("completion", shell)
    assert result.returncode == 0
    assert mark in result.stdout


def bash_completes(line: str, cwd: Path) -> list[str]:
    """What bash offers for ``line`` (the cursor at its end) with corsproxy's completion."""
    words = line.split(" ")
    script = (
        "source <(corsproxy completion bash)\n"
        f"COMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
        f"COMP_CWORD={len(words) - 1}\n"
        f"_python_argcomplete corsproxy {words[-1]!r} {words[-2]!r}\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [item.strip() for item in result.stdout.splitlines() if item.strip()]


@pytest.mark.parametrize(
    ("line", "offered"),
    [
        pytest.param("corsproxy se", ["serve"], id="a command"),
        pytest.param("corsproxy serve --rep", ["--replay", "--replay-miss"], id="options"),
        pytest.param("corsproxy serve --replay-miss ", ["forward", "404"], id="choices"),
        pytest.param("corsproxy completion f", ["fish"], id="a shell"),
        pytest.param("corsproxy validate corsp", ["corsproxy.yaml"], id="a file"),
    ],
)
def test_bash_completes_commands_options_choices_and_files(
    line: str, offered: list[str], tmp_path: Path
) -> None:
    (tmp_path / "corsproxy.yaml").write_text("upstream: http://127.0.0.1:9\n")
    assert sorted(bash_completes(line, tmp_path)) == sorted(offered)
