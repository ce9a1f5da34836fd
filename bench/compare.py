"""This tree against an earlier revision, at the defaults users run, in interleaved A/B pairs.

    python bench/compare.py REV                 # e.g. a commit before a feature landed
    python bench/compare.py REV --pairs 20

Both run `corsproxy serve --upstream URL --port N` and nothing else (the per-request log
line going to a file), the revision's source unpacked with `git archive` into a temp dir
and put first on sys.path, so both use this venv's packages. Small GET and preflight
are run as pairs of short runs back to back, the order flipped every pair, so the
machine's drift lands on both sides; the report is the median ratio (this tree over REV)
with its quartiles and range. Same machine layout as bench/run.py.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ORIGIN,
    REPO,
    Procs,
    ensure_tools,
    log,
    make_workdir,
    python_for_project,
    run_wrk,
    start_upstream,
    write_preflight_script,
)
from run import Peer, ab_pairs, corsproxy_argv, start_peer


def unpack(revision: str, into: Path) -> str:
    """The revision's tree in ``into``; returns its short commit name."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", revision], capture_output=True, text=True, check=True
    ).stdout.strip()


def baseline_argv(python: str, source: Path, *flags: str) -> Callable[[int, Path], list[str]]:
    """`corsproxy serve` from the unpacked revision: first on sys.path, and checked to be
    the one imported (the editable install's finder comes after sys.path)."""
    start = (
        f"import sys; sys.path.insert(0, {str(source)!r}); import corsproxy; "
        f"assert corsproxy.__file__.startswith({str(source)!r}), corsproxy.__file__; "
        "from corsproxy.cli.main import main; sys.exit(main())"
    )
    return lambda port, _tmp: [python, "-c", start, "serve", *flags, "--port", str(port)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision", help="the earlier revision (any git name)")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--pair-seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--python", default=python_for_project())
    args = parser.parse_args()
    ensure_tools()
    procs = Procs()
    tmp = make_workdir()
    try:
        upstream = start_upstream(procs, tmp)
        preflight_lua = write_preflight_script(tmp)
        commit = unpack(args.revision, tmp / "baseline")
        flags = ("--upstream", upstream.base)
        url = lambda port, path: f"http://127.0.0.1:{port}{path}"  # noqa: E731
        here = start_peer(Peer("this tree", corsproxy_argv(args.python, *flags), url), procs, tmp)
        before = start_peer(
            Peer(commit, baseline_argv(args.python, tmp / "baseline", *flags), url), procs, tmp
        )
        for item in (before, here):
            run_wrk(item.peer.url(item.port, "/small"), 1, args.connections, headers={"Origin": ORIGIN})
        log(f"A/B: {commit} against this tree, {args.pairs} pairs of {args.pair_seconds:g} s")
        pairs = ab_pairs(before, here, args, preflight_lua)
    finally:
        procs.stop_all()
    print(f"this tree over {commit}, `corsproxy serve --upstream URL` at its defaults, -c{args.connections}:")
    print("| request | median ratio | quartiles | min to max |")
    print("|---|---|---|---|")
    for kind, values in pairs.ratios.items():
        low, _, high = statistics.quantiles(values, n=4)
        middle = statistics.median(values)
        print(f"| {kind} | {middle:.3f} | {low:.3f} to {high:.3f} | {min(values):.3f} to {max(values):.3f} |")
    if pairs.errors:
        print(f"wrk reported {pairs.errors} socket errors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
