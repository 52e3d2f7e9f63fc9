"""Global views: the CMDB, the window calendar, the CI -> open incident index, the ITSM's changes,
the gate's waiting requests and the recent finished deployments."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from streams.core import telemetry
from streams.core.models import (
    ChangeRecord,
    ConfigurationItem,
    DeploymentEvent,
    DeployPhase,
    GateRequest,
    IncidentRecord,
    MaintenanceWindow,
    Record,
)
from streams.core.serde import AvroSerde, SerdeError
from streams.stages.changes.gate import ChangeView
from streams.stages.cmdb import CMDBIndex

VIEW_SKIPPED = telemetry.VIEW_SKIPPED
R = TypeVar("R", bound=Record)


def text(raw: bytes | None) -> str:
    """A key or value as text; bytes that are not UTF-8 (a foreign producer's) never stop a view."""
    return raw.decode("utf-8", "replace") if raw else ""


INDEX_KEY_SEPARATOR = "\x1f"  # between CI id and correlation id in alerts.ci.incidents keys


class CMDBTopicIndex(CMDBIndex):
    """The CMDB index fed by cmdb.ci."""

    def __init__(self, serde: AvroSerde, topic: str) -> None:
        super().__init__()
        self.serde = serde
        self.topic = topic

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            self.remove(text(key))
            return
        try:
            self.upsert(self.serde.decode(value, ConfigurationItem))
        except SerdeError:
            VIEW_SKIPPED.labels(self.topic).inc()


class RecordIndex(Generic[R]):
    """The latest record per key of a compacted topic; undecodable records are skipped and counted
    (the topic's guard agent, where it has one, dead-letters them)."""

    def __init__(self, serde: AvroSerde, topic: str, model: type[R], key: Callable[[R], str]) -> None:
        self.serde = serde
        self.topic = topic
        self.model = model
        self.key = key
        self._items: dict[str, R] = {}
        self._lock = threading.Lock()

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        with self._lock:
            if value is None:
                self._items.pop(text(key), None)
                return
            try:
                record = self.serde.decode(value, self.model)
            except SerdeError:
                VIEW_SKIPPED.labels(self.topic).inc()
                return
            self._items[self.key(record)] = record

    def values(self) -> list[R]:
        with self._lock:
            return list(self._items.values())

    def get(self, key: str) -> R | None:
        with self._lock:
            return self._items.get(key)

    def put(self, record: R) -> None:
        """Read-your-writes: a record this process published, before the topic echoes it."""
        with self._lock:
            self._items[self.key(record)] = record


class WindowIndex(RecordIndex[MaintenanceWindow]):
    """Every maintenance and freeze window fed by maintenance.windows; remembers which changed, for
    the worker to look again at the alerts they keep quiet."""

    def __init__(self, serde: AvroSerde, topic: str) -> None:
        super().__init__(serde, topic, MaintenanceWindow, lambda w: w.window_id)
        self._changed: set[str] = set()

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        super().apply(key, value)
        with self._lock:
            self._changed.add(text(key))

    def drain_changed(self) -> list[str]:
        with self._lock:
            changed, self._changed = list(self._changed), set()
            return changed

    def put(self, record: MaintenanceWindow) -> None:
        super().put(record)
        with self._lock:
            self._changed.add(record.window_id)

    def delete(self, window_id: str) -> None:
        """Read-your-writes of a tombstone this process published."""
        with self._lock:
            self._items.pop(window_id, None)
            self._changed.add(window_id)

    def windows(self) -> list[MaintenanceWindow]:
        return self.values()


class CIIncidentIndex:
    """CI id -> the open incidents on it (correlation id -> index entry, oldest first), fed by
    alerts.ci.incidents and by local writes. A CI may have several (two alerts on one CI open two
    incidents): each is its own key, `<ci id>\\x1f<correlation id>`, so one resolving removes
    only itself. A key without the separator is what workers before wrote (one per CI)."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self.updated_at = time.monotonic()

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        ci_id, _, incident = text(key).partition(INDEX_KEY_SEPARATOR)
        self.set(ci_id, incident, text(value) or None)

    def set(self, ci_id: str, incident: str, entry: str | None) -> None:
        with self._lock:
            on_ci = self._items.setdefault(ci_id, {})
            if entry is None:
                on_ci.pop(incident, None)
                if not on_ci:
                    del self._items[ci_id]
            else:
                on_ci[incident] = entry  # a known incident keeps its place (oldest first)

    def get(self, ci_id: str) -> str | None:
        """The entry of the CI's oldest open incident (the one its dependents join)."""
        with self._lock:
            on_ci = self._items.get(ci_id)
            return next(iter(on_ci.values())) if on_ci else None

    def entries(self, ci_id: str) -> list[str]:
        """Every open incident's entry on the CI, oldest first."""
        with self._lock:
            return list(self._items.get(ci_id, {}).values())


def index_key(ci_id: str, incident: str) -> bytes:
    return f"{ci_id}{INDEX_KEY_SEPARATOR}{incident}".encode()


FINISHED = frozenset({DeployPhase.SUCCEEDED, DeployPhase.FAILED, DeployPhase.ROLLED_BACK})


class DeployIndex:
    """Finished deployments of deploy.events by CI and by service, kept for `keep` seconds after
    the newest one seen (the change lookback: older ones can cause nothing any more)."""

    def __init__(self, serde: AvroSerde, topic: str, keep_seconds: float = 7200.0) -> None:
        self.serde = serde
        self.topic = topic
        self.keep = timedelta(seconds=keep_seconds)
        self._items: dict[str, DeploymentEvent] = {}  # by deployment id and environment
        self._lock = threading.Lock()

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            return
        try:
            deploy = self.serde.decode(value, DeploymentEvent)
        except SerdeError:
            VIEW_SKIPPED.labels(self.topic).inc()  # the topic's guard dead-letters it
            return
        if deploy.phase not in FINISHED:
            return
        with self._lock:
            self._items[f"{deploy.environment}/{deploy.deployment_id}"] = deploy
            newest = max(d.occurred_at for d in self._items.values())
            for k in [k for k, d in self._items.items() if d.occurred_at < newest - self.keep]:
                del self._items[k]

    def finished(
        self, ci_ids: list[str], service: str | None, since: datetime, until: datetime
    ) -> list[DeploymentEvent]:
        wanted = set(ci_ids)
        with self._lock:
            return [
                d
                for d in self._items.values()
                if since <= d.occurred_at <= until
                and (wanted & set(d.ci_ids) or (service and d.service == service))
            ]


class ChangeIndex(RecordIndex[ChangeRecord]):
    """Every change request as the ITSM has it, fed by itsm.changes (the approval source)."""

    def __init__(self, serde: AvroSerde, topic: str) -> None:
        super().__init__(serde, topic, ChangeRecord, lambda c: c.change_id)
        self._views: list[ChangeView] | None = None

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        super().apply(key, value)
        with self._lock:
            self._views = None

    def put(self, record: ChangeRecord) -> None:
        super().put(record)
        with self._lock:
            self._views = None

    def changes(self) -> list[ChangeView]:
        """The gate's view of every change, converted once per change of the topic (not per call)."""
        with self._lock:
            # Built under the lock from the current records, so it is never older than a reset.
            if self._views is None:
                self._views = [ChangeView.from_record(r) for r in self._items.values()]
            return self._views


class GateRequestIndex(RecordIndex[GateRequest]):
    """Deploy requests waiting on a change's approval, fed by gate.requests."""

    def __init__(self, serde: AvroSerde, topic: str) -> None:
        super().__init__(serde, topic, GateRequest, lambda r: r.request_id)


class ItsmIncidentIndex(RecordIndex[IncidentRecord]):
    """Every incident as the ITSMs have it, fed by itsm.incidents (`itsmctl incidents sync`):
    looked up by correlation id, with the ids changed since the worker last asked."""

    def __init__(self, serde: AvroSerde, topic: str) -> None:
        super().__init__(serde, topic, IncidentRecord, lambda r: r.key)
        self._by_correlation: dict[str, dict[str, IncidentRecord]] = {}
        self._changed: set[str] = set()

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        super().apply(key, value)
        if value is None:
            return
        record = self.get(text(key))
        if record is not None:
            with self._lock:
                self._by_correlation.setdefault(record.correlation_id, {})[record.target] = record
                self._changed.add(record.correlation_id)

    def records(self, correlation_id: str) -> list[IncidentRecord]:
        with self._lock:
            return list(self._by_correlation.get(correlation_id, {}).values())

    def drain_changed(self) -> list[str]:
        with self._lock:
            changed, self._changed = list(self._changed), set()
            return changed
