"""Change gate answer time as a pipeline sees it, beside baselines measured in the same run.

    .venv/bin/python -m bench.gate_bench [--requests N] [--changes N] [--windows N]

Starts a real Kafka broker (Maven Central jars, free loopback ports), serves the gate in-process
on 127.0.0.1, and times POST /v1/gate/check (decision + audit record acknowledged by the broker)
one at a time, as a pipeline step calls it, and 8 at a time. Baselines: the pure decision alone,
GET /healthz on the same server (HTTP cost), and one broker-acknowledged send alone.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from confluent_kafka.admin import AdminClient

from bench.measure import measure
from connectors.auth import Guard, TokensFile, issue
from connectors.gate.server import GATE_PRODUCER, create_gate
from ops import topics as topic_ops
from ops.kafka import Broker
from ops.kafka.broker import free_port
from streams.core import models as m
from streams.core import telemetry
from streams.core.kafka import AckedProducer
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.core.topics import declared
from streams.processors.indexes import ChangeIndex, CMDBTopicIndex, GateRequestIndex, WindowIndex
from streams.stages.changes.gate import ChangeGate, GatePolicy, GateRequest
from streams.stages.windows import WindowCalendar


def world(
    n_changes: int, n_windows: int, serde: AvroSerde
) -> tuple[CMDBTopicIndex, WindowIndex, ChangeIndex]:
    now = datetime.now(UTC)
    cmdb, windows, changes = CMDBTopicIndex(serde, "c"), WindowIndex(serde, "w"), ChangeIndex(serde, "x")
    for i in range(max(n_changes, 100)):
        cmdb.upsert(
            m.ConfigurationItem(
                ci_id=f"ci-{i}",
                name=f"ci-{i}",
                ci_class="server",
                service=f"svc-{i % 50}",
                owner_group="team",
                source_system="bench",
                updated_at=now,
            )
        )
    for i in range(n_changes):
        changes.put(
            m.ChangeRecord(
                change_id=f"CHG{i:07d}",
                itsm_id=f"sys{i}",
                target="servicenow",
                change_type=m.ChangeType.NORMAL,
                status=m.ChangeStatus.SCHEDULED,
                service=f"svc-{i % 50}",
                ci_ids=[f"ci-{i}"],
                planned_start=now - timedelta(hours=1),
                planned_end=now + timedelta(hours=2),
                updated_at=now,
            )
        )
    for i in range(n_windows):
        windows.put(
            m.MaintenanceWindow(
                window_id=f"fr-{i}",
                kind=m.WindowKind.FREEZE,
                scope=m.WindowScope.SERVICE,
                target=f"frozen-{i}",
                starts_at=now - timedelta(hours=1),
                ends_at=now + timedelta(hours=5),
                updated_at=now,
            )
        )
    return cmdb, windows, changes


def stats(name: str, latencies: list[float], wall: float) -> dict[str, Any]:
    q = statistics.quantiles(latencies, n=100)
    return {"case": name, "per_s": len(latencies) / wall, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000}


async def timed(client: httpx.AsyncClient, n: int, concurrency: int, call: Any) -> tuple[list[float], float]:
    latencies: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            await call(client, i)
            latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return latencies, time.perf_counter() - t0


async def run(args: argparse.Namespace, broker: Broker, workdir: Path) -> list[dict[str, Any]]:
    prefix = "bench."
    topic_ops.apply(AdminClient({"bootstrap.servers": broker.bootstrap}), list(declared(prefix)))
    settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix)
    serde = AvroSerde()
    cmdb, windows, changes = world(args.changes, args.windows, serde)
    callers_file = workdir / "callers.toml"
    token, _ = issue(callers_file, "bench", ["gate:check"])
    callers = Guard("gate", TokensFile(callers_file))
    gate = ChangeGate(GatePolicy(), WindowCalendar(windows, cmdb, frozenset({"DEPENDS_ON"}), 3), cmdb)
    producer = AckedProducer(settings, **GATE_PRODUCER)
    app = create_gate(settings, serde, producer, gate, changes, GateRequestIndex(serde, "r"), callers)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rows: list[dict[str, Any]] = []

    async def check(client: httpx.AsyncClient, i: int) -> None:
        body = {
            "service": f"svc-{i % 50}",
            "environment": "production",
            "commit": f"c{i}",
            "ci_ids": [f"ci-{i % 100}"],
        }
        resp = await client.post("/v1/gate/check", json=body)
        assert resp.status_code == 200, resp.text

    async def health(client: httpx.AsyncClient, _: int) -> None:
        assert (await client.get("/healthz")).status_code == 200

    async def send(_: httpx.AsyncClient, i: int) -> None:
        await producer.send(settings.topic("audit.events"), b"k", b"x" * 600)

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
        for _ in range(50):
            await check(client, 0)  # warm-up
        lat, wall = await timed(client, args.requests, 1, check)
        tracemalloc.start()
        await timed(client, min(args.requests, 200), 1, check)  # memory pass, not timed
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append({**stats("gate check over HTTP, one at a time", lat, wall), "peak_kib": peak / 1024})
        lat, wall = await timed(client, args.requests, 8, check)
        rows.append(stats("gate check over HTTP, 8 in flight", lat, wall))
        lat, wall = await timed(client, args.requests, 1, health)
        rows.append(stats("baseline: GET /healthz (HTTP only)", lat, wall))
        lat, wall = await timed(client, args.requests, 1, send)
        rows.append(stats("baseline: one acked Kafka send", lat, wall))
    producer.close()
    await runner.cleanup()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=1000, help="approved changes the gate knows")
    parser.add_argument("--windows", type=int, default=200, help="freeze windows in the calendar")
    args = parser.parse_args()
    telemetry.configure_logging("warning")
    serde = AvroSerde()
    cmdb, windows, changes = world(args.changes, args.windows, serde)
    gate = ChangeGate(GatePolicy(), WindowCalendar(windows, cmdb, frozenset({"DEPENDS_ON"}), 3), cmdb)
    views, now = changes.changes(), datetime.now(UTC)
    reqs = [
        GateRequest(f"svc-{i % 50}", "production", "bench", ci_ids=(f"ci-{i % 100}",)) for i in range(5000)
    ]
    pure = measure("baseline: the pure decision (views built)", reqs, lambda r: gate.decide(r, views, now))
    pure_views = measure(
        "the pure decision incl. reading the views",
        reqs,
        lambda r: gate.decide(r, changes.changes(), now),
        sample=1000,
    )
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "kafka", port=free_port(), controller_port=free_port())
        broker.start(wait=120)
        try:
            rows = asyncio.run(run(args, broker, Path(tmp)))
        finally:
            broker.stop()
    print(
        f"change gate, {args.changes} approved changes, {args.windows} freeze windows, "
        f"{args.requests} requests"
    )
    print(f"{'case':<45} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'peak KiB':>9}")
    for r in rows:
        peak = f"{r['peak_kib']:>9.0f}" if "peak_kib" in r else f"{'':>9}"
        print(f"{r['case']:<45} {r['per_s']:>9,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {peak}")
    for r in (pure_views, pure):
        print(
            f"{r['case']:<45} {r['per_s']:>9,.0f} {r['p50_us'] / 1000:>8.3f} {r['p99_us'] / 1000:>8.3f} "
            f"{r['peak_kib']:>9.0f}"
        )


if __name__ == "__main__":
    main()
