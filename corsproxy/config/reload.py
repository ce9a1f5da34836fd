"""Hot reload: watch the config file; a valid change takes effect for new requests,
an invalid one is reported (every error with its line) and the last good config stays."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from corsproxy.config.loader import load_config
from corsproxy.config.model import Config, ConfigError

log = logging.getLogger("corsproxy")

DEFAULT_INTERVAL = 1.0


def _stamp(path: Path) -> tuple[float, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_mtime, info.st_size)


async def watch_config(
    path: Path,
    current: Config,
    apply: Callable[[Config], None],
    interval: float = DEFAULT_INTERVAL,
) -> None:
    """Poll the file's modification time and size. Polling needs no extra dependency and
    works on every file system, including bind mounts into containers, where inotify
    events often never arrive."""
    last = _stamp(path)
    while True:
        await asyncio.sleep(interval)
        stamp = _stamp(path)
        if stamp == last:
            continue
        last = stamp
        if stamp is None:
            log.error("config %s disappeared; still serving the last good config", path)
            continue
        try:
            new = load_config(path, os.environ)
        except ConfigError as error:
            log.error("config change rejected, still serving the last good config:\n%s", error.render())
            continue
        if new.server.host != current.server.host or new.server.port != current.server.port:
            log.warning("server.host and server.port changes take effect after a restart")
        apply(new)
        current = new
        log.info("config reloaded from %s: %d route(s), %d rule(s)", path, len(new.routes), len(new.rules))
