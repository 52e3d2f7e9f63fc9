"""What this round's safety adds per request and per record, beside baselines in the same run.

    .venv/bin/python -m bench.intake_bench [--requests N] [--records N]

- The gateway's strict JSON parse (connectors/jsonbody.py: UTF-8 check, duplicate keys, depth,
  number limits, lone surrogates) of the bundled Alertmanager webhook, against plain json.loads
  of the same bytes and against the whole mapping to canonical alerts that follows it.
- The worker's DeliveryCursor (admit + done per record, positions cached), against a bare loop
  over the same records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.measure import measure, table
from connectors.jsonbody import parse_json
from connectors.sources.alertmanager.mapping import to_alerts
from streams.agents.delivery import DeliveryCursor, TopicPartition

SAMPLE = Path(__file__).resolve().parents[1] / "tests/data/alertmanager/highcpu-group-firing.json"


class Broker:
    """The broker's answers the cursor needs, fixed: everything committed at 0, no gaps."""

    async def committed(self, tp: TopicPartition) -> int | None:
        return 0

    async def first_at_or_after(self, tp: TopicPartition, offset: int) -> int | None:
        return offset


def cursor_rate(records: int) -> tuple[float, float]:
    """(records/s through admit + done, records/s through a bare async loop)."""
    tps = [TopicPartition("alerts.raw", p) for p in range(6)]

    async def noop(_tp: TopicPartition, _o: int) -> None:
        return None

    cursor = DeliveryCursor(Broker(), noop, lambda: tps)
    offsets = [(tps[i % 6], i // 6) for i in range(records)]

    async def through_cursor() -> None:
        for tp, off in offsets:
            admission = await cursor.admit(tp.topic, tp.partition, off)
            if admission is not None:
                cursor.done(admission)

    async def bare() -> None:
        for tp, off in offsets:
            await noop(tp, off)

    rates = []
    for run in (through_cursor, bare):
        t0 = time.perf_counter()
        asyncio.run(run())
        rates.append(records / (time.perf_counter() - t0))
    processed = sum(cursor.positions.values())
    if processed != records:
        raise SystemExit(f"the cursor processed {processed} of {records} records")
    return rates[0], rates[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--records", type=int, default=200000)
    args = parser.parse_args()
    body = SAMPLE.read_bytes()
    bodies = [body] * args.requests
    now = datetime.now(UTC)
    rows = [
        measure("strict parse (jsonbody.parse_json)", bodies, parse_json),
        measure("baseline: json.loads", bodies, json.loads),
        measure("baseline: json.loads + mapping to alerts", bodies, lambda b: to_alerts(json.loads(b), now)),
    ]
    print(f"Alertmanager webhook of {len(body)} bytes (3 alerts), {args.requests} requests")
    print(table(rows, "req"))
    strict, plain = rows[0]["p50_us"], rows[1]["p50_us"]
    print(f"strict parse / json.loads p50: {strict / plain:.2f}x (+{strict - plain:.1f} us per request)")
    with_cursor, bare = cursor_rate(args.records)
    print(
        f"\ndelivery cursor: {with_cursor:,.0f} records/s; bare loop {bare:,.0f}/s; "
        f"{1e6 / with_cursor - 1e6 / bare:.2f} us added per record"
    )


if __name__ == "__main__":
    main()
