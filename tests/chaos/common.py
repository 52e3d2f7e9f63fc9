"""What the chaos tests share: a steady stream of distinct alerts, and the count of what became of
them (every alert's incident command, the dead letters, the alert -> command delays)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import Message, Producer

from streams.core import models as m
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.stages.alerts.lifecycle import correlation_id
from tests.kafka_util import conf, consume, consume_until

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


@dataclass
class SteadyStream:
    """One alert per fingerprint at `rate` per second on alerts.raw, in a thread; every record
    acknowledged by the broker (the producer retries through broker outages)."""

    bootstrap: str
    topic: str
    fps: list[str]
    rate: float
    done: threading.Event = field(default_factory=threading.Event)
    sent_at: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def start(self) -> SteadyStream:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        producer = Producer(conf(self.bootstrap, {"enable.idempotence": True, "linger.ms": 5}))
        start = time.monotonic()
        for i, fp in enumerate(self.fps):
            delay = start + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.sent_at[fp] = time.time()
            producer.produce(
                self.topic,
                key=fp.encode(),
                value=firing(fp),
                on_delivery=lambda e, _m: self.errors.append(str(e)) if e else None,
            )
            producer.poll(0)
        left = producer.flush(120)
        if left:
            self.errors.append(f"{left} records not acknowledged")
        self.done.set()

    def join(self) -> None:
        self.thread.join()
        assert not self.errors, self.errors[:5]


@dataclass
class Outcome:
    """What became of a stream's alerts."""

    opened: Counter[str]
    missing: list[str]
    dead: int
    delays: list[float]

    @property
    def repeated(self) -> int:
        return sum(n - 1 for n in self.opened.values())

    def summary(self) -> str:
        d = self.delays
        pause = ""
        if d:
            p = lambda q: d[min(len(d) - 1, int(q * len(d)))]  # noqa: E731
            pause = f"; alert -> command p50 {p(0.5):.2f}s, p99 {p(0.99):.2f}s, max {d[-1]:.2f}s"
        counts = f"{len(self.opened)} alerts opened, {self.repeated} commands repeated"
        return f"{counts}, {self.dead} dead letters{pause}"


def outcome(s: Settings, stream: SteadyStream, timeout: float) -> Outcome:
    """Read the commands until every alert of the stream has one (or timeout); count the rest."""
    wanted = {correlation_id(fp) for fp in stream.fps}
    decoded: list[m.IncidentCommand] = []

    def opened_all(msg: Message) -> bool:
        decoded.append(SERDE.decode(msg.value(), m.IncidentCommand))
        wanted.discard(decoded[-1].correlation_id)
        return not wanted

    # Redeliveries after a crash may repeat a command (the sinks are idempotent), so read until
    # every alert's command is there, not until as many records arrived.
    consume_until(s.kafka_bootstrap, s.topic("itsm.incident.commands"), opened_all, timeout=timeout)
    opened = Counter(c.correlation_id for c in decoded)
    # Alert sent -> its command issued: the worst is the pause a failure caused (reported, never
    # asserted: timings are measured, not tested).
    first: dict[str, float] = {}
    for c in decoded:
        first[c.correlation_id] = min(first.get(c.correlation_id, 1e18), c.issued_at.timestamp())
    fps = stream.fps
    delays = sorted(
        first[correlation_id(fp)] - stream.sent_at[fp] for fp in fps if correlation_id(fp) in first
    )
    dead = len(consume(s.kafka_bootstrap, s.topic("alerts.raw.dlq"), 10**6, timeout=2))
    missing = sorted(fp for fp in fps if correlation_id(fp) not in opened)
    return Outcome(opened, missing, dead, delays)
