"""The change agents' work without Faust: CI updates validated into cmdb.ci and change requests,
change requests and deployments checked against the CMDB (parked until their CIs arrive) and
deployments linked to their change."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from streams.core import telemetry
from streams.core.dlq import ErrorClass, Headers
from streams.core.messages import Consumed, Output, encoded
from streams.core.models import (
    AuditEvent,
    AuditOutcome,
    ChangeCommand,
    ChangeType,
    ConfigurationItem,
    DeploymentEvent,
    Record,
)
from streams.core.rules import Rules
from streams.core.serde import AvroSerde, SerdeError
from streams.core.settings import Settings
from streams.core.topics import (
    AUDIT_EVENTS,
    CHANGE_COMMANDS,
    CHANGE_REQUESTS,
    CMDB_CI,
    CMDB_CI_UPDATES,
    DEPLOY_EVENTS,
)
from streams.processors.effects import DATA_FAULTS, Emitter, dead_letter, send_all
from streams.stages.changes.gate import ChangeView
from streams.stages.changes.linking import FINISHED, DeployLinker
from streams.stages.changes.validation import CIUpdateValidator, CIVerdict

T = TypeVar("T", bound=Record)


class CMDBWriter(Protocol):
    """The CMDB view: read by id, and told about CIs this worker accepted (read-your-writes)."""

    def get(self, ci_id: str) -> ConfigurationItem | None: ...

    def upsert(self, ci: ConfigurationItem) -> None: ...


class ChangeSource(Protocol):
    def changes(self) -> list[ChangeView]: ...


class NoChanges:
    """For workers run without the ITSM's change view: nothing links by window."""

    def changes(self) -> list[ChangeView]:
        return []


class Parked(BaseModel):
    """A record waiting for CIs the CMDB does not have yet (the Faust table value, as JSON)."""

    topic: str
    partition: int
    offset: int
    key: str | None  # base64
    value: str  # base64
    headers: list[tuple[str, str | None]]  # (name, base64 value or None)
    parked_at: datetime
    missing: list[str]

    @classmethod
    def of(cls, record: Consumed, now: datetime, missing: list[str]) -> Parked:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=_b64(record.key),
            value=_b64(record.value or b"") or "",
            headers=[(k, _b64(v)) for k, v in record.headers],
            parked_at=now,
            missing=missing,
        )

    @property
    def slot(self) -> str:
        """Its key in the parked table: where it came from."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    def record(self) -> Consumed:
        """The parked record, as it was consumed."""
        key = base64.b64decode(self.key) if self.key is not None else None
        headers: Headers = [(k, base64.b64decode(v) if v is not None else None) for k, v in self.headers]
        return Consumed(key, base64.b64decode(self.value), headers, self.topic, self.partition, self.offset)


def _b64(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return base64.b64encode(value if isinstance(value, bytes) else value.encode()).decode()


class DataError(Exception):
    """The record itself is at fault: dead-letter it with this class and message."""

    def __init__(self, error_class: ErrorClass, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class


@dataclass
class ChangeProcessor:
    """Everything the change agents do per record and per tick."""

    settings: Settings
    serde: AvroSerde
    emit: Emitter
    rules: Rules
    parked: MutableMapping[str, bytes]
    cmdb: CMDBWriter
    changes: ChangeSource
    environments: frozenset[str] = frozenset({"production"})
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    counts: dict[int, int] = field(default_factory=dict)
    _keys: Counter[tuple[str, str | None]] | None = None

    def __post_init__(self) -> None:
        t = self.settings.topic
        self.updates_topic = t(CMDB_CI_UPDATES)
        self.requests_topic = t(CHANGE_REQUESTS)
        self.deploys_topic = t(DEPLOY_EVENTS)
        self.cmdb_topic = t(CMDB_CI)
        self.commands_topic = t(CHANGE_COMMANDS)
        self.audit_topic = t(AUDIT_EVENTS)
        self.ci_stage = CIUpdateValidator(self.rules.changes)
        self.linker = DeployLinker(self.environments)
        self.log = telemetry.get_logger("worker.changes")

    def switch_rules(self, rules: Rules) -> None:
        """Run the next record under another rule set (called between records, never within)."""
        self.rules = rules
        self.ci_stage = CIUpdateValidator(rules.changes)

    # -- cmdb.ci.updates ------------------------------------------------------------------------

    async def handle_ci_update(self, record: Consumed, parked: Parked | None = None) -> str:
        """Validate one proposed CI update: into cmdb.ci (and a change request), or rejected; parked
        while a CI its relationships point at is not in the CMDB yet (a batch import whose
        relationships arrive first), and behind an earlier parked update of the same CI."""
        now = self.clock()
        topic, partition, offset = record.topic, record.partition, record.offset
        try:
            ci = self._decode(record.value, ConfigurationItem)
        except DataError as exc:
            return await self._dead_letter("ci_update", record, exc, now)
        missing = (
            []
            if ci.deleted
            else sorted(
                {
                    r.target_ci_id
                    for r in ci.relationships
                    if r.target_ci_id != ci.ci_id and self.cmdb.get(r.target_ci_id) is None
                }
            )
        )
        if parked is None and self._waiting(record):
            missing = missing or [f"(an earlier parked update of {ci.ci_id})"]
        if missing:
            waiting = await self._wait_for(
                "ci_update", record, parked, missing, now, f"relationship target(s) {', '.join(missing)}"
            )
            if waiting is not None:
                return waiting
        try:
            verdict = self.ci_stage.check(self.cmdb.get(ci.ci_id), ci, now)
            outputs = (
                [] if verdict.ci is None else [encoded(self.serde, self.cmdb_topic, ci.ci_id, verdict.ci)]
            )
            if verdict.change is not None:
                outputs.append(self._command(verdict.change))
            outputs += [self._audit(a) for a in self._reconcile_audits(ci, verdict, record, now)]
        except DATA_FAULTS as exc:
            fault = DataError(ErrorClass.VALIDATION, f"{type(exc).__name__}: {exc}")
            return await self._finish_parked(parked, await self._dead_letter("ci_update", record, fault, now))
        except DataError as exc:
            return await self._finish_parked(parked, await self._dead_letter("ci_update", record, exc, now))
        if not verdict.accepted:
            assert verdict.error_class is not None
            audit = AuditEvent(
                event_id=f"ci-update-{topic}-{partition}-{offset}",
                occurred_at=now,
                actor=ci.source_system,
                action="ci.update.rejected",
                subject_type="ci",
                subject_id=ci.ci_id,
                outcome=AuditOutcome.REJECTED,
                reason=verdict.reason,
                details={"changed": ",".join(verdict.changed), "error_class": verdict.error_class.value},
            )
            await self._send([self._audit(audit)], record)
            rejected = DataError(verdict.error_class, verdict.reason)
            await self._dead_letter("ci_update", record, rejected, now, "rejected")
            return await self._finish_parked(parked, "rejected")
        await self._send(outputs, record)
        if parked is not None:  # only once its outputs are acknowledged: a crash retries it
            self._unpark(parked)
            telemetry.CHANGE_INPUTS.labels("ci_update", "unparked").inc()
        if verdict.ci is not None:
            self.cmdb.upsert(verdict.ci)  # the next update of this CI is checked against this one
        for d in verdict.decisions:
            telemetry.CI_RECONCILED.labels(ci.ci_class, d.metric_field, d.outcome).inc()
        outcome = "accepted_with_change" if verdict.change else "accepted"
        telemetry.CHANGE_INPUTS.labels("ci_update", outcome).inc()
        return outcome

    @staticmethod
    def _reconcile_audits(
        ci: ConfigurationItem, verdict: CIVerdict, record: Consumed, now: datetime
    ) -> list[AuditEvent]:
        """One audit record per losing value: what the source offered, what the CMDB kept and whose."""
        out = []
        for d in verdict.lost:
            holder = d.holder
            out.append(
                AuditEvent(
                    event_id=f"ci-reconcile-{record.topic}-{record.partition}-{record.offset}-{d.path}",
                    occurred_at=now,
                    actor=ci.source_system,
                    action="ci.reconcile.lost",
                    subject_type="ci",
                    subject_id=ci.ci_id,
                    outcome=AuditOutcome.DENIED,
                    reason=f"{ci.source_system}'s {d.path} lost ({d.outcome}) to "
                    f"{holder.source if holder else '(none)'}'s value",
                    details={
                        "field": d.path,
                        "ci_class": ci.ci_class,
                        "outcome": d.outcome,
                        "offered": d.offered,
                        "offered_at": ci.updated_at.isoformat(),
                        "kept": d.kept,
                        "kept_source": holder.source if holder else "",
                        "kept_at": holder.at.isoformat() if holder else "",
                        "priority": ",".join(d.rule.priority) if d.rule else "",
                    },
                )
            )
        return out

    # -- change.requests and deploy.events (parked while a CI is missing) --------------------

    async def handle(self, record: Consumed, parked: Parked | None = None) -> str:
        """One change request or deployment event; parked if it names a CI the CMDB lacks."""
        now = self.clock()
        kind = "deploy" if record.topic == self.deploys_topic else "request"
        try:
            item: ChangeCommand | DeploymentEvent = (
                self._decode(record.value, DeploymentEvent)
                if kind == "deploy"
                else self._decode(record.value, ChangeCommand)
            )
        except DataError as exc:
            return await self._dead_letter(kind, record, exc, now)
        if (
            isinstance(item, ChangeCommand)
            and item.change_type is ChangeType.EMERGENCY
            and not item.justification.strip()
        ):
            unjustified = DataError(
                ErrorClass.VALIDATION, "an EMERGENCY change request needs a justification"
            )
            return await self._dead_letter(kind, record, unjustified, now)
        missing = sorted({c for c in item.ci_ids if self.cmdb.get(c) is None})
        if missing:
            waiting = await self._wait_for(kind, record, parked, missing, now, f"CI(s) {', '.join(missing)}")
            if waiting is not None:
                return waiting
        try:
            if isinstance(item, DeploymentEvent):
                outcome = await self._deploy(item, record, now)
            else:
                await self._send([self._command(item)], record)
                outcome = "forwarded"
        except DATA_FAULTS as exc:
            fault = DataError(ErrorClass.VALIDATION, f"{type(exc).__name__}: {exc}")
            result = await self._dead_letter(kind, record, fault, now)
            if parked is not None:
                self._unpark(parked)
            return result
        if parked is not None:
            self._unpark(parked)
            telemetry.CHANGE_INPUTS.labels(kind, "unparked").inc()
        telemetry.CHANGE_INPUTS.labels(kind, outcome).inc()
        return outcome

    async def _deploy(self, event: DeploymentEvent, record: Consumed, now: datetime) -> str:
        link = self.linker.link(event, self.changes.changes(), now)
        outputs: list[Output] = []
        if link.command is not None:
            outputs.append(self._command(link.command))
        if link.audit is not None:
            outputs.append(self._audit(link.audit))
        await self._send(outputs, record)
        if link.change is None:
            if link.how != "not_required":
                self.log.warning("deploy_unlinked", deployment=event.deployment_id, reason=link.reason)
            return "unlinked" if link.how != "not_required" else "not_required"
        if event.phase in FINISHED:
            telemetry.DEPLOY_OUTCOMES.labels(event.service, event.phase.value.lower()).inc()
            if event.duration_ms is not None:
                telemetry.DEPLOY_DURATION.labels(event.service).observe(event.duration_ms / 1000)
        return "linked"

    async def tick(self, partition: int) -> int:
        """Retry this partition's parked records in offset order (those whose CIs arrived go on;
        a CI update stays behind an earlier one of the same CI still parked); returns how many are
        still parked."""
        waiting = 0
        entries = sorted(
            (
                e
                for e in map(Parked.model_validate_json, list(self.parked.values()))
                if e.partition == partition
            ),
            key=lambda e: (e.topic, e.offset),
        )
        blocked: set[tuple[str, str | None]] = set()
        for entry in entries:
            if entry.topic == self.updates_topic:
                if (entry.topic, entry.key) in blocked:
                    waiting += 1
                    continue
                outcome = await self.handle_ci_update(entry.record(), entry)
                if outcome == "parked":
                    blocked.add((entry.topic, entry.key))
            else:
                outcome = await self.handle(entry.record(), entry)
            waiting += outcome == "parked"
        telemetry.PARKED_RECORDS.labels(str(partition)).set(waiting)
        return waiting

    async def _wait_for(
        self, kind: str, record: Consumed, parked: Parked | None, missing: list[str], now: datetime, what: str
    ) -> str | None:
        """Park a record whose CIs are missing, keep one parked, or dead-letter it once it waited
        park_timeout (referential integrity); None when it may go on."""
        if parked is None:
            entry = Parked.of(record, now, missing)
            self.parked[entry.slot] = entry.model_dump_json().encode()
            self._parked_keys()[(record.topic, entry.key)] += 1
            telemetry.CHANGE_INPUTS.labels(kind, "parked").inc()
            self.log.info(
                "parked",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                missing=missing,
            )
            return "parked"
        waited = (now - parked.parked_at).total_seconds()
        if waited < self.rules.changes.park_timeout:
            return "parked"
        timeout = DataError(
            ErrorClass.VALIDATION,
            f"{what} not in the CMDB after waiting {waited:.0f}s "
            f"(park_timeout {self.rules.changes.park_timeout:.0f}s): referential integrity",
        )
        result = await self._dead_letter(kind, record, timeout, now)
        self._unpark(parked)
        return result

    async def _finish_parked(self, parked: Parked | None, outcome: str) -> str:
        if parked is not None:
            self._unpark(parked)
        return outcome

    def _parked_keys(self) -> Counter[tuple[str, str | None]]:
        """How many records of each (topic, key) are parked (built once from the table, which a
        restart restores from its changelog)."""
        if self._keys is None:
            self._keys = Counter(
                (e.topic, e.key) for e in map(Parked.model_validate_json, self.parked.values())
            )
        return self._keys

    def _waiting(self, record: Consumed) -> bool:
        """Whether an earlier record of this topic and key is parked (its order must hold)."""
        return self._parked_keys()[(record.topic, _b64(record.key))] > 0

    # -- helpers --------------------------------------------------------------------------------

    def _unpark(self, entry: Parked) -> None:
        if self.parked.pop(entry.slot, None) is not None:
            keys = self._parked_keys()
            keys[(entry.topic, entry.key)] -= 1
            if keys[(entry.topic, entry.key)] <= 0:
                del keys[(entry.topic, entry.key)]

    def _decode(self, value: bytes | None, model: type[T]) -> T:
        try:
            return self.serde.decode(value or b"", model)
        except SerdeError as exc:
            raise DataError(ErrorClass(exc.error_class), str(exc)) from exc
        except ValidationError as exc:
            raise DataError(ErrorClass.VALIDATION, str(exc)) from exc

    def _command(self, cmd: ChangeCommand) -> Output:
        """A change command as an output on itsm.change.commands, keyed by its correlation id."""
        return encoded(self.serde, self.commands_topic, cmd.correlation_id, cmd)

    def _audit(self, event: AuditEvent) -> Output:
        return encoded(self.serde, self.audit_topic, event.event_id, event)

    async def _send(self, outputs: list[Output], record: Consumed) -> None:
        await send_all(self.emit, outputs, record.trace())

    async def _dead_letter(
        self, kind: str, record: Consumed, exc: DataError, now: datetime, outcome: str = "dead_lettered"
    ) -> str:
        await dead_letter(self.emit, f"changes.{kind}", record, exc.error_class, str(exc), now, self.log)
        telemetry.CHANGE_INPUTS.labels(kind, outcome).inc()
        return outcome
