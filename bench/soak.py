"""Load and soak check for corsproxy (issue 6). Exits 1 when a target is missed.

    python bench/soak.py [--requests 100000] [--concurrency 200]

(a) --requests small GETs (with Origin) at --concurrency through the proxy, by wrk with a
    request cap (lua): errors must be zero, RSS after the run within 10% of RSS after a
    warm-up of a tenth as many requests.
(b) 8 concurrent downloads of a 100 MiB file through the proxy, by fast clients and then
    by slow ones (2 MiB/s each, 10 s): peak proxy RSS must stay under 100 MiB.
nginx is the upstream, everything on 127.0.0.1, every step bounded in time.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    HOST,
    LOAD_CORE,
    MIB,
    ORIGIN,
    PROXY_CORE,
    PeakSampler,
    Procs,
    child_env,
    ensure_tools,
    free_port,
    log,
    make_workdir,
    parse_wrk,
    process_tree,
    python_for_project,
    rss_bytes,
    run_downloads,
    run_wrk,
    start_upstream,
    wait_http,
)

CAPPED_LUA = """
wrk.headers["Origin"] = "{origin}"
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) count = 0; bad = 0 end
function response(status, headers, body)
  count = count + 1
  if status ~= 200 then bad = bad + 1 end
  if count >= {limit} then wrk.thread:stop() end
end
function done(summary, latency, requests)
  local total, failed = 0, 0
  for _, t in ipairs(threads) do total = total + t:get("count"); failed = failed + t:get("bad") end
  io.write(string.format("CAPPED total=%d bad=%d\\n", total, failed))
end
"""


def capped_wrk(url: str, requests: int, connections: int, bound: float, tmp: Path) -> dict[str, float]:
    """Exactly ``requests`` responses, counted and stopped by lua (one wrk thread).

    wrk's thread:stop() ends the load but wrk still waits out -d, so -d is sized from a
    2 s probe of the rate (twice the expected time, plus 5 s), never beyond ``bound``."""
    probe = run_wrk(url, 2, connections, headers={"Origin": ORIGIN})
    expected = requests / max(probe.rps, 1.0)
    duration = min(bound, 2 * expected + 5)
    script = tmp / f"capped-{requests}.lua"
    script.write_text(CAPPED_LUA.format(origin=ORIGIN, limit=requests))
    argv = [
        "taskset",
        "-c",
        LOAD_CORE,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{int(duration)}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr}")
    result = parse_wrk(done.stdout)
    capped = re.search(r"CAPPED total=(\d+) bad=(\d+)", done.stdout)
    total, bad = (int(capped[1]), int(capped[2])) if capped else (0, 0)
    return {
        "responses": total,
        "non_200": bad + probe.errors,
        "wrk_errors": result.errors,
        "seconds": duration,
        "rps": probe.rps,
        "p99_ms": result.p99_ms or 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--bound", type=float, default=300.0, help="seconds allowed for the request run")
    parser.add_argument("--python", default=python_for_project())
    args = parser.parse_args()
    ensure_tools()
    procs = Procs()
    tmp = make_workdir()
    failures: list[str] = []
    try:
        upstream = start_upstream(procs, tmp)
        port = free_port()
        proxy = procs.start(
            [
                args.python,
                "-m",
                "corsproxy",
                "serve",
                "--upstream",
                upstream.base,
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            PROXY_CORE,
            tmp / "corsproxy.log",
            env=child_env(),
        )
        wait_http(f"http://{HOST}:{port}/small")
        url = f"http://{HOST}:{port}/small"
        pids = process_tree(proxy.pid)

        # (a) requests at concurrency
        warm = max(1000, args.requests // 10)
        log(f"warm-up: {warm} requests at concurrency {args.concurrency}")
        first = capped_wrk(url, warm, args.concurrency, args.bound, tmp)
        time.sleep(1)
        rss_warm = rss_bytes(pids) / MIB
        log(f"soak: {args.requests} requests at concurrency {args.concurrency}")
        run = capped_wrk(url, args.requests, args.concurrency, args.bound, tmp)
        time.sleep(1)
        rss_after = rss_bytes(pids) / MIB
        growth = (rss_after - rss_warm) / rss_warm
        errors = int(run["non_200"] + run["wrk_errors"] + first["non_200"] + first["wrk_errors"])
        print(
            f"(a) {int(run['responses'])} responses within a {run['seconds']:.0f} s window "
            f"(probe {run['rps']:,.0f} req/s, p99 {run['p99_ms']:.1f} ms) at concurrency {args.concurrency}; "
            f"errors {errors} (non-200 {int(run['non_200'])}, socket {int(run['wrk_errors'])}); "
            f"RSS after warm-up {rss_warm:.1f} MiB, after run {rss_after:.1f} MiB ({growth:+.1%})"
        )
        if run["responses"] < args.requests:
            failures.append(f"only {int(run['responses'])}/{args.requests} responses within {args.bound:g} s")
        if errors:
            failures.append(f"{errors} errors")
        if growth > 0.10:
            failures.append(f"RSS grew {growth:.1%} (limit 10%)")
        if proxy.poll() is not None:
            failures.append("the proxy died")

        # (b) 8 concurrent 100 MiB downloads
        big = f"http://{HOST}:{port}/100m"
        for label, rate, bound in (("fast", 0.0, 120.0), ("slow 2 MiB/s each, 10 s", 2.0, 10.0)):
            sampler = PeakSampler(proxy.pid)
            before = sampler.sample() / MIB
            result = run_downloads(big, 8, rate, bound, sampler)
            peak = sampler.peak / MIB
            print(
                f"(b) 8x100 MiB {label}: {result['complete']}/8 complete, "
                f"{int(result['total_bytes']) / MIB:,.0f} MiB at {result['mib_per_s']} MiB/s; "  # type: ignore[call-overload]
                f"proxy RSS before {before:.1f} MiB, peak {peak:.1f} MiB (+{peak - before:.1f})"
            )
            if result["errors"]:
                failures.append(f"{label} downloads: {result['errors']}")
            if rate == 0.0 and result["complete"] != 8:
                failures.append(f"{label}: only {result['complete']}/8 downloads complete")
            if peak >= 100:
                failures.append(f"{label}: peak RSS {peak:.1f} MiB (limit 100)")
            time.sleep(0.5)
    finally:
        procs.stop_all()
    for failure in failures:
        print(f"FAIL {failure}")
    print("soak: OK" if not failures else f"soak: {len(failures)} target(s) missed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
