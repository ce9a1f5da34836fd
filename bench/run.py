"""The corsproxy benchmark (issue 7): one command, a markdown table.

    python bench/run.py            # 3 runs x 10 s per figure
    python bench/run.py --quick    # 1 run x 3 s per figure, for smoke-testing

nginx serves the upstream (100 B, 1 MiB, 100 MiB files, its own nginx.conf in a temp
dir); each peer proxies it in turn, pinned to core 0, with wrk, the upstream and the
download clients pinned to core 1. All on 127.0.0.1, every load bounded in time,
every process stopped by PID on exit. The table goes to stdout and to
bench/results/latest.md.
"""

from __future__ import annotations

import argparse
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
NAIVE = "naive aiohttp"
CA_KEEPALIVE = "cors-anywhere keep-alive"
NGINX_CORS = "nginx as CORS proxy"
RULES50 = "corsproxy, 50 rules"
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
    errors: int = 0
    notes: list[str] = field(default_factory=list)


def peers(upstream: Upstream, python: str, rules_file: Path) -> list[Peer]:
    base = upstream.base
    node_bin = BENCH / "node_modules" / ".bin"

    def via_path(port: int, path: str) -> str:
        return f"http://{HOST}:{port}{path}"

    result = [
        Peer(DIRECT, None, lambda _port, path: base + path),
        Peer(
            CORSPROXY,
            lambda port, _tmp: [
                python,
                "-m",
                "corsproxy",
                "serve",
                "--upstream",
                base,
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            via_path,
        ),
    ]
    result += [
        Peer(
            RULES50,
            lambda port, _tmp: [
                python,
                "-m",
                "corsproxy",
                "serve",
                "--config",
                str(rules_file),
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            via_path,
        ),
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


def rules_config(upstream: Upstream, path: Path, count: int = 50) -> Path:
    """49 rules the origin does not match (exact, wildcard, regex), then the one it does."""
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
            result = run_wrk(
                item.peer.url(item.port, "/1m"), args.seconds, args.big_connections, headers=headers
            )
            record(item.figures, result, "1 MiB")
            item.figures.mib_s.append(result.mib_per_s)
        for item in running:
            if item.proc is not None:
                downloads(item, args)


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


def render(results: dict[str, Figures], args: argparse.Namespace, started: float) -> tuple[str, bool]:
    out = [f"# corsproxy benchmark ({time.strftime('%Y-%m-%d %H:%M')})", ""]
    out.append(
        f"{args.runs} run(s) x {args.seconds:g} s per figure, median ± half the min-max spread. "
        f"wrk -t1 -c{args.connections} (small GET, preflight), -c{args.big_connections} (1 MiB); "
        f"proxy on core {PROXY_CORE}, wrk + nginx upstream + clients on the other core; "
        f"slow clients read {args.slow_rate:g} MiB/s each for {args.seconds:g} s. "
        "RSS is the whole process tree of the peer (nginx: master + worker)."
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
    notes = [f"- {name}: {'; '.join(f.notes)}" for name, f in results.items() if f.notes]
    if notes:
        out += ["", "Notes:", *notes]
    ok = True
    if ref is not None:
        out += ["", "Targets (issue 7):", ""]
        checks = targets(results)
        for text, passed in checks:
            out.append(f"- {'PASS' if passed else 'FAIL'} {text}")
            ok = ok and passed is not False
    out += [
        "",
        f"Total time {time.time() - started:.0f} s; load average at the end "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])} (other work on the machine skews "
        "absolute numbers; runs are interleaved across peers so ratios suffer less).",
    ]
    return "\n".join(out) + "\n", ok


def targets(results: dict[str, Figures]) -> list[tuple[str, bool]]:
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

    against(NAIVE, "small_rps", ">=", 1.5, "small GET req/s")
    against(CA_KEEPALIVE, "small_rps", ">=", 1.5, "small GET req/s")
    against(CA_KEEPALIVE, "preflight_rps", ">=", 1.0, "preflight req/s")
    against(NAIVE, "p99", "<=", 0.7, "p99 latency at 50 conns")
    against(NGINX_CORS, "mib_s", ">=", 0.7, "1 MiB GET MiB/s")
    against(NAIVE, "rss_idle", "<=", 1.0, "idle RSS")
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
    if RULES50 in results:
        for attr, label in (("small_rps", "small GET"), ("preflight_rps", "preflight")):
            many, one = med(getattr(results[RULES50], attr)), med(getattr(cp, attr))
            if many and one:
                checks.append(
                    (f"50 rules vs 1, {label}: {many / one:.3f}x (target within 5%)", many >= 0.95 * one)
                )
    errors = cp.errors + (results[RULES50].errors if RULES50 in results else 0)
    checks.append((f"corsproxy errors: {errors} (target 0)", errors == 0))
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run x 3 s per figure (smoke test)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--big-connections", type=int, default=8)
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
        rules_file = rules_config(upstream, tmp / "rules50.yaml")
        loop = "uvloop" if importable(args.python, "uvloop") else "asyncio"
        results: dict[str, Figures] = {}
        running: list[Running] = []
        for peer in peers(upstream, args.python, rules_file):
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
        for name in (CORSPROXY, NAIVE):
            if name in results:
                results[name].notes.insert(0, f"event loop: {loop}")
        text, ok = render(results, args, started)
    finally:
        procs.stop_all()
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    log(f"written to {args.output}")
    return 0 if ok else 1


def importable(python: str, module: str) -> bool:
    return (
        subprocess.run([python, "-c", f"import {module}"], capture_output=True, check=False).returncode == 0
    )


if __name__ == "__main__":
    raise SystemExit(main())
