"""ChangeSync: the ITSM is the source of approval state. It reads the change requests changed
since its last pass and publishes them onto itsm.changes (and the maintenance windows of
approved changes onto maintenance.windows), so the gate and the deploy linker see what a person
approved."""

from __future__ import annotations

import threading

from confluent_kafka import Producer
from pydantic import ValidationError

from connectors.sinks.servicenow.client import ServiceNowClient
from connectors.sinks.servicenow.mapping import CHANGE_TABLE
from connectors.sinks.servicenow.values import value
from connectors.sources.changes.mapping import FIELDS, change_record, maintenance_windows
from connectors.sources.polling import every
from streams.core import telemetry
from streams.core.kafka import publish_batch
from streams.core.messages import Output, encoded
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.core.topics import ITSM_CHANGES, MAINTENANCE_WINDOWS

PAGE = 200


def _version(row: dict[str, str]) -> tuple[str, str]:
    return value(row.get("sys_updated_on")), value(row.get("sys_mod_count"))


class ChangeSync:
    """Polls ServiceNow's change_request table by sys_updated_on and publishes what changed."""

    def __init__(
        self,
        client: ServiceNowClient,
        producer: Producer,
        serde: AvroSerde,
        settings: Settings,
        maintenance: bool = True,
    ) -> None:
        self.client = client
        self.producer = producer
        self.serde = serde
        self.maintenance = maintenance
        self.changes_topic = settings.topic(ITSM_CHANGES)
        self.windows_topic = settings.topic(MAINTENANCE_WINDOWS)
        self.watermark: str | None = None
        # sys_id -> (sys_updated_on, sys_mod_count) last published: an update within the same
        # second as the last pass has the same time but a higher modification count.
        self.published: dict[str, tuple[str, str]] = {}
        self.log = telemetry.get_logger("changes.sync")

    def run_once(self) -> int:
        """One pass: every change updated at or after the watermark; returns how many changed."""
        query = (f"sys_updated_on>={self.watermark}^" if self.watermark else "") + "ORDERBYsys_updated_on"
        rows = list(self.client.every_row(CHANGE_TABLE, query, FIELDS, PAGE))
        # Same-second updates are read again (>=); only what really changed is published.
        fresh = [r for r in rows if self.published.get(value(r.get("sys_id"))) != _version(r)]
        out: list[Output] = []
        unreadable = 0
        for row in fresh:
            try:
                record = change_record(row)
            except (KeyError, ValueError, ValidationError) as exc:
                # A row the ITSM holds but the pipeline cannot read (a malformed date, no number):
                # said once per version of the row, counted, and the pass goes on, so one bad
                # record never stalls the approvals of every other change.
                unreadable += 1
                telemetry.ITSM_CHANGES_UNREADABLE.labels("servicenow").inc()
                self.log.warning(
                    "change_unreadable",
                    sys_id=value(row.get("sys_id")),
                    number=value(row.get("number")),
                    error=str(exc).splitlines()[0][:300],
                )
                continue
            out.append(encoded(self.serde, self.changes_topic, record.change_id, record))
            if self.maintenance:
                for window in maintenance_windows(record):
                    out.append(encoded(self.serde, self.windows_topic, window.window_id, window))
        publish_batch(self.producer, out)
        for row in fresh:
            self.published[value(row.get("sys_id"))] = _version(row)
        if rows:
            self.watermark = max(value(r.get("sys_updated_on")) for r in rows) or self.watermark
        telemetry.ITSM_CHANGES_SYNCED.labels("servicenow").inc(len(fresh) - unreadable)
        if fresh:
            self.log.info(
                "changes_synced",
                changes=len(fresh) - unreadable,
                unreadable=unreadable,
                records=len(out),
                watermark=self.watermark,
            )
        return len(fresh) - unreadable

    def run(self, stop: threading.Event, interval: float) -> None:
        """Pass after pass until stop; retryable ITSM errors wait for the next pass, others raise."""
        every(stop, interval, self.run_once, self.log, "changes_sync_failed")
