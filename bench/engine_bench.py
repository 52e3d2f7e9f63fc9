"""Alert engine throughput, per-alert latency and memory, beside baselines measured in the same run.

    .venv/bin/python -m bench.engine_bench [--alerts N] [--cis N]

Cases: the full engine (dedup, correlation with topology, maintenance, severity, lifecycle) on a
mix of new alerts, repeats and resolves against a CMDB of --cis items; the same with every alert a
duplicate (the dedup fast path); and baselines: Avro decode alone, and state JSON round trip alone
(what the Faust table costs per alert).
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from streams.core import models as m
from streams.core.serde import AvroSerde
from tests.alerting import Harness, am


def run(name: str, items: list[Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    for item in items:
        fn(item)
    total = time.perf_counter() - t0
    lat = []
    for item in items[: min(len(items), 5000)]:
        s = time.perf_counter_ns()
        fn(item)
        lat.append(time.perf_counter_ns() - s)
    tracemalloc.start()
    for item in items[:2000]:
        fn(item)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    q = statistics.quantiles(lat, n=100)
    return {
        "case": name,
        "per_s": len(items) / total,
        "p50": q[49] / 1000,
        "p99": q[98] / 1000,
        "kib": peak / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=20000)
    parser.add_argument("--cis", type=int, default=5000)
    args = parser.parse_args()
    n = args.alerts

    def harness() -> Harness:
        h = Harness(dedup_window=3600)
        h.ci("db-core")
        for i in range(args.cis):
            h.ci(f"host-{i}", hostname=f"host-{i}.example.com", depends_on=["db-core"] if i % 10 == 0 else [])
        return h

    mixed = []
    for i in range(n):
        fp = f"f{i % (n // 4)}"
        status = "RESOLVED" if i % 7 == 6 else "FIRING"
        mixed.append(
            am(fp, status, severity=("warning", "critical")[i % 2], instance=f"host-{i % args.cis}:9100")
        )
    h1 = harness()

    def engine(alert: m.Alert) -> None:
        h1.advance(0.01)
        h1.send(alert)

    h2 = harness()
    dup = am("dup", instance="host-1:9100")
    h2.send(dup)

    def dedup(alert: m.Alert) -> None:
        h2.advance(0.001)
        h2.send(alert)

    serde = AvroSerde()
    encoded = [serde.encode(a) for a in mixed[:n]]
    from streams.stages.state import AlertState

    state = h2.store.data["dup"]  # a realistic state value (what the Faust table stores)

    rows = [
        run("engine: new, repeat, escalate, resolve", mixed, engine),
        run("engine: duplicates only (dedup path)", [dup] * n, dedup),
        run("baseline: Avro decode to Alert", encoded, lambda b: serde.decode(b, m.Alert)),
        run(
            "baseline: state JSON round trip",
            [state] * n,
            lambda s: AlertState.model_validate_json(AlertState.model_validate_json(s).model_dump_json()),
        ),
    ]
    print(f"{n} alerts, CMDB of {args.cis} CIs ({len(h1.store.data)} fingerprints in state at the end)")
    print(f"{'case':<42} {'alerts/s':>10} {'p50 us':>8} {'p99 us':>8} {'KiB/2000':>9}")
    for r in rows:
        print(f"{r['case']:<42} {r['per_s']:>10,.0f} {r['p50']:>8.1f} {r['p99']:>8.1f} {r['kib']:>9.0f}")


if __name__ == "__main__":
    main()
