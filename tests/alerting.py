"""An in-memory AlertEngine harness: dict state, CMDB index, incident index, window list, a clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from streams.core import models as m
from streams.core.rules import Rules, load_rules
from streams.processors.indexes import CIIncidentIndex
from streams.stages.alerts.engine import AlertEngine
from streams.stages.alerts.state import AlertState, Effects, decode_state, encode_state
from streams.stages.cmdb import CMDBIndex

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)  # a Friday


class DictStore:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, fingerprint: str) -> AlertState | None:
        raw = self.data.get(fingerprint)
        return decode_state(raw) if raw else None

    def put(self, state: AlertState) -> None:
        # Serialized like the Faust table value, so tests catch what does not survive a round trip.
        self.data[state.fingerprint] = encode_state(state)


class Windows:
    def __init__(self) -> None:
        self.items: dict[str, m.MaintenanceWindow] = {}

    def windows(self) -> list[m.MaintenanceWindow]:
        return list(self.items.values())


class ItsmState:
    """itsm.incidents as the worker's view holds it: records by correlation id."""

    def __init__(self) -> None:
        self.items: dict[str, list[m.IncidentRecord]] = {}

    def records(self, correlation_id: str) -> list[m.IncidentRecord]:
        return list(self.items.get(correlation_id, []))

    def person_resolved(self, correlation_id: str, at: datetime, **kw: Any) -> m.IncidentRecord:
        """The ITSM says a person resolved this incident at `at`."""
        record = m.IncidentRecord.model_validate(
            {
                "target": "servicenow",
                "correlation_id": correlation_id,
                "itsm_id": "0" * 32,
                "number": "INC0010001",
                "status": kw.pop("status", "RESOLVED"),
                "resolved_by": "Ada Lovelace",
                "resolved_at": at,
                "updated_at": at,
                **kw,
            }
        )
        self.items[correlation_id] = [record]
        return record


class Harness:
    """One engine with everything it reads, and a clock the test moves."""

    def __init__(self, rules: Rules | None = None, inhibit: str = "", **lifecycle: float) -> None:
        base = rules or load_rules()
        if inhibit:  # ops/rules/inhibit.toml's [[rule]] tables, as TOML text
            import tomllib

            from streams.core.rules import InhibitRules

            rules_ = InhibitRules.model_validate({"version": 1, **tomllib.loads(inhibit)})
            base = base.model_copy(update={"inhibit": rules_})
        if lifecycle:
            base = base.model_copy(update={"lifecycle": base.lifecycle.model_copy(update=lifecycle)})
        self.rules = base
        self.store = DictStore()
        self.cmdb = CMDBIndex()
        self.incidents = CIIncidentIndex()
        self.windows = Windows()
        self.itsm = ItsmState()
        self.engine = AlertEngine(base, self.store, self.cmdb, self.incidents, self.windows, self.itsm)
        self.now = T0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def apply(self, fx: Effects) -> Effects:
        for (ci, incident), entry in fx.index_updates.items():
            self.incidents.set(ci, incident, entry)
        for window in fx.windows:  # a source's inhibitions, as maintenance.windows carries them
            self.windows.items[window.window_id] = window
        for window_id in fx.windows_gone:
            self.windows.items.pop(window_id, None)
        return fx

    def send(self, alert: m.Alert) -> Effects:
        fx, state = self.engine.process(alert, self.now, partition=0)
        if state is not None:
            self.store.put(state)
        return self.apply(fx)

    def tick(self, fingerprint: str) -> Effects | None:
        fx, state = self.engine.tick(fingerprint, self.now)
        if state is not None and fx is not None:
            self.store.put(state)
        return self.apply(fx) if fx else None

    def state(self, fingerprint: str) -> AlertState:
        s = self.store.get(fingerprint)
        assert s is not None
        return s

    def ci(self, ci_id: str, **kw: Any) -> m.ConfigurationItem:
        rels = kw.pop("depends_on", [])
        ci = m.ConfigurationItem.model_validate(
            {
                "ci_id": ci_id,
                "name": kw.pop("name", ci_id),
                "ci_class": kw.pop("ci_class", "cmdb_ci_server"),
                "source_system": "test",
                "updated_at": T0,
                "relationships": [{"type": "DEPENDS_ON", "target_ci_id": t} for t in rels],
                **kw,
            }
        )
        self.cmdb.upsert(ci)
        return ci

    def window(
        self, window_id: str, scope: str, target: str, start: float = -60, end: float = 600, **kw: Any
    ) -> m.MaintenanceWindow:
        w = m.MaintenanceWindow.model_validate(
            {
                "window_id": window_id,
                "kind": kw.pop("kind", "MAINTENANCE"),
                "scope": scope,
                "target": target,
                "starts_at": self.now + timedelta(seconds=start),
                "ends_at": self.now + timedelta(seconds=end),
                "updated_at": T0,
                **kw,
            }
        )
        self.windows.items[window_id] = w
        return w


def am(
    fp: str, status: str = "FIRING", severity: str = "warning", starts_at: datetime = T0, **labels: str
) -> m.Alert:
    """An Alertmanager alert with the given labels (alertname HighCPU by default); a re-fire after
    a resolve starts anew (a later starts_at), as Alertmanager's do."""
    lbl = {"alertname": "HighCPU", **labels}
    return m.Alert(
        fingerprint=fp,
        source=m.AlertSource.ALERTMANAGER,
        status=m.AlertStatus(status),
        name=lbl["alertname"],
        severity=severity,
        summary=f"{lbl['alertname']} {fp}",
        labels=lbl,
        starts_at=starts_at,
        received_at=starts_at,
    )
