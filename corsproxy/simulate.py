"""Bad networks on purpose (README, "Simulating a bad network"): which ``simulate``
entries apply to a request, and what they do to it this time.

Every enabled entry whose path (a glob, as in rules) and method match applies: latencies
add up, the slowest throttle wins, and the first fail entry that fires decides the
failure. ``rate`` draws from one random generator, seeded by ``seed`` when given, so a run
with a seed fails the same requests as the last; ``every: N`` fails each N-th request the
entry matched. Preflights get latency only (and the offline switch's reset): a failure
stands in for the API's answer, which a preflight never reaches.

The state (switches, entries added for this run, counters) lives as long as the proxy;
a config reload replaces the file's entries and starts their counters again.
"""

from __future__ import annotations

import random
import re
from typing import Any, NamedTuple

from corsproxy.config.model import FailConfig, SimulateConfig
from corsproxy.patterns.globs import compile_glob

OFFLINE = FailConfig(rate=1.0, mode="reset")


class Simulated(NamedTuple):
    """What happens to one request."""

    latency: float  # seconds added before the answer's head
    throttle: int | None  # bytes per second for the body
    fail: FailConfig | None
    said: str  # for the log line and the inspector: "latency 312ms, 503"


class Entry:
    """One entry, compiled, with its switch and its count of matching requests."""

    __slots__ = ("added", "config", "count", "enabled", "methods", "path_regex")

    def __init__(self, config: SimulateConfig, added: bool) -> None:
        self.config = config
        self.added = added  # for this run (the API), not from the config file
        self.path_regex: re.Pattern[str] | None = compile_glob(config.path)
        self.methods = frozenset(config.method)
        self.enabled = True
        self.count = 0

    def matches(self, method: str, path: str) -> bool:
        if self.methods and method not in self.methods and not (method == "HEAD" and "GET" in self.methods):
            return False
        return self.path_regex is None or self.path_regex.fullmatch(path) is not None


def rate_text(per_second: int) -> str:
    for unit, size in (("MB", 10**6), ("KB", 10**3)):
        if per_second >= size:
            return f"{per_second / size:g}{unit}/s"
    return f"{per_second}B/s"


class Simulator:
    def __init__(self, entries: tuple[SimulateConfig, ...] = (), seed: int | None = None) -> None:
        self.entries: list[Entry] = []
        self.offline = False
        # True when anything could apply: the one test the hot path makes.
        self.active = False
        self.load(entries, seed)

    def load(self, entries: tuple[SimulateConfig, ...], seed: int | None) -> None:
        """The config's entries (again, on a reload); those added for this run stay."""
        self.entries = [Entry(config, added=False) for config in entries] + [
            entry for entry in self.entries if entry.added
        ]
        self.random = random.Random(seed)
        self._refresh()

    def _refresh(self) -> None:
        self.active = self.offline or any(entry.enabled for entry in self.entries)

    def add(self, config: SimulateConfig) -> int:
        self.entries.append(Entry(config, added=True))
        self._refresh()
        return len(self.entries) - 1

    def switch(self, index: int, enabled: bool) -> None:
        self.entries[index].enabled = enabled
        self._refresh()

    def go_offline(self, offline: bool) -> None:
        self.offline = offline
        self._refresh()

    def matches(self, method: str, path: str) -> bool:
        """Whether anything may happen to this request; changes nothing."""
        return self.offline or any(entry.enabled and entry.matches(method, path) for entry in self.entries)

    def draw(self, method: str, path: str, preflight: bool) -> Simulated | None:
        """What happens to this request, counting it; None when nothing does."""
        if self.offline:
            return Simulated(0.0, None, OFFLINE, "reset (offline)")
        latency = 0.0
        throttle: int | None = None
        fail: FailConfig | None = None
        for entry in self.entries:
            if not entry.enabled or not entry.matches(method, path):
                continue
            config = entry.config
            if config.latency is not None:
                low, high = config.latency
                latency += low if low == high else self.random.uniform(low, high)
            if preflight:
                continue
            if config.throttle is not None:
                throttle = config.throttle if throttle is None else min(throttle, config.throttle)
            if config.fail is not None:
                entry.count += 1
                if fail is None and self._fires(config.fail, entry.count):
                    fail = config.fail
        if not latency and throttle is None and fail is None:
            return None
        said = []
        if latency:
            said.append(f"latency {latency * 1000:.0f}ms")
        if throttle is not None:
            said.append(f"throttle {rate_text(throttle)}")
        if fail is not None:
            said.append(str(fail.status) if fail.mode == "status" else fail.mode)
        return Simulated(latency, throttle, fail, ", ".join(said))

    def _fires(self, fail: FailConfig, count: int) -> bool:
        if fail.every is not None:
            return count % fail.every == 0
        return self.random.random() < (fail.rate or 0.0)

    def listing(self) -> dict[str, Any]:
        """The entries as the inspector's API shows them."""
        return {
            "offline": self.offline,
            "entries": [
                {"index": index, "enabled": entry.enabled, "added": entry.added, **describe(entry.config)}
                for index, entry in enumerate(self.entries)
            ],
        }


def describe(config: SimulateConfig) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "path": config.path,
        "method": list(config.method) or None,
        "line": config.line or None,
    }
    if config.latency is not None:
        low, high = (round(value * 1000) for value in config.latency)
        shown["latency"] = f"{low}ms" if low == high else f"{low}ms..{high}ms"
    if config.throttle is not None:
        shown["throttle"] = rate_text(config.throttle)
    if config.fail is not None:
        fail = config.fail
        shown["fail"] = {
            key: value
            for key, value in (
                ("rate", fail.rate),
                ("every", fail.every),
                ("mode", fail.mode),
                ("status", fail.status if fail.mode == "status" else None),
                ("retry_after", fail.retry_after),
            )
            if value is not None
        }
    return shown
