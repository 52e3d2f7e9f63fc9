"""The alerts agent's work without Faust: decode, run the engine, publish every effect, or dead-letter."""

from __future__ import annotations

import zlib
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from streams.core import telemetry
from streams.core.dlq import ErrorClass, Headers
from streams.core.messages import Consumed, Output, encoded
from streams.core.models import Alert, CorrelationDecisionKind, CorrelationSample, SuppressedAlert
from streams.core.rules import Rules
from streams.core.serde import AvroSerde, SerdeError
from streams.core.settings import Settings
from streams.core.topics import (
    ALERTS_CI_INCIDENTS,
    ALERTS_CORRELATION_SAMPLES,
    ALERTS_RAW,
    ALERTS_SUPPRESSED,
    INCIDENT_COMMANDS,
    dlq_name,
)
from streams.processors.effects import DATA_FAULTS, Emitter, dead_letter, send_all
from streams.stages.alerts.engine import AlertEngine
from streams.stages.alerts.state import AlertState, Effects, ItsmIncidents, NoItsmIncidents
from streams.stages.cmdb import CIIndex
from streams.stages.windows import WindowSource

STAGE = "alerts"


class IncidentIndexWriter(Protocol):
    def get(self, ci_id: str) -> str | None: ...

    def set(self, ci_id: str, incident: str | None) -> None: ...


class TableStore:
    """AlertState in a mapping of fingerprint -> JSON bytes (the Faust table, or a dict in tests)."""

    def __init__(self, table: MutableMapping[str, bytes]) -> None:
        self.table = table

    def get(self, fingerprint: str) -> AlertState | None:
        raw = self.table.get(fingerprint)
        return AlertState.model_validate_json(raw) if raw else None

    def put(self, state: AlertState) -> None:
        self.table[state.fingerprint] = state.model_dump_json().encode()


def sampled(rate: float, *parts: str | None) -> bool:
    """Deterministic sampling: the same decision is always sampled, or never."""
    if rate <= 0:
        return False
    return zlib.crc32("|".join(p or "" for p in parts).encode()) % 10_000 < rate * 10_000


@dataclass
class AlertProcessor:
    """Everything the alerts agent does per record and per tick."""

    settings: Settings
    serde: AvroSerde
    emit: Emitter
    rules: Rules
    table: MutableMapping[str, bytes]
    cmdb: CIIndex
    incidents: IncidentIndexWriter
    windows: WindowSource
    itsm: ItsmIncidents = field(default_factory=NoItsmIncidents)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    due: dict[int, dict[str, datetime]] = field(default_factory=dict)
    # Correlation id -> fingerprint of this worker's states: what an ITSM change touches.
    by_incident: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.settings.topic
        self.topics = {
            name: t(name)
            for name in (
                INCIDENT_COMMANDS,
                ALERTS_SUPPRESSED,
                ALERTS_CORRELATION_SAMPLES,
                ALERTS_CI_INCIDENTS,
                ALERTS_RAW,
            )
        }
        self.dlq_topic = dlq_name(t(ALERTS_RAW))
        self.store = TableStore(self.table)
        self.engine = AlertEngine(self.rules, self.store, self.cmdb, self.incidents, self.windows, self.itsm)
        self.log = telemetry.get_logger("worker.alerts")

    async def handle(self, record: Consumed) -> str:
        """Process one alerts.raw record; returns how it was accounted for."""
        now = self.clock()
        try:
            alert = self.serde.decode(record.value or b"", Alert)
            fx, state = self.engine.process(alert, now, record.partition)
            outputs = self._encode(fx, now)
        except SerdeError as exc:
            return await self._dead_letter(record, now, ErrorClass(exc.error_class), str(exc))
        except DATA_FAULTS as exc:
            return await self._dead_letter(record, now, ErrorClass.VALIDATION, f"{type(exc).__name__}: {exc}")
        await self._publish(fx, outputs, record.trace())
        self.store.put(state)  # only after the outputs were acknowledged
        self._track(state, now)
        telemetry.ALERT_OUTCOMES.labels(fx.outcome.value).inc()
        return fx.outcome.value

    async def tick(self, partition: int) -> int:
        """Time-driven transitions of this partition's alerts that came due; returns how many ran."""
        now = self.clock()
        if partition not in self.due:
            self._rebuild_due(partition, now)
        self._itsm_changes(now)
        due = self.due[partition]
        ready = [fp for fp, at in due.items() if at <= now]
        for fp in ready:
            del due[fp]
            fx, state = self.engine.tick(fp, now)
            if fx is not None and state is not None:
                await self._publish(fx, self._encode(fx, now), [])
                self.store.put(state)
            if state is not None:
                self._track(state, now)
        return len(ready)

    def _itsm_changes(self, now: datetime) -> None:
        """Incidents the ITSM changed (itsm.incidents): their states' due times are computed again
        (a person resolving an incident while its alert fires makes it due)."""
        drain = getattr(self.itsm, "drain_changed", None)
        if drain is None:
            return
        for incident in drain():
            fingerprint = self.by_incident.get(incident)
            state = self.store.get(fingerprint) if fingerprint else None
            if state is not None and state.partition in self.due:
                self._track(state, now)

    def forget_partitions(self) -> None:
        """After a rebalance: rebuild the due index from the table on the next tick."""
        self.due.clear()

    def _rebuild_due(self, partition: int, now: datetime) -> None:
        due: dict[str, datetime] = {}
        for raw in list(self.table.values()):
            state = AlertState.model_validate_json(raw)
            if state.partition == partition:
                if state.incident_id:
                    self.by_incident[state.incident_id] = state.fingerprint
                at = self.engine.due(state, now)
                if at is not None:
                    due[state.fingerprint] = at
        self.due[partition] = due

    def _track(self, state: AlertState, now: datetime) -> None:
        if state.incident_id:
            self.by_incident[state.incident_id] = state.fingerprint
        at = self.engine.due(state, now)
        if state.partition not in self.due:
            # First touch of this partition since (re)assignment: index every recovered state of
            # it first, or a state restored from the changelog would never come due.
            self._rebuild_due(state.partition, now)
        bucket = self.due[state.partition]
        if at is None:
            bucket.pop(state.fingerprint, None)
        else:
            bucket[state.fingerprint] = at

    def _encode(self, fx: Effects, now: datetime) -> list[Output]:
        """Every output record of fx, encoded first: a record that cannot be encoded fails the input."""
        t, serde = self.topics, self.serde
        out = [encoded(serde, t[INCIDENT_COMMANDS], cmd.correlation_id, cmd) for cmd in fx.commands]
        for sup in fx.suppressed:
            record = SuppressedAlert(
                alert=sup.alert,
                reason=sup.reason,
                window_id=sup.window.window_id if sup.window else None,
                change_id=sup.window.change_id if sup.window else None,
                window_ends_at=sup.window.ends_at if sup.window else None,
                suppressed_at=now,
            )
            out.append(encoded(serde, t[ALERTS_SUPPRESSED], sup.alert.fingerprint, record))
        rate = self.rules.correlation.sampling.rate
        for d in fx.decisions:
            if not sampled(rate, d.fingerprint, d.incident_id, d.ci_id):
                continue
            sample_id = f"{d.fingerprint}:{int(now.timestamp() * 1000)}"
            sample = CorrelationSample(
                sample_id=sample_id,
                fingerprint=d.fingerprint,
                rule=d.rule,
                decision=CorrelationDecisionKind(d.decision.upper()),
                ci_id=d.ci_id,
                incident_id=d.incident_id,
                labels=d.labels,
                decided_at=now,
            )
            out.append(encoded(serde, t[ALERTS_CORRELATION_SAMPLES], sample_id, sample))
        for ci_id, incident in fx.index_updates.items():
            out.append(
                Output(t[ALERTS_CI_INCIDENTS], ci_id.encode(), incident.encode() if incident else None)
            )
        return out

    async def _publish(self, fx: Effects, outputs: list[Output], trace: Headers) -> None:
        # Read-your-writes: this worker sees its own index updates before the topic echoes them.
        for ci_id, incident in fx.index_updates.items():
            self.incidents.set(ci_id, incident)
        await send_all(self.emit, outputs, trace)

    async def _dead_letter(
        self, record: Consumed, now: datetime, error_class: ErrorClass, message: str
    ) -> str:
        await dead_letter(self.emit, STAGE, record, error_class, message, now, self.log, self.dlq_topic)
        telemetry.ALERT_OUTCOMES.labels("dead_lettered").inc()
        return "dead_lettered"
