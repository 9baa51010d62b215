"""The §10 benchmark: one run, one table, every figure against a baseline of the same run.

bench/run [--quick] [--only ingest,batch,webhook,processing,freshness,stuck,memory,growth,reads,
                           backfill]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from redis.exceptions import RedisError

from bench import (
    backfill,
    batch,
    freshness,
    growth,
    ingest,
    memory,
    processing,
    reads,
    stuck,
    webhook,
)
from bench.common import Row, log

SECTIONS: dict[str, Callable[[bool, int], tuple[list[Row], list[str]]]] = {
    "ingest": ingest.measure,
    "batch": batch.measure,
    "webhook": webhook.measure,
    "processing": processing.measure,
    "freshness": freshness.measure,
    "stuck": stuck.measure,
    "memory": memory.measure,
    "growth": growth.measure,
    "reads": reads.measure,
    "backfill": backfill.measure,
}


def render(rows: Sequence[Row]) -> str:
    """Rows as an aligned plain-text table."""
    header = ("Measure", "Value", "Baseline", "Ratio", "Target (§10)", "Status")
    cells = [header]
    for r in rows:
        status = "" if r.met is None else ("met" if r.met else "NOT met")
        cells.append((r.measure, r.value, r.baseline, r.ratio, r.target, status))
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = []
    for n, c in enumerate(cells):
        lines.append("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True)
        return out.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _versions() -> str:
    redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    wrk = "wrk 4.1.0" if shutil.which("wrk") else "wrk missing"
    return f"Python {platform.python_version()}, {redis_v.stdout.split(' sha')[0]}, {wrk}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected sections and print the table."""
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs, smaller samples")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help="comma-separated sections to run"
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    now_ms = int(time.time() * 1000)
    rows: list[Row] = []
    notes: list[str] = []
    try:
        for name in chosen:
            log(f"section {name}")
            try:
                r, n = SECTIONS[name](args.quick, now_ms)
            except (RuntimeError, OSError, ValueError, KeyError, RedisError) as exc:
                log(f"section {name} FAILED: {exc!r}")
                r, n = [Row(f"{name}: FAILED", type(exc).__name__, met=False)], [f"{exc}"]
            rows += r
            notes += [f"[{name}] {x}" for x in n]
    except KeyboardInterrupt:
        log("interrupted; every process started by the benchmark has been stopped")
        return 130
    elapsed = time.monotonic() - began
    load_after = os.getloadavg()[0]
    head = [
        f"injixo-freshchat benchmark (§10) — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{'quick' if args.quick else 'full'} run, {elapsed:.0f} s",
        f"Command: bench/run{' --quick' if args.quick else ''}"
        + (f" --only {args.only}" if args.only != ",".join(SECTIONS) else ""),
        f"Machine: {os.cpu_count()} cores, load average before/after "
        f"{load_before:.1f}/{load_after:.1f}; {_versions()}; commit {_git_head()}",
        "Redis: private redis-server per section, persistence OFF (--appendonly no --save '')"
        " unless a row says appendfsync always.",
        "One web process each (WEB_CONCURRENCY=1, uvicorn, same flags); one worker process"
        " each. Load generators share the 2 cores: their CPU use is in the notes.",
        "",
    ]
    sys.stdout.write("\n".join(head) + "\n" + render(rows) + "\n\nNotes:\n")
    sys.stdout.write("".join(f"- {n}\n" for n in notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
