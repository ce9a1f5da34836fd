"""corsproxy: a local-development CORS proxy.

Forward to an API you don't control, answer preflights, inject the right CORS headers
according to YAML rules keyed by path and origin.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from corsproxy.version import __version__

if TYPE_CHECKING:
    from corsproxy.check.browser import needs_preflight
    from corsproxy.config.loader import load_config
    from corsproxy.config.model import Config, ConfigError
    from corsproxy.patterns.origins import same_origin
    from corsproxy.server.app import create_app

# The public names, imported on first use: `corsproxy serve` loads only what serving
# needs, which keeps an idle proxy's memory down (the `check` command's modules stay out).
_PUBLIC = {
    "create_app": "corsproxy.server.app",
    "needs_preflight": "corsproxy.check.browser",
    "Config": "corsproxy.config.model",
    "ConfigError": "corsproxy.config.model",
    "load_config": "corsproxy.config.loader",
    "same_origin": "corsproxy.patterns.origins",
}

__all__ = [
    "Config",
    "ConfigError",
    "__version__",
    "create_app",
    "load_config",
    "needs_preflight",
    "same_origin",
]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'corsproxy' has no attribute {name!r}")
