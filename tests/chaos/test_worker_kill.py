"""Workers SIGKILLed at random moments of a steady stream lose no alert: every accepted alert ends
as an incident command (at-least-once across crashes and rebalances), on the real broker."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from ops.kafka import Broker
from ops.stack import Stack
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.chaos.common import SteadyStream, outcome
from tests.integration.test_sink_delivery import incident_count
from tests.kafka_util import conf, consume, kafka_env

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
SERDE = AvroSerde()


def whereabouts(s: Settings, keys: set[bytes]) -> str:
    """Where the lost records sit in alerts.raw, beside the group's committed offsets."""
    raw = s.topic("alerts.raw")
    at: dict[int, list[int]] = {}
    for x in consume(s.kafka_bootstrap, raw, 10**9, timeout=10):
        if x.key() in keys:
            at.setdefault(x.partition(), []).append(x.offset())
    c = Consumer(conf(s.kafka_bootstrap, {"group.id": s.app_id, "enable.auto.commit": False}))
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
        kafka_env=kafka_env(kafka_broker.bootstrap),
        topic_prefix=s.topic_prefix,
        app_id=s.app_id,
        extra_env={"ITSM_WORKER_SESSION_TIMEOUT_SECONDS": str(session)},
    )
    workers = ["worker", "worker-2", "worker-3"][: int(os.environ.get("CHAOS_WORKERS", 3))]
    stack.start(["devitsm", "sink", *workers])
    kills: list[tuple[float, str, float]] = []
    stream = SteadyStream(s.kafka_bootstrap, s.topic("alerts.raw"), fps, rate)
    try:
        time.sleep(8)  # the members join and split the partitions
        t0 = time.monotonic()
        stream.start()
        # SIGKILLs of one worker at random moments. The victim stays dead past the session
        # timeout, so the survivors take its partitions over with a backlog (where Faust's own
        # offset handling lost alerts), then it comes back and the group rebalances again.
        while not stream.done.is_set():
            time.sleep(rng.uniform(1.0, 5.0))
            victim = rng.choice(workers)
            down = round(session + rng.uniform(2.0, 10.0), 1)
            kills.append((round(time.monotonic() - t0, 1), victim, down))
            stack.kill_one(victim)
            stream.done.wait(down)
            stack.start([victim])
        stream.join()
        got = outcome(s, stream, timeout=60 + 3 * session)
        where = whereabouts(s, {fp.encode() for fp in got.missing}) if got.missing else ""
        # Repeated commands reach the ITSM through the idempotent sink: one incident per alert.
        deadline = time.monotonic() + 120
        while incident_count(stack)[0] < len(got.opened) and time.monotonic() < deadline:
            stack.check_alive()
            time.sleep(1)
        time.sleep(2)
        rows, distinct = incident_count(stack)
    finally:
        codes = stack.stop()
    print(f"seed {seed}; kills {kills}; {got.summary()}; ITSM: {rows} incidents, {distinct} distinct")
    assert set(codes.values()) <= {0}, codes
    assert got.dead == 0, got.summary()
    assert not got.missing, (
        f"seed {seed}, kills {kills}: {len(got.missing)} of {len(fps)} lost: {got.missing[:20]}\n{where}"
    )
    assert (rows, distinct) == (len(fps), len(fps)), "an ITSM record created twice, or one missing"
    assert len(kills) >= 3, kills
