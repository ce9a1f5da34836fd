"""Reading a configuration file: its text, then the checker (checker.py) over it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from corsproxy.config.checker import parse_config
from corsproxy.config.model import Config, ConfigError


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML file; raises ConfigError listing every problem at once."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"cannot read the file: {error.strerror or error}"], source) from error
    except UnicodeDecodeError as error:
        raise ConfigError([f"the file is not UTF-8 text: {error}"], source) from error
    return parse_config(text, source, os.environ if env is None else env, base_dir=Path(path).parent)
