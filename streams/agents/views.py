"""The worker's global views: the CMDB, the maintenance calendar and the CI -> open incident index."""

from __future__ import annotations

import threading
import time

from streams.core import telemetry
from streams.core.models import ConfigurationItem, MaintenanceWindow
from streams.core.serde import AvroSerde, SerdeError
from streams.stages.cmdb import CMDBIndex

VIEW_SKIPPED = telemetry.VIEW_SKIPPED


class CMDBView(CMDBIndex):
    """The CMDB index fed by cmdb.ci."""

    def __init__(self, serde: AvroSerde, topic: str) -> None:
        super().__init__()
        self.serde = serde
        self.topic = topic

    def apply(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.remove(key.decode())
            return
        try:
            self.upsert(self.serde.decode(value, ConfigurationItem))
        except SerdeError:
            VIEW_SKIPPED.labels(self.topic).inc()


class WindowView:
    """Every maintenance and freeze window fed by maintenance.windows."""

    def __init__(self, serde: AvroSerde, topic: str) -> None:
        self.serde = serde
        self.topic = topic
        self._items: dict[str, MaintenanceWindow] = {}
        self._lock = threading.Lock()

    def apply(self, key: bytes, value: bytes | None) -> None:
        with self._lock:
            if value is None:
                self._items.pop(key.decode(), None)
                return
            try:
                window = self.serde.decode(value, MaintenanceWindow)
            except SerdeError:
                VIEW_SKIPPED.labels(self.topic).inc()
                return
            self._items[window.window_id] = window

    def windows(self) -> list[MaintenanceWindow]:
        with self._lock:
            return list(self._items.values())


class IncidentIndexView:
    """CI id -> correlation id of its open incident, fed by alerts.ci.incidents and by local writes."""

    def __init__(self) -> None:
        self._items: dict[str, str] = {}
        self._lock = threading.Lock()
        self.updated_at = time.monotonic()

    def apply(self, key: bytes, value: bytes | None) -> None:
        self.set(key.decode(), value.decode() if value else None)

    def set(self, ci_id: str, incident: str | None) -> None:
        with self._lock:
            if incident is None:
                self._items.pop(ci_id, None)
            else:
                self._items[ci_id] = incident

    def get(self, ci_id: str) -> str | None:
        with self._lock:
            return self._items.get(ci_id)
