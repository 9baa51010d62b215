"""CPU per event of `parse_body` + `to_compacts` + `Compact.encode`, single and batch bodies.

    .venv/bin/python -m bench.parsecost [--against OLD/app/events.py] [--rounds N]

The same bodies as the ingest benches (single ~1.8 KB payloads; 500-event arrays of ~2.5 KB
ones); garbage collection stays on, as in the web process. `--against` loads another
version of app/events.py beside this one; the versions and the bare endpoint's validation
(`bench.bare`, for scale) are measured in turns and the best round of each counts, so a
before/after comes from one process. A diagnostic beside `bench/run`, not a §10 figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from types import ModuleType

from app import events
from bench import bare
from bench.common import batch_body, mixed_templates

BATCH = 500


def _load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("events_against", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


def _work(module: ModuleType, bodies: list[bytes], now_ms: int) -> Callable[[], int]:
    def run() -> int:
        n = 0
        for body in bodies:
            parsed = module.parse_body(body, BATCH)
            compacts, ignored = module.to_compacts(parsed, now_ms, 86_400)
            n += len([c.encode("bench00000") for c in compacts]) + ignored
        return n

    return run


def _bare(bodies: list[bytes], now_ms: int) -> Callable[[], int]:
    def run() -> int:
        return sum(bare.validate(body) for body in bodies)

    return run


def _bodies(time_ms: int) -> tuple[list[bytes], list[bytes]]:
    single = mixed_templates(time_ms)
    singles = [
        f"{p}{i:08x}-0000-4000-8000-{time_ms:012x}{s}".encode()
        for i in range(3000)
        for p, s in [single[i % 3]]
    ]
    indented = mixed_templates(time_ms, indent=True)
    batches = [batch_body(indented, BATCH, k * BATCH, k + 1) for k in range(12)]
    return singles, batches


def main() -> None:
    """Print CPU µs per event for each version and body kind."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--against", help="another app/events.py to measure beside this one")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per version (best counts)")
    args = parser.parse_args()
    versions: dict[str, ModuleType | None] = {"this": events}
    if args.against:
        versions["against"] = _load(args.against)
    versions["bare"] = None  # the bare endpoint's model_validate_json
    now_ms = int(time.time() * 1000)
    singles, batches = _bodies(now_ms)
    for kind, bodies in (("single", singles), (f"batch {BATCH}", batches)):
        best = {name: float("inf") for name in versions}
        for _ in range(args.rounds):
            for name, module in versions.items():
                run = _work(module, bodies, now_ms) if module else _bare(bodies, now_ms)
                started = time.process_time()
                n = run()
                best[name] = min(best[name], (time.process_time() - started) / n * 1e6)
        for name, cost in best.items():
            print(f"{kind:<10} {name:<8} {cost:6.2f} us CPU per event", flush=True)


if __name__ == "__main__":
    main()
