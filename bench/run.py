"""The corsproxy benchmark: one command, markdown tables.

    python bench/run.py            # 3 runs x 10 s per figure
    python bench/run.py --quick    # 1 run x 3 s per figure, for smoke-testing

corsproxy runs as users run it: `corsproxy serve --upstream URL --port N` and nothing
else, its per-request log line going to a file, as docker-compose keeps it. A second
row runs the same with `--log-level warning`. Two costs too small for this machine's
drift to show in one run each (the log line, 50 rules against one) are measured as
interleaved A/B pairs of short runs, reported as the median ratio and its spread.

nginx serves the upstream (100 B, 1 MiB, 100 MiB files, its own nginx.conf in a temp
dir); each peer proxies it in turn, pinned to core 0, with wrk, the upstream and the
download clients pinned to core 1. All on 127.0.0.1, every load bounded in time,
every process stopped by PID on exit. The table goes to stdout and to
bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH,
    HOST,
    MIB,
    ORIGIN,
    PROXY_CORE,
    PeakSampler,
    Procs,
    Upstream,
    WrkResult,
    child_env,
    ensure_tools,
    free_port,
    log,
    make_workdir,
    median_spread,
    nginx_binary,
    nginx_cors_conf,
    process_tree,
    python_for_project,
    rss_bytes,
    run_downloads,
    run_wrk,
    start_upstream,
    wait_http,
    write_preflight_script,
)

CORSPROXY = "corsproxy"
CORSPROXY_QUIET = "corsproxy --log-level warning"
NAIVE = "naive aiohttp"
CA_KEEPALIVE = "cors-anywhere keep-alive"
NGINX_CORS = "nginx as CORS proxy"
# The A/B pairs only, not rows of the table: the same matching rule, alone or last of 50.
RULES50 = "corsproxy, 50 rules"
RULES1 = "corsproxy, that rule alone"
DIRECT = "direct to upstream (ceiling)"


@dataclass
class Peer:
    name: str
    # (port, workdir) -> argv; None for the direct row
    argv: Callable[[int, Path], list[str]] | None
    # path on the upstream ("/small") -> URL through this peer
    url: Callable[[int, str], str]
    node: bool = False


@dataclass
class Figures:
    small_rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    preflight_rps: list[float] = field(default_factory=list)
    preflight_status_ok: bool = True
    mib_s: list[float] = field(default_factory=list)
    rss_idle: list[float] = field(default_factory=list)
    rss_fast: list[float] = field(default_factory=list)
    rss_slow: list[float] = field(default_factory=list)
    rss_slow_growth: list[float] = field(default_factory=list)  # peak minus RSS just before
    fast_mib_s: list[float] = field(default_factory=list)
    # wrk -c1: the latency a developer feels, in µs
    one_get_p50: list[float] = field(default_factory=list)
    one_get_p99: list[float] = field(default_factory=list)
    one_preflight_p50: list[float] = field(default_factory=list)
    one_preflight_p99: list[float] = field(default_factory=list)
    errors: int = 0
    notes: list[str] = field(default_factory=list)


def peers(upstream: Upstream, python: str) -> list[Peer]:
    base = upstream.base
    node_bin = BENCH / "node_modules" / ".bin"

    def via_path(port: int, path: str) -> str:
        return f"http://{HOST}:{port}{path}"

    result = [
        Peer(DIRECT, None, lambda _port, path: base + path),
        Peer(CORSPROXY, corsproxy_argv(python, "--upstream", base), via_path),
        Peer(CORSPROXY_QUIET, corsproxy_argv(python, "--upstream", base, "--log-level", "warning"), via_path),
    ]
    result += [
        Peer(
            NGINX_CORS,
            lambda port, tmp: [
                nginx_binary(),
                "-c",
                str(nginx_cors_conf(tmp, port, upstream)),
                "-p",
                str(tmp),
            ],
            via_path,
        ),
        Peer(
            "cors-anywhere as shipped",
            lambda port, _tmp: ["node", str(BENCH / "cors_anywhere.js"), str(port)],
            lambda port, path: f"http://{HOST}:{port}/{base}{path}",
            node=True,
        ),
        Peer(
            CA_KEEPALIVE,
            lambda port, _tmp: ["node", str(BENCH / "cors_anywhere.js"), str(port), "--keepalive"],
            lambda port, path: f"http://{HOST}:{port}/{base}{path}",
            node=True,
        ),
        Peer(
            "local-cors-proxy",
            lambda port, _tmp: [
                str(node_bin / "lcp"),
                "--proxyUrl",
                base,
                "--port",
                str(port),
                "--origin",
                ORIGIN,
            ],
            lambda port, path: f"http://{HOST}:{port}/proxy{path}",
            node=True,
        ),
        Peer(NAIVE, lambda port, _tmp: [python, str(BENCH / "naive_proxy.py"), base, str(port)], via_path),
    ]
    return result


def corsproxy_argv(python: str, *flags: str) -> Callable[[int, Path], list[str]]:
    """`corsproxy serve` with these flags and the peer's port, nothing else."""
    return lambda port, _tmp: [python, "-m", "corsproxy", "serve", *flags, "--port", str(port)]


def config_peer(name: str, python: str, rules_file: Path) -> Peer:
    """corsproxy at its defaults with a config file."""
    return Peer(
        name,
        corsproxy_argv(python, "--config", str(rules_file)),
        lambda port, path: f"http://{HOST}:{port}{path}",
    )


def rules_config(upstream: Upstream, path: Path, count: int = 50) -> Path:
    """``count - 1`` rules the origin does not match (exact, wildcard, regex), then the
    one it does."""
    lines = [f"upstream: {upstream.base}", "rules:"]
    for index in range(count - 1):
        kind = index % 3
        if kind == 0:
            origin = f"https://app{index}.example.com"
        elif kind == 1:
            origin = f"https://*.team{index}.example.org"
        else:
            origin = f"regex:https://[a-z]+\\.svc{index}\\.example\\.net(:[0-9]+)?"
        lines += [f"  - path: /api{index}/**", f"    origins: ['{origin}']", "    allow_methods: ['*']"]
    lines += [
        "  - path: /**",
        "    origins: ['regex:http://(localhost|127\\.0\\.0\\.1)(:[0-9]+)?', 'http://[::1]:*']",
        "    allow_methods: ['*']",
        "    allow_headers: ['*', 'Authorization']",
        "    expose_headers: ['*']",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Running:
    peer: Peer
    port: int
    proc: subprocess.Popen[bytes] | None
    figures: Figures


def start_peer(peer: Peer, procs: Procs, tmp: Path) -> Running:
    if peer.argv is None:
        return Running(peer, 0, None, Figures())
    port = free_port()
    logfile = tmp / f"peer-{port}.log"
    proc = procs.start(peer.argv(port, tmp), PROXY_CORE, logfile, env=child_env())
    try:
        wait_http(peer.url(port, "/small"))
    except RuntimeError as error:
        procs.stop(proc)
        tail = logfile.read_text(errors="replace")[-1500:] if logfile.exists() else ""
        raise RuntimeError(f"{peer.name} did not start: {error}\n{tail}") from error
    return Running(peer, port, proc, Figures())


def record(figures: Figures, result: WrkResult, what: str) -> None:
    if result.errors:
        figures.errors += result.errors
        figures.notes.append(f"{what}: {result.errors} errors")


def measure_all(running: list[Running], args: argparse.Namespace, preflight_lua: Path) -> None:
    """Runs interleaved across peers (run 1 of every peer, then run 2, ...), so that a
    drift in the machine's background load hits every row alike, not one row."""
    headers = {"Origin": ORIGIN}
    for item in running:  # warm-up: imports, pools, caches; then idle RSS
        run_wrk(item.peer.url(item.port, "/small"), 1 if args.quick else 2, args.connections, headers=headers)
        run_wrk(item.peer.url(item.port, "/small"), 1, args.connections, script=preflight_lua)
        if item.proc is not None:
            time.sleep(0.5)
            item.figures.rss_idle.append(rss_bytes(process_tree(item.proc.pid)) / MIB)
    for run in range(args.runs):
        log(f"run {run + 1}/{args.runs}")
        for item in running:
            small, figures = item.peer.url(item.port, "/small"), item.figures
            result = run_wrk(small, args.seconds, args.connections, headers=headers)
            record(figures, result, "small GET")
            figures.small_rps.append(result.rps)
            figures.p50.append(result.p50_ms or 0.0)
            figures.p99.append(result.p99_ms or 0.0)
        for item in running:
            small, figures = item.peer.url(item.port, "/small"), item.figures
            result = run_wrk(small, args.seconds, args.connections, script=preflight_lua)
            if result.errors and item.peer.argv is None:
                figures.preflight_status_ok = False  # nginx's static module answers OPTIONS with 405
            else:
                record(figures, result, "preflight")
            figures.preflight_rps.append(result.rps)
        for item in running:
            one_connection(item, args, preflight_lua)
        for item in running:
            result = run_wrk(
                item.peer.url(item.port, "/1m"), args.seconds, args.big_connections, headers=headers
            )
            record(item.figures, result, "1 MiB")
            item.figures.mib_s.append(result.mib_per_s)
        for item in running:
            if item.proc is not None:
                downloads(item, args)


def one_connection(item: Running, args: argparse.Namespace, preflight_lua: Path) -> None:
    """wrk -c1: one request at a time, the latency of each, as one page's fetch sees it."""
    figures, small = item.figures, item.peer.url(item.port, "/small")
    get = run_wrk(small, args.seconds, 1, headers={"Origin": ORIGIN})
    record(figures, get, "small GET at -c1")
    figures.one_get_p50.append((get.p50_ms or 0.0) * 1000)
    figures.one_get_p99.append((get.p99_ms or 0.0) * 1000)
    preflight = run_wrk(small, args.seconds, 1, script=preflight_lua)
    if item.peer.argv is not None:
        record(figures, preflight, "preflight at -c1")
    figures.one_preflight_p50.append((preflight.p50_ms or 0.0) * 1000)
    figures.one_preflight_p99.append((preflight.p99_ms or 0.0) * 1000)


@dataclass
class Pairs:
    """B/A throughput ratios of interleaved short runs, one list per kind of request."""

    a: str
    b: str
    ratios: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0


def ab_pairs(a: Running, b: Running, args: argparse.Namespace, preflight_lua: Path) -> Pairs:
    """ABAB... for small GET and preflight: each pair's runs are back to back, and the
    order flips every pair (AB, BA, ...), so the machine's drift lands on both sides."""
    pairs = Pairs(a.peer.name, b.peer.name, {"small GET": [], "preflight": []})
    kinds = {"small GET": {"headers": {"Origin": ORIGIN}}, "preflight": {"script": preflight_lua}}
    for index in range(args.pairs):
        for kind, how in kinds.items():
            rps = {}
            for item in (a, b) if index % 2 == 0 else (b, a):
                result = run_wrk(
                    item.peer.url(item.port, "/small"), args.pair_seconds, args.connections, **how
                )  # type: ignore[arg-type]
                pairs.errors += result.errors
                rps[item.peer.name] = result.rps
            pairs.ratios[kind].append(rps[b.peer.name] / rps[a.peer.name])
    return pairs


def downloads(item: Running, args: argparse.Namespace) -> None:
    assert item.proc is not None
    figures, big = item.figures, item.peer.url(item.port, "/100m")
    sampler = PeakSampler(item.proc.pid)
    fast = run_downloads(big, 8, 0.0, args.download_seconds, sampler)
    figures.rss_fast.append(sampler.peak / MIB)
    figures.fast_mib_s.append(float(fast["mib_per_s"]))  # type: ignore[arg-type]
    if fast["errors"] or fast["complete"] != 8:
        figures.notes.append(f"fast 8x100MiB: {fast['complete']}/8 complete {fast['errors']}")
        figures.errors += len(fast["errors"])  # type: ignore[arg-type]
    time.sleep(0.5)
    sampler = PeakSampler(item.proc.pid)
    before = sampler.sample()
    slow = run_downloads(big, 8, args.slow_rate, args.seconds, sampler)
    figures.rss_slow.append(sampler.peak / MIB)
    figures.rss_slow_growth.append((sampler.peak - before) / MIB)
    if slow["errors"]:
        figures.notes.append(f"slow 8x100MiB: {slow['errors']}")
        figures.errors += len(slow["errors"])  # type: ignore[arg-type]
    time.sleep(0.5)


# ---------------------------------------------------------------- the table


def cell(values: list[float], fmt: str) -> str:
    if not values:
        return "—"
    med, spread = median_spread(values)
    text = format(med, fmt)
    return text if len(values) == 1 else f"{text} ±{spread * 100:.0f}%"


def med(values: list[float]) -> float | None:
    return median_spread(values)[0] if values else None


def ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "—"
    return f"{value / reference:.2f}"


COLUMNS = [
    ("small GET req/s", "small_rps", ",.0f"),
    ("p50 ms", "p50", ".2f"),
    ("p99 ms", "p99", ".2f"),
    ("preflight req/s", "preflight_rps", ",.0f"),
    ("1 MiB GET MiB/s", "mib_s", ",.0f"),
    ("RSS idle MiB", "rss_idle", ".1f"),
    ("peak RSS 8x100 MiB fast", "rss_fast", ".1f"),
    ("peak RSS 8x100 MiB slow", "rss_slow", ".1f"),
    ("RSS growth during slow", "rss_slow_growth", ".1f"),
]


LATENCY_COLUMNS = [
    ("small GET p50", "one_get_p50"),
    ("small GET p99", "one_get_p99"),
    ("preflight p50", "one_preflight_p50"),
    ("preflight p99", "one_preflight_p99"),
]


def added(figures: Figures, direct: Figures | None, attr: str) -> float | None:
    """The median latency this peer adds over going straight to the upstream, in µs."""
    mine = med(getattr(figures, attr))
    base = med(getattr(direct, attr)) if direct else None
    return None if mine is None or base is None else mine - base


def render(
    results: dict[str, Figures], pairs: list[Pairs], args: argparse.Namespace, started: float
) -> tuple[str, bool]:
    out = [f"# corsproxy benchmark ({time.strftime('%Y-%m-%d %H:%M')})", ""]
    out.append(
        f"{args.runs} run(s) x {args.seconds:g} s per figure, median ± half the min-max spread. "
        f"wrk -t1 -c{args.connections} (small GET, preflight), -c{args.big_connections} (1 MiB); "
        f"proxy on core {PROXY_CORE}, wrk + nginx upstream + clients on the other core; "
        f"slow clients read {args.slow_rate:g} MiB/s each for {args.seconds:g} s. "
        "RSS is the whole process tree of the peer (nginx: master + worker). "
        f"'{CORSPROXY}' is `corsproxy serve --upstream URL --port N`, nothing else: it logs one "
        "line per request to a file."
    )
    out += [
        "",
        "| peer | " + " | ".join(name for name, _, _ in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for name, figures in results.items():
        cells = []
        for _, attr, fmt in COLUMNS:
            text = cell(getattr(figures, attr), fmt)
            if attr == "preflight_rps" and not figures.preflight_status_ok:
                text += " (405)"
            cells.append(text)
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += [
        "",
        "Ratio to corsproxy (for latency and RSS, lower is better):",
        "",
        "| peer | " + " | ".join(name for name, _, _ in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    ref = results.get(CORSPROXY)
    for name, figures in results.items():
        cells = [
            ratio(med(getattr(figures, attr)), med(getattr(ref, attr)) if ref else None)
            for _, attr, _ in COLUMNS
        ]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    direct = results.get(DIRECT)
    out += [
        "",
        "Latency at one connection (wrk -c1), µs each proxy adds over going straight to the "
        "upstream (the direct row is the upstream's own latency; its preflight is nginx's 405):",
        "",
        "| peer | " + " | ".join(f"added {name}" for name, _ in LATENCY_COLUMNS) + " |",
        "|---" * (len(LATENCY_COLUMNS) + 1) + "|",
    ]
    for name, figures in results.items():
        if name == DIRECT:
            cells = [cell(getattr(figures, attr), ",.0f") for _, attr in LATENCY_COLUMNS]
        else:
            cells = [
                "—" if (value := added(figures, direct, attr)) is None else f"{value:,.0f}"
                for _, attr in LATENCY_COLUMNS
            ]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    for pair in pairs:
        out += [
            "",
            f"Interleaved A/B: {pair.b} against {pair.a}, {args.pairs} pairs of {args.pair_seconds:g} s "
            "runs, order flipped each pair; the ratio of req/s, B/A:",
            "",
            "| request | median ratio | spread (min to max) | middle half (quartiles) |",
            "|---|---|---|---|",
        ]
        for kind, ratios in pair.ratios.items():
            low, high = quartiles(ratios)
            out.append(
                f"| {kind} | {statistics.median(ratios):.3f} | {min(ratios):.3f} to {max(ratios):.3f} "
                f"| {low:.3f} to {high:.3f} |"
            )
    notes = [f"- {name}: {'; '.join(f.notes)}" for name, f in results.items() if f.notes]
    notes += [f"- A/B {pair.b}: {pair.errors} errors" for pair in pairs if pair.errors]
    if notes:
        out += ["", "Notes:", *notes]
    ok = True
    if ref is not None:
        out += ["", "Targets (corsproxy at its defaults):", ""]
        for text, passed in targets(results, pairs):
            out.append(f"- {'PASS' if passed else 'FAIL'} {text}")
            ok = ok and passed
    out += [
        "",
        f"Total time {time.time() - started:.0f} s; load average at the end "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])} (other work on the machine skews "
        "absolute numbers; runs are interleaved across peers so ratios suffer less).",
    ]
    return "\n".join(out) + "\n", ok


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    cuts = statistics.quantiles(values, n=4)
    return cuts[0], cuts[2]


def targets(results: dict[str, Figures], pairs: list[Pairs]) -> list[tuple[str, bool]]:
    cp = results[CORSPROXY]
    checks: list[tuple[str, bool]] = []

    def against(peer: str, attr: str, op: str, factor: float, label: str) -> None:
        if peer not in results:
            return
        mine, theirs = med(getattr(cp, attr)), med(getattr(results[peer], attr))
        if mine is None or theirs is None:
            return
        passed = mine >= factor * theirs if op == ">=" else mine <= factor * theirs
        checks.append(
            (
                f"{label}: {mine:,.2f} vs {peer} {theirs:,.2f} = {mine / theirs:.2f}x "
                f"(target {op} {factor}x)",
                passed,
            )
        )

    def added_against(peer: str, attr: str, factor: float | None, label: str) -> None:
        direct = results.get(DIRECT)
        if peer not in results or direct is None:
            return
        mine, theirs = added(cp, direct, attr), added(results[peer], direct, attr)
        if mine is None or theirs is None or theirs <= 0:
            return
        text = f"{label}: corsproxy adds {mine:,.0f} µs, {peer} {theirs:,.0f} µs = {mine / theirs:.2f}x"
        if factor is None:
            checks.append((text + " (reported)", True))
        else:
            checks.append((text + f" (target <= {factor}x)", mine <= factor * theirs))

    against(CA_KEEPALIVE, "small_rps", ">=", 1.2, "small GET req/s")
    against(NAIVE, "small_rps", ">=", 1.6, "small GET req/s")
    against(CA_KEEPALIVE, "preflight_rps", ">=", 1.0, "preflight req/s")
    against(NAIVE, "p99", "<=", 0.7, "p99 latency at 50 conns")
    added_against(CA_KEEPALIVE, "one_get_p50", 0.6, "added p50 at -c1, small GET")
    added_against(CA_KEEPALIVE, "one_preflight_p50", 0.6, "added p50 at -c1, preflight")
    added_against(NGINX_CORS, "one_get_p50", None, "added p50 at -c1, small GET")
    added_against(NGINX_CORS, "one_preflight_p50", None, "added p50 at -c1, preflight")
    against(NGINX_CORS, "mib_s", ">=", 0.9, "1 MiB GET MiB/s")
    if cp.rss_slow_growth and cp.rss_idle:
        value = med(cp.rss_slow_growth) or 0.0
        over_idle = (med(cp.rss_slow) or 0.0) - cp.rss_idle[0]
        checks.append(
            (
                f"RSS growth streaming 8x100 MiB to slow clients: {value:.1f} MiB over the RSS "
                f"just before ({over_idle:.1f} MiB over idle, after the fast run) (target ≤ 10)",
                value <= 10,
            )
        )
    # Each pair's B is the heavier side: the default log against `--log-level warning`,
    # 50 rules against one. Its ratio B/A is what the feature costs.
    floors = {CORSPROXY: (0.90, "the per-request log line"), RULES50: (0.95, "50 rules")}
    for pair in pairs:
        floor, what = floors.get(pair.b, (0.95, pair.b))
        for kind, ratios in pair.ratios.items():
            value = statistics.median(ratios)
            checks.append(
                (
                    f"{what}, {kind}: {pair.b} runs at {value:.3f}x {pair.a} "
                    f"(median of {len(ratios)} interleaved pairs, {min(ratios):.3f} to {max(ratios):.3f}; "
                    f"target >= {floor})",
                    value >= floor,
                )
            )
    errors = cp.errors + sum(pair.errors for pair in pairs)
    checks.append((f"corsproxy errors: {errors} (target 0)", errors == 0))
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run x 3 s per figure (smoke test)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--big-connections", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=10, help="interleaved A/B pairs (at least 10)")
    parser.add_argument("--pair-seconds", type=float, default=2.0, help="length of each A/B run")
    # (--quick keeps the pairs as they are: shorter runs would only measure the noise.)
    parser.add_argument("--slow-rate", type=float, default=2.0, help="MiB/s per slow client")
    parser.add_argument("--download-seconds", type=float, default=60.0, help="bound on a fast 8x100 MiB run")
    parser.add_argument(
        "--python",
        default=python_for_project(),
        help="interpreter for corsproxy and the naive proxy (default: the project venv)",
    )
    parser.add_argument(
        "--only", action="append", help="run only peers whose name contains this (repeatable)"
    )
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "latest.md")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds, args.download_seconds = 1, 3.0, 30.0
    started = time.time()
    ensure_tools(need_node=True)
    procs = Procs()
    tmp = make_workdir()
    try:
        upstream = start_upstream(procs, tmp)
        preflight_lua = write_preflight_script(tmp)
        rules_files = (
            rules_config(upstream, tmp / "rules1.yaml", 1),
            rules_config(upstream, tmp / "rules50.yaml"),
        )
        loop = "uvloop" if importable(args.python, "uvloop") else "asyncio"
        results: dict[str, Figures] = {}
        running: list[Running] = []
        for peer in peers(upstream, args.python):
            if args.only and not any(word in peer.name for word in args.only):
                continue
            try:
                running.append(start_peer(peer, procs, tmp))
            except RuntimeError as error:
                log(f"{peer.name}: {error}")
                failed = Figures()
                failed.notes.append(f"failed to start: {str(error).splitlines()[0]}")
                results[peer.name] = failed
        log("peers: " + ", ".join(item.peer.name for item in running))
        measure_all(running, args, preflight_lua)
        order = [item.peer.name for item in running] + list(results)
        results.update({item.peer.name: item.figures for item in running})
        results = {name: results[name] for name in order}
        # Both pick uvloop up by themselves when it is installed (corsproxy's [speed] extra).
        for name in (CORSPROXY, CORSPROXY_QUIET, NAIVE):
            if name in results:
                results[name].notes.insert(0, f"event loop: {loop}")
        pairs = interleaved_pairs(running, args, preflight_lua, procs, tmp, rules_files)
        text, ok = render(results, pairs, args, started)
    finally:
        procs.stop_all()
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    log(f"written to {args.output}")
    return 0 if ok else 1


def interleaved_pairs(
    running: list[Running],
    args: argparse.Namespace,
    preflight_lua: Path,
    procs: Procs,
    tmp: Path,
    rules_files: tuple[Path, Path],
) -> list[Pairs]:
    """The log line (defaults against --log-level warning), and 50 rules against their
    matching one alone."""
    by_name = {item.peer.name: item for item in running}
    default = by_name.get(CORSPROXY)
    if default is None:
        return []
    pairs: list[Pairs] = []
    if CORSPROXY_QUIET in by_name:
        log(f"A/B: the log line, {args.pairs} pairs")
        pairs.append(ab_pairs(by_name[CORSPROXY_QUIET], default, args, preflight_lua))
    log(f"A/B: 50 rules, {args.pairs} pairs")
    one, many = (
        start_peer(config_peer(name, args.python, path), procs, tmp)
        for name, path in zip((RULES1, RULES50), rules_files, strict=True)
    )
    for item in (one, many):
        run_wrk(item.peer.url(item.port, "/small"), 1, args.connections, headers={"Origin": ORIGIN})
    pairs.append(ab_pairs(one, many, args, preflight_lua))
    return pairs


def importable(python: str, module: str) -> bool:
    return (
        subprocess.run([python, "-c", f"import {module}"], capture_output=True, check=False).returncode == 0
    )


if __name__ == "__main__":
    raise SystemExit(main())
