"""Alert engine throughput, per-alert latency and memory, beside baselines measured in the same run.

    .venv/bin/python -m bench.engine_bench [--alerts N] [--cis N]

Cases: the full engine (dedup, correlation with topology, maintenance, severity, lifecycle) on a
mix of new alerts, repeats and resolves against a CMDB of --cis items; the same with every alert a
duplicate (the dedup fast path); and baselines: Avro decode alone, and state JSON round trip alone
(what the Faust table costs per alert).
"""

from __future__ import annotations

import argparse

from bench.measure import measure, table
from streams.core import models as m
from streams.core.serde import AvroSerde
from tests.alerting import Harness, am


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
    from streams.stages.alerts.state import decode_state, encode_state

    state = h2.store.data["dup"]  # a realistic state value (what the Faust table stores)

    rows = [
        measure("engine: new, repeat, escalate, resolve", mixed, engine),
        measure("engine: duplicates only (dedup path)", [dup] * n, dedup),
        measure("baseline: Avro decode to Alert", encoded, lambda b: serde.decode(b, m.Alert)),
        measure(
            "baseline: state round trip (MessagePack)", [state] * n, lambda s: encode_state(decode_state(s))
        ),
    ]
    print(f"{n} alerts, CMDB of {args.cis} CIs ({len(h1.store.data)} fingerprints in state at the end)")
    print(table(rows, "alerts"))


if __name__ == "__main__":
    main()
