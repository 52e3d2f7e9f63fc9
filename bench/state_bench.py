"""The worker with a million open alert states: memory and start/restart time, per table store.

    .venv/bin/python -m bench.state_bench [--states N] [--stores memory,rocksdb]

Starts a KRaft broker (ops/kafka) on free loopback ports and applies the topics. For each store
(ITSM_WORKER_STORE), a fresh worker application id whose alert-state changelog is filled with N
open alert states (as the worker writes them: MessagePack AlertState, keyed by fingerprint, over
the 6 partitions; what N distinct firing alerts would leave behind, written directly because
pushing a million alerts through a worker first would take most of an hour here). Then:

1. the worker starts (`itsmctl worker`, as Stack runs it); one new alert is sent at once and the
   time until its incident command is on itsm.incident.commands is the start time (the table's
   recovery included);
2. SIGTERM, and the same again: the restart time (what issue #12 measured, and what the
   RocksDB store is for: its state is on local disk, only the changelog's tail is read);
3. after each, the worker's RSS and peak RSS (VmHWM) once the probe was processed and the due
   index built, and the changelog's size on the broker's disk.

The baseline is the worker with an empty table, measured the same way in the same run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.measure import machine
from bench.worker_bench import alert
from ops import topics as topic_ops
from ops.kafka import Broker
from ops.kafka.broker import free_port
from ops.stack import Stack
from streams.core.serde import AvroSerde
from streams.core.topics import ALERTS_RAW, INCIDENT_COMMANDS, declared
from streams.stages.alerts.lifecycle import correlation_id
from streams.stages.alerts.state import AlertState, IncidentPhase, encode_state

PARTITIONS = 6


def fill_changelog(bootstrap: str, topic: str, n: int) -> None:
    """n open states, as the worker leaves them after n distinct firing alerts."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"cleanup.policy": "compact"}
    admin.create_topics([NewTopic(topic, PARTITIONS, 1, config=config)])[topic].result(30)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000, "compression.type": "lz4"}
    )
    now = datetime.now(UTC) - timedelta(minutes=1)
    example = alert("template", "FIRING", now).to_avro()
    started = time.monotonic()
    for i in range(n):
        fp = f"open{i:08d}"
        partition = i % PARTITIONS
        state = AlertState(
            fingerprint=fp,
            partition=partition,
            source="ALERTMANAGER",
            phase=IncidentPhase.OPEN,
            incident_id=correlation_id(fp),
            first_seen=now,
            last_seen=now,
            last_forwarded=now,
            count=1,
            impact=1,
            urgency=1,
            alert={**example, "fingerprint": fp, "labels": {**example["labels"], "instance": f"{fp}:9100"}},
            event_starts_at=now,
            event_status="FIRING",
            opened_at=now,
        )
        while True:
            try:
                # Faust serializes a str table key as JSON; the value (bytes) as it is.
                producer.produce(
                    topic, key=json.dumps(fp).encode(), value=encode_state(state), partition=partition
                )
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
        if i and i % 200_000 == 0:
            print(f"  changelog: {i:,} of {n:,} states ({time.monotonic() - started:.0f} s)", flush=True)
    assert producer.flush(120) == 0


def status(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0]) / 1024
    return out


def probe(stack: Stack, bootstrap: str, prefix: str, spawned: float) -> dict[str, Any]:
    """Send one new alert now; seconds from spawning the worker to its command, and memory."""
    serde, fp = AvroSerde(), f"probe-{uuid.uuid4().hex[:12]}"
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"probe-{fp}", "enable.auto.commit": False}
    )
    commands = f"{prefix}{INCIDENT_COMMANDS}"
    # From the beginning: the topic holds only the probes' commands, and the fingerprint is new.
    consumer.assign([TopicPartition(commands, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(
        f"{prefix}{ALERTS_RAW}", key=fp.encode(), value=serde.encode(alert(fp, "FIRING", datetime.now(UTC)))
    )
    producer.flush(10)
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline:
            stack.check_alive()
            msg = consumer.poll(0.05)
            if msg is not None and msg.error() is None and fp in (msg.key() or b"").decode():
                seconds = time.monotonic() - spawned
                time.sleep(3)  # the first tick starts the due index pass: let it finish
                return {"seconds": seconds, **status(stack.procs["worker"].pid)}
        raise RuntimeError("no command for the probe alert within 900 s:\n" + stack.log_tail("worker"))
    finally:
        consumer.close()


def changelog_mib(broker_dir: Path, topic: str) -> float:
    """The changelog's log segments on the broker's disk (index files are preallocated: left out)."""
    segments = (f for d in broker_dir.rglob(f"{topic}-*") if d.is_dir() for f in d.glob("*.log"))
    return sum(f.stat().st_size for f in segments) / 2**20


def run_store(tmp: Path, broker: Broker, store: str, states: int) -> dict[str, Any]:
    prefix = f"b{store}{states}."
    app_id = f"{prefix}worker"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic_ops.apply(admin, list(declared(prefix)))
    changelog = f"{app_id}-alert-state-changelog"
    if states:
        started = time.monotonic()
        fill_changelog(broker.bootstrap, changelog, states)
        print(
            f"  {store}: {states:,} states in the changelog in {time.monotonic() - started:.0f} s", flush=True
        )
    stack = Stack(
        tmp / f"stack-{store}-{states}",
        broker.bootstrap,
        topic_prefix=prefix,
        app_id=app_id,
        extra_env={
            "ITSM_LOG_LEVEL": "warning",
            "ITSM_WORKER_STORE": store,
            "ITSM_WORKER_DATA_DIR": str(tmp / f"data-{store}-{states}"),
        },
    )
    result: dict[str, Any] = {}
    try:
        for phase in ("start", "restart"):
            spawned = time.monotonic()
            stack.start(["worker"])
            r = result[phase] = probe(stack, broker.bootstrap, prefix, spawned)
            stopping = time.monotonic()
            code = stack.stop(timeout=300)["worker"]  # SIGTERM; a clean exit closes the store
            r["stop_seconds"] = time.monotonic() - stopping
            print(
                f"  {store}, {states:,} states, {phase}: first new alert after {r['seconds']:.1f} s, "
                f"RSS {r['VmRSS']:.0f} MiB (peak {r['VmHWM']:.0f}); SIGTERM to exit "
                f"{r['stop_seconds']:.1f} s (code {code})",
                flush=True,
            )
    finally:
        stack.stop()
    result["changelog_mib"] = changelog_mib(broker.data_dir, changelog) if states else 0.0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--states", type=int, default=1_000_000)
    parser.add_argument("--stores", default="memory,rocksdb")
    args = parser.parse_args()
    print(machine(), flush=True)
    stores = [s for s in args.stores.split(",") if s]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp / "kafka", port=free_port(), controller_port=free_port())
        broker.start(wait=120)
        try:
            for store in stores:
                for n in (0, args.states):
                    rows.append((store, n, run_store(tmp, broker, store, n)))
        finally:
            broker.stop()
    print(
        f"{'store':<8} {'states':>10} {'start s':>8} {'restart s':>9} {'RSS MiB':>8} {'peak MiB':>9} "
        f"{'changelog MiB':>14}"
    )
    for store, n, r in rows:
        print(
            f"{store:<8} {n:>10,} {r['start']['seconds']:>8.1f} {r['restart']['seconds']:>9.1f} "
            f"{r['restart']['VmRSS']:>8.0f} {r['restart']['VmHWM']:>9.0f} {r['changelog_mib']:>14.0f}"
        )
    print("(RSS and peak after the restart; the empty rows are each store's baseline.)")


if __name__ == "__main__":
    main()
