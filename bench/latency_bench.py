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

import aiohttp
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
            # Plain Avro, no model validation: this thread shares the machine's two cores with the
            # pipeline it measures.
            record = self.serde.decode_dict(msg.value() or b"", self.model)
            kind = record.get("action") or record.get("outcome")
            if kind == self.wanted:
                self.times.setdefault(record["correlation_id"], time.monotonic())
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
    """Posts rate alerts/s for seconds on a fixed schedule; send time per correlation id, failures.

    The bodies are made before the clock starts and sent with aiohttp's client (lighter than
    httpx's): the generator shares the two cores with the pipeline it measures (with httpx and
    validated decoding it took 30-45% of a core at 1,000 alerts/s)."""
    sent: dict[str, float] = {}
    failures = 0
    interval = PER_REQUEST / rate
    count = round(seconds * rate / PER_REQUEST)
    requests = []
    for i in range(count):
        fps = [f"{run}{i:06d}{j}" for j in range(PER_REQUEST)]
        requests.append(([correlation_id(fp) for fp in fps], webhook(fps)))
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(
        base_url=url, connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as http:

        async def post(ids: list[str], body: bytes) -> None:
            nonlocal failures
            at = time.monotonic()
            for cid in ids:
                sent[cid] = at
            async with http.post(
                "/v1/alerts/alertmanager", data=body, headers={"Content-Type": "application/json"}
            ) as r:
                await r.read()
                if r.status != 202:
                    failures += 1

        tasks, start = [], time.monotonic()
        for i, (ids, body) in enumerate(requests):
            await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
            tasks.append(asyncio.create_task(post(ids, body)))
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
