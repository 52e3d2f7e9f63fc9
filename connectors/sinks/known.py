"""Correlation id -> ITSM record id, learned from itsm.results, so sinks find their records by id."""

from __future__ import annotations

import threading
from datetime import datetime

from streams.core import telemetry
from streams.core.models import RecordType, SinkOutcome, SinkResult
from streams.core.serde import AvroSerde, SerdeError

KNOWN_OUTCOMES = {SinkOutcome.CREATED, SinkOutcome.UPDATED, SinkOutcome.RESOLVED, SinkOutcome.NOOP}
# A dead letter of these classes was refused for sure: no record was made, nothing is pending.
REFUSED = {"validation", "auth", "conflict", "schema"}


class KnownIds:
    """Fed by every SinkResult of one target (a global view of itsm.results, and the sink's own results).

    A hint, never the truth: a sink reads the record by this id and falls back to a search when the
    ITSM no longer has it.
    """

    def __init__(self, target: str, serde: AvroSerde | None = None) -> None:
        self.target = target
        self.serde = serde or AvroSerde()
        self._ids: dict[tuple[RecordType, str], str] = {}
        # (kind, correlation id) -> when a create was sent whose outcome is not known yet
        self._pending: dict[tuple[RecordType, str], datetime] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def learn(self, result: SinkResult) -> None:
        if result.target != self.target:
            return
        key = (result.record_type, result.correlation_id)
        with self._lock:
            if result.outcome is SinkOutcome.PENDING:
                self._pending[key] = result.completed_at
            elif result.outcome in KNOWN_OUTCOMES:
                self._pending.pop(key, None)
                if result.itsm_id:
                    self._ids[key] = result.itsm_id
            elif result.error_class in REFUSED:
                self._pending.pop(key, None)

    def pending_since(self, record_type: RecordType, correlation_id: str) -> datetime | None:
        """When a create of this record was sent whose outcome is unknown (None: none is)."""
        with self._lock:
            return self._pending.get((record_type, correlation_id))

    def apply(self, key: bytes, value: bytes | None) -> None:
        """TopicFollower callback for itsm.results."""
        if value is None:
            return
        try:
            self.learn(self.serde.decode(value, SinkResult))
        except SerdeError:
            # A hint is optional: skip it, but count it like every view does.
            telemetry.VIEW_SKIPPED.labels("itsm.results").inc()

    def get(self, record_type: RecordType, correlation_id: str) -> str | None:
        with self._lock:
            return self._ids.get((record_type, correlation_id))
