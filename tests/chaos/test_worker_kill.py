"""Workers SIGKILLed at random moments of a steady stream lose no alert: every accepted alert ends
as an incident command (at-least-once across crashes and rebalances), on the real broker."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from ops.kafka import Broker
from ops.stack import Stack
from streams.core import models as m
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.stages.lifecycle import correlation_id
from tests.kafka_util import consume, consume_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
SERDE = AvroSerde()


def firing(fp: str) -> bytes:
    now = datetime.now(UTC)
    return SERDE.encode(
        m.Alert(
            fingerprint=fp,
            source=m.AlertSource.ALERTMANAGER,
            status=m.AlertStatus.FIRING,
            name="Chaos",
            severity="warning",
            labels={"alertname": "Chaos", "n": fp},
            starts_at=now,
            received_at=now,
        )
    )


def steady_stream(bootstrap: str, topic: str, fps: list[str], rate: float, done: threading.Event) -> None:
    """Publish one alert per fingerprint at `rate` per second, acknowledged by the broker."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    errors: list[str] = []
    start = time.monotonic()
    for i, fp in enumerate(fps):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        producer.produce(
            topic,
            key=fp.encode(),
            value=firing(fp),
            on_delivery=lambda e, _m: errors.append(str(e)) if e else None,
        )
        producer.poll(0)
    assert producer.flush(30) == 0 and not errors, errors
    done.set()


def whereabouts(s: Settings, keys: set[bytes]) -> str:
    """Where the lost records sit in alerts.raw, beside the group's committed offsets."""
    raw = s.topic("alerts.raw")
    at: dict[int, list[int]] = {}
    for x in consume(s.kafka_bootstrap, raw, 10**9, timeout=10):
        if x.key() in keys:
            at.setdefault(x.partition(), []).append(x.offset())
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": s.app_id, "enable.auto.commit": False})
    try:
        committed = {
            tp.partition: tp.offset for tp in c.committed([TopicPartition(raw, p) for p in range(6)])
        }
        ends = {p: c.get_watermark_offsets(TopicPartition(raw, p))[1] for p in range(6)}
    finally:
        c.close()
    return "\n".join(
        f"partition {p}: committed {committed.get(p)}, end {ends.get(p)}, lost offsets {offs[0]}..{offs[-1]} "
        f"({len(offs)})"
        for p, offs in sorted(at.items())
    )


@pytest.mark.timeout(900)
def test_sigkilled_workers_lose_no_alert(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    s = kafka_settings
    rng = random.Random()
    seed = int(os.environ.get("CHAOS_SEED", rng.randrange(1 << 30)))
    rng.seed(seed)
    # A steady stream for `seconds`; CHAOS_* stretch it (e.g. to run it against a longer session
    # timeout) without changing what it proves.
    seconds, rate = float(os.environ.get("CHAOS_SECONDS", 60)), float(os.environ.get("CHAOS_RATE", 40))
    session = float(os.environ.get("CHAOS_SESSION", Settings().worker_session_timeout_seconds))
    fps = [f"chaos-{i:05d}" for i in range(int(seconds * rate))]
    stack = Stack(
        tmp_path / "stack",
        kafka_broker.bootstrap,
        topic_prefix=s.topic_prefix,
        app_id=s.app_id,
        extra_env={"ITSM_WORKER_SESSION_TIMEOUT_SECONDS": str(session)},
    )
    workers = ["worker", "worker-2", "worker-3"][: int(os.environ.get("CHAOS_WORKERS", 3))]
    stack.start(workers)
    kills: list[tuple[float, str, float]] = []
    done = threading.Event()
    try:
        time.sleep(8)  # the members join and split the partitions
        t0 = time.monotonic()
        producer = threading.Thread(
            target=steady_stream, args=(s.kafka_bootstrap, s.topic("alerts.raw"), fps, rate, done)
        )
        producer.start()
        # SIGKILLs of one worker at random moments. The victim stays dead past the session
        # timeout, so the survivors take its partitions over with a backlog (where Faust's own
        # offset handling lost alerts), then it comes back and the group rebalances again.
        while not done.is_set():
            time.sleep(rng.uniform(1.0, 5.0))
            victim = rng.choice(workers)
            down = round(session + rng.uniform(2.0, 10.0), 1)
            kills.append((round(time.monotonic() - t0, 1), victim, down))
            stack.kill_one(victim)
            done.wait(down)
            stack.start([victim])
        producer.join()
        wanted = {correlation_id(fp) for fp in fps}
        seen: set[str] = set()

        def opened_all(msg: Message) -> bool:
            seen.add(SERDE.decode(msg.value(), m.IncidentCommand).correlation_id)
            return wanted <= seen

        # Redeliveries after a crash may repeat a command (the sinks are idempotent), so read until
        # every alert's command is there, not until as many records arrived.
        msgs = consume_until(
            s.kafka_bootstrap, s.topic("itsm.incident.commands"), opened_all, timeout=60 + 3 * session
        )
        opened = Counter(SERDE.decode(x.value(), m.IncidentCommand).correlation_id for x in msgs)
        dead = consume(s.kafka_bootstrap, s.topic("alerts.raw.dlq"), 1, timeout=1)
        missing = sorted(fp for fp in fps if correlation_id(fp) not in opened)
        where = whereabouts(s, {fp.encode() for fp in missing}) if missing else ""
    finally:
        stack.stop()
    repeated = sum(n - 1 for n in opened.values())
    print(f"seed {seed}; kills {kills}; {len(opened)} alerts opened, {repeated} commands repeated")
    assert not dead, f"{len(dead)} dead letters"
    assert not missing, (
        f"seed {seed}, kills {kills}: {len(missing)} of {len(fps)} alerts lost: {missing[:20]}\n{where}"
    )
    assert len(kills) >= 3, kills
