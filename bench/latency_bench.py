"""End-to-end latency at fixed offered loads: webhook -> incident command -> incident in the ITSM.

    .venv/bin/python -m bench.latency_bench [--rates 100,500,1000] [--seconds 20] [--without-itsm]

Starts a KRaft broker (ops/kafka) on free loopback ports and the pipeline as `itsmctl run` would
(Stack: the development ITSM, the worker, the ServiceNow sink with ITSM_SINK_CONCURRENCY=4 and
the gateway, each its own process, logs at warning). For each offered rate, new alerts (each a new
fingerprint, so each opens an incident) are posted to the gateway as Alertmanager webhooks of 10
alerts each, on a fixed schedule (an open-loop generator: a late answer does not slow the next
send) for --seconds. Measured per alert, from the moment its webhook was sent:

- to its OPEN command on itsm.incident.commands (webhook -> gateway -> broker -> worker);
- to its CREATED result on itsm.results, which the sink writes once the ITSM acknowledged the
  incident (webhook -> ... -> ITSM).

Prints p50/p99/max of each and how many arrived within 120 s of the end. There is no baseline
process for a whole pipeline; the webhook -> command figure is the pipeline without the ITSM.
With --without-itsm only the gateway and the worker run (no sink, no development ITSM), so the
webhook -> command figure is not also a measure of how the sink and the ITSM share the two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from bench.measure import machine
from ops import topics as topic_ops
from ops.kafka import Broker
from ops.kafka.broker import free_port
from ops.stack import Stack
from streams.core import models as m
from streams.core.serde import AvroSerde
from streams.core.topics import INCIDENT_COMMANDS, ITSM_RESULTS, declared
from streams.stages.alerts.lifecycle import correlation_id

PER_REQUEST = 10


class Arrivals:
    """Follows a topic from its end in a thread; the first arrival time of each correlation id."""

    def __init__(self, bootstrap: str, topic: str, model: type[m.Record], wanted: str) -> None:
        self.times: dict[str, float] = {}
        self.serde, self.model, self.wanted = AvroSerde(), model, wanted
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"latency-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "latest",
                "enable.auto.commit": False,
            }
        )
        self.consumer.subscribe([topic])
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            msg = self.consumer.poll(0.05)
            if self.consumer.assignment():
                self.ready.set()
            if msg is None or msg.error() is not None:
                continue
            record: Any = self.serde.decode(msg.value() or b"", self.model)
            kind = getattr(record, "action", None) or getattr(record, "outcome", None)
            if kind is not None and kind.value == self.wanted:
                self.times.setdefault(record.correlation_id, time.monotonic())
        self.consumer.close()


def webhook(fps: list[str]) -> bytes:
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": "DiskFull", "instance": f"{fp}:9100", "severity": "critical"},
            "annotations": {"summary": f"Disk full on {fp}"},
            "startsAt": "2026-12-01T08:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example:9090/graph",
            "fingerprint": fp,
        }
        for fp in fps
    ]
    return json.dumps({"version": "4", "status": "firing", "receiver": "itsm", "alerts": alerts}).encode()


async def offer(url: str, rate: int, seconds: int, run: str) -> tuple[dict[str, float], int]:
    """Posts rate alerts/s for seconds on a fixed schedule; send time per correlation id, failures."""
    sent: dict[str, float] = {}
    failures = 0
    interval = PER_REQUEST / rate
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=64)) as http:

        async def post(fps: list[str]) -> None:
            nonlocal failures
            at = time.monotonic()
            for fp in fps:
                sent[correlation_id(fp)] = at
            r = await http.post(
                "/v1/alerts/alertmanager",
                content=webhook(fps),
                headers={"Content-Type": "application/json"},
            )
            if r.status_code != 202:
                failures += 1

        tasks, start, i = [], time.monotonic(), 0
        while i * interval < seconds:
            due = start + i * interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            fps = [f"{run}{i:06d}{j}" for j in range(PER_REQUEST)]
            tasks.append(asyncio.create_task(post(fps)))
            i += 1
        await asyncio.gather(*tasks)
    return sent, failures


def quantiles(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    q = statistics.quantiles(values, n=100)
    return f"p50 {q[49] * 1000:8,.0f} ms   p99 {q[98] * 1000:8,.0f} ms   max {max(values) * 1000:8,.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="100,500,1000", help="offered alerts per second")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument(
        "--without-itsm",
        action="store_true",
        help="start only the gateway and the worker: webhook -> command, with no sink or ITSM "
        "sharing the machine's cores",
    )
    args = parser.parse_args()
    with_itsm = not args.without_itsm
    print(machine(), flush=True)
    rates = [int(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp / "kafka", port=free_port(), controller_port=free_port())
        broker.start(wait=120)
        stack = Stack(
            tmp / "stack",
            broker.bootstrap,
            topic_prefix="blat.",
            app_id="blat",
            extra_env={"ITSM_LOG_LEVEL": "warning", "ITSM_SINK_CONCURRENCY": "4"},
        )
        try:
            topic_ops.apply(AdminClient({"bootstrap.servers": broker.bootstrap}), list(declared("blat.")))
            commands = Arrivals(broker.bootstrap, f"blat.{INCIDENT_COMMANDS}", m.IncidentCommand, "OPEN")
            results = Arrivals(broker.bootstrap, f"blat.{ITSM_RESULTS}", m.SinkResult, "CREATED")
            stack.start(["devitsm", "worker", "sink", "gateway"] if with_itsm else ["worker", "gateway"])
            for arrivals in (commands, results):
                arrivals.ready.wait(60)
            # The last arrival awaited: the incident in the ITSM, or without it the command.
            last = results if with_itsm else commands
            # Warm-up: the worker joins its group and the sink its own before anything is timed.
            warm, _ = asyncio.run(offer(stack.gateway_url, 20, 1, "warm"))
            deadline = time.monotonic() + 120
            while any(c not in last.times for c in warm) and time.monotonic() < deadline:
                time.sleep(0.2)
            report: list[str] = []
            for rate in rates:
                sent, failures = asyncio.run(offer(stack.gateway_url, rate, args.seconds, f"r{rate}x"))
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and any(c not in last.times for c in sent):
                    stack.check_alive()
                    time.sleep(0.2)
                to_cmd = [commands.times[c] - t for c, t in sent.items() if c in commands.times]
                to_itsm = [results.times[c] - t for c, t in sent.items() if c in results.times]
                report += [
                    f"{rate:,} new alerts/s offered for {args.seconds} s ({len(sent):,} alerts, "
                    f"{failures} refused requests{'' if with_itsm else '; no sink, no ITSM'}):",
                    f"  webhook -> command on the topic: {quantiles(to_cmd)}   ({len(to_cmd):,} arrived)",
                ]
                if with_itsm:
                    arrived = f"({len(to_itsm):,} arrived)"
                    report.append(f"  webhook -> incident in the ITSM: {quantiles(to_itsm)}   {arrived}")
            commands.stop.set()
            results.stop.set()
        finally:
            stack.stop()
            broker.stop()
    print("\n".join(report))


if __name__ == "__main__":
    main()
