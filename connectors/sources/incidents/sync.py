"""IncidentSync: the ITSM is where people resolve, reassign and reprioritise incidents. It reads
the incidents the pipeline opened, changed since its last pass, and publishes each one that
changed onto the compacted itsm.incidents, which the worker follows.

It starts from what itsm.incidents already holds (the topic is its memory): the watermark of each
target is the newest update published, and an incident whose snapshot equals the published one
is not published again, so a restart re-reads a little and republishes nothing.
"""

from __future__ import annotations

import threading
from datetime import datetime

from confluent_kafka import Producer
from pydantic import ValidationError

from connectors.sources.incidents.base import UNREADABLE, IncidentReader, same, with_history
from connectors.sources.polling import every
from streams.core import telemetry
from streams.core.follower import TopicFollower
from streams.core.kafka import publish_batch
from streams.core.messages import Output, encoded
from streams.core.models import IncidentRecord
from streams.core.serde import AvroSerde, SerdeError
from streams.core.settings import Settings
from streams.core.topics import ITSM_INCIDENTS

SYNCED = telemetry.Counter(
    "itsm_pipeline_incidents_synced_total",
    "Incident snapshots read back from an ITSM and published onto itsm.incidents, by target.",
    ["target"],
)


class IncidentSync:
    def __init__(
        self, readers: list[IncidentReader], producer: Producer, serde: AvroSerde, settings: Settings
    ) -> None:
        self.readers = readers
        self.producer = producer
        self.serde = serde
        self.settings = settings
        self.topic = settings.topic(ITSM_INCIDENTS)
        self.known: dict[str, IncidentRecord] = {}
        self.watermarks: dict[str, datetime] = {}
        self.log = telemetry.get_logger("incidents.sync")

    def load(self, timeout: float) -> int:
        """What itsm.incidents holds already; returns how many incidents."""

        def apply(_key: bytes, value: bytes | None) -> None:
            if value is None:
                return
            try:
                record = self.serde.decode(value, IncidentRecord)
            except SerdeError:
                telemetry.VIEW_SKIPPED.labels(self.topic).inc()  # counted, as every view does
                return
            self.remember(record)

        follower = TopicFollower(self.settings, self.topic, apply).start()
        try:
            follower.wait_ready(timeout)
        finally:
            follower.stop()
        return len(self.known)

    def remember(self, record: IncidentRecord) -> None:
        self.known[record.key] = record
        mark = self.watermarks.get(record.target)
        if mark is None or record.updated_at > mark:
            self.watermarks[record.target] = record.updated_at

    def run_once(self) -> int:
        """One pass over every target; returns how many incidents were published."""
        published = 0
        for reader in self.readers:
            out: list[Output] = []
            fresh: list[IncidentRecord] = []
            for raw in reader.changed_since(self.watermarks.get(reader.target)):
                try:
                    record = with_history(reader, self.known.get(raw.key), raw)
                except ValidationError as exc:
                    UNREADABLE.labels(reader.target).inc()
                    self.log.warning("incident_unreadable", target=reader.target, error=str(exc)[:300])
                    continue
                prev = self.known.get(record.key)
                if prev is not None and same(prev, record):
                    continue
                out.append(encoded(self.serde, self.topic, record.key, record))
                fresh.append(record)
            publish_batch(self.producer, out)
            for record in fresh:
                self.remember(record)
            SYNCED.labels(reader.target).inc(len(fresh))
            if fresh:
                self.log.info(
                    "incidents_synced",
                    target=reader.target,
                    incidents=len(fresh),
                    watermark=self.watermarks[reader.target].isoformat(),
                )
            published += len(fresh)
        return published

    def run(self, stop: threading.Event, interval: float) -> None:
        """Pass after pass until stop; retryable ITSM errors wait for the next pass, others raise."""
        every(stop, interval, self.run_once, self.log, "incidents_sync_failed")

    def close(self) -> None:
        for reader in self.readers:
            reader.close()
