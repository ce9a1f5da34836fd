"""Hot reload: watch the config file and the .env it reads; a valid change takes effect for
new requests, an invalid one is reported (every error with its line) and the last good
config stays."""

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


def watched(path: Path, config: Config) -> tuple[Path, ...]:
    """The files a config is made of: itself and the .env it read (or the .env beside it,
    which it would read once it exists)."""
    env_file = Path(config.env_file) if config.env_file else path.parent / ".env"
    return (path, env_file)


async def watch_config(
    path: Path,
    current: Config,
    apply: Callable[[Config], None],
    interval: float = DEFAULT_INTERVAL,
    reject: Callable[[ConfigError], None] | None = None,
    adjust: Callable[[Config], Config] = lambda config: config,
) -> None:
    """Poll the files' modification times and sizes. Polling needs no extra dependency and
    works on every file system, including bind mounts into containers, where inotify
    events often never arrive. ``reject`` hears of a change that was refused; ``adjust``
    applies what the command line set (--port, --record, ...) to each config loaded, so a
    reload keeps it."""
    files = watched(path, current)
    last = tuple(_stamp(file) for file in files)
    while True:
        await asyncio.sleep(interval)
        stamps = tuple(_stamp(file) for file in files)
        if stamps == last:
            continue
        last = stamps
        if stamps[0] is None:
            log.error("config %s disappeared; still serving the last good config", path)
            continue
        try:
            new = adjust(load_config(path, os.environ))
        except ConfigError as error:
            log.error("config change rejected, still serving the last good config:\n%s", error.render())
            if reject is not None:
                reject(error)
            continue
        if new.server.host != current.server.host or new.server.port != current.server.port:
            log.warning("server.host and server.port changes take effect after a restart")
        apply(new)
        current = new
        files = watched(path, new)
        last = tuple(_stamp(file) for file in files)
        log.info("config reloaded from %s: %d route(s), %d rule(s)", path, len(new.routes), len(new.rules))
