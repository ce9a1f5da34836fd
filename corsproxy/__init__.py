"""corsproxy: a local-development CORS proxy.

Forward to an API you don't control, answer preflights, inject the right CORS headers
according to YAML rules keyed by path and origin.
"""

from corsproxy.app import create_app
from corsproxy.browser import needs_preflight
from corsproxy.config import Config, ConfigError, load_config
from corsproxy.origins import same_origin
from corsproxy.version import __version__

__all__ = [
    "Config",
    "ConfigError",
    "__version__",
    "create_app",
    "load_config",
    "needs_preflight",
    "same_origin",
]
