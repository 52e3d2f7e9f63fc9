"""Alert engine throughput, per-alert latency and memory, beside baselines measured in the same run.

    .venv/bin/python -m bench.engine_bench [--alerts N] [--cis N]

Cases: the full engine (dedup, correlation with topology, maintenance, severity, lifecycle) on a
mix of new alerts, repeats and resolves against a CMDB of --cis items; the same with every alert a
duplicate (the dedup fast path); and baselines: Avro decode alone, and the state round trip
(MessagePack) alone (what the table costs per alert). Then the worker's AlertProcessor on the worker bench's
workloads with no Kafka at all: the ceiling of its own work per record, with or without Faust.
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
    print("the worker's AlertProcessor, no Kafka (records in batches of 500, outputs encoded and dropped,")
    print("states in a dict; best of 3):")
    for name, (new, repeats, resolves) in {
        "new alerts only": (n, 0, 0),
        "mix: 1/3 new, 6/10 repeats, 1/15 resolves": (n // 3, n * 6 // 10, n // 15),
    }.items():
        per_s = processor_rate(new, repeats, resolves)
        print(f"  {name:<42} {per_s:>11,.0f} records/s {1e6 / per_s:8.1f} us/record")


def processor_rate(new: int, repeats: int, resolves: int) -> float:
    """Records/s of AlertProcessor.start_batch + finish (decode, the engine's stages under the
    default rules, every output Avro-encoded, the state in MessagePack) on the worker bench's
    workload, with nothing sent anywhere: the worker's own work per record, whatever consumes and
    produces for it."""
    import asyncio
    import time

    from bench.worker_bench import workload
    from streams.core.messages import Consumed
    from streams.core.rules import load_rules
    from streams.core.settings import Settings
    from streams.processors.alerts import AlertProcessor
    from streams.processors.indexes import CIIncidentIndex, WindowIndex
    from streams.stages.cmdb import CMDBIndex

    serde = AvroSerde()
    records = [
        Consumed(key, value, [], "b.alerts.raw", i % 6, i // 6)
        for i, (key, value) in enumerate(workload(new, repeats, resolves))
    ]

    async def emit(topic: str, key: bytes | None, value: bytes | None, headers: object) -> None:
        return None

    async def run() -> float:
        processor = AlertProcessor(
            Settings(topic_prefix="b."),
            serde,
            emit,
            load_rules(),
            {},
            CMDBIndex(),
            CIIncidentIndex(),
            WindowIndex(serde, "b.maintenance.windows"),
        )
        started = time.perf_counter()
        for i in range(0, len(records), 500):
            await (await processor.start_batch(records[i : i + 500])).finish()
        return time.perf_counter() - started

    asyncio.run(run())  # warm-up
    return len(records) / min(asyncio.run(run()) for _ in range(3))


if __name__ == "__main__":
    main()
