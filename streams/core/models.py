"""Canonical records as pydantic models; each mirrors one schemas/avro/*.avsc (checked by tests)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from streams.core.matchers import Matcher, MatchType, compiled


def to_utc(value: datetime) -> datetime:
    """An aware timestamp in UTC at millisecond precision (what UtcDatetime stores)."""
    # Avro timestamp-millis carries milliseconds; truncate so a round trip is exact.
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        # An offset that pushes the instant past year 1 or 9999: no UTC timestamp exists.
        raise ValueError(f"{value.isoformat()} lies outside the calendar in UTC") from None
    return value.replace(microsecond=(value.microsecond // 1000) * 1000)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(to_utc)]
"""A timezone-aware timestamp stored in UTC; naive timestamps are rejected."""

NonEmpty = Annotated[str, Field(min_length=1)]

MAX_FINGERPRINT = 80
"""Fingerprints travel into ITSM correlation ids (ServiceNow's correlation_id holds 100
characters) and lookup URLs, so longer ones are replaced by a digest of themselves."""


def bounded_fingerprint(value: str) -> str:
    """The fingerprint as given, or its digest when longer than MAX_FINGERPRINT."""
    if len(value) <= MAX_FINGERPRINT:
        return value
    # Deterministic: every notification of the same alert gets the same bounded fingerprint.
    return "sha256-" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


Fingerprint = Annotated[str, Field(min_length=1), AfterValidator(bounded_fingerprint)]
"""An alert's identity: as given, or its SHA-256 digest when longer than MAX_FINGERPRINT."""

MAX_CORRELATION_ID = 100
CorrelationId = Annotated[str, Field(min_length=1, max_length=MAX_CORRELATION_ID)]
"""The id every ITSM record carries to be found again; bounded like ServiceNow's correlation_id."""


class Record(BaseModel):
    """Base of every canonical record: strict about unknown fields, immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)
    avro_name: ClassVar[str]

    def to_avro(self) -> dict[str, Any]:
        """The record as fastavro expects it (enums as symbols, datetimes as aware UTC).

        A record with no nested model is its fields as they are (what model_dump gives, a tenth of
        the time: one per record encoded); its maps and lists are then the record's own, so read
        the result, never change what it holds (serde's encryption copies what it changes).
        """
        if _flat(type(self)):
            return dict(self.__dict__)
        return self.model_dump(mode="python")


def _holds_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_model(arg) for arg in get_args(annotation))


_FLAT: dict[type[BaseModel], bool] = {}


def _flat(model: type[BaseModel]) -> bool:
    """Whether no field of model holds another model (at any depth of its type)."""
    flat = _FLAT.get(model)
    if flat is None:
        flat = _FLAT[model] = not any(_holds_model(f.annotation) for f in model.model_fields.values())
    return flat


class AlertSource(StrEnum):
    ALERTMANAGER = "ALERTMANAGER"
    GRAFANA = "GRAFANA"
    PAGERDUTY = "PAGERDUTY"
    DATADOG = "DATADOG"
    CANONICAL = "CANONICAL"
    OTHER = "OTHER"
    PROMETHEUS = "PROMETHEUS"  # polled from a Prometheus' /api/v1/alerts (itsmctl poll prometheus)


class AlertStatus(StrEnum):
    FIRING = "FIRING"
    RESOLVED = "RESOLVED"


class Alert(Record):
    """One monitoring alert in canonical form."""

    avro_name = "io.itsmpipeline.alerts.Alert"
    fingerprint: Fingerprint
    source: AlertSource
    source_instance: str = ""
    status: AlertStatus
    name: NonEmpty
    severity: str = ""
    summary: str = ""
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: UtcDatetime
    ends_at: UtcDatetime | None = None
    generator_url: str | None = None
    received_at: UtcDatetime
    source_zone: str | None = None  # the offset or zone the source gave its times in


class Criticality(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class RelationshipType(StrEnum):
    DEPENDS_ON = "DEPENDS_ON"
    RUNS_ON = "RUNS_ON"
    HOSTED_ON = "HOSTED_ON"
    CONNECTS_TO = "CONNECTS_TO"
    MEMBER_OF = "MEMBER_OF"
    OTHER = "OTHER"


class Relationship(BaseModel):
    """A directed edge from a CI to another."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: RelationshipType
    target_ci_id: NonEmpty


class FieldSource(BaseModel):
    """Which source set a CI field's value, and when it last reported it."""

    source: NonEmpty
    at: UtcDatetime


class ConfigurationItem(Record):
    """A CMDB configuration item with its outgoing relationships."""

    avro_name = "io.itsmpipeline.cmdb.ConfigurationItem"
    ci_id: NonEmpty
    name: NonEmpty
    ci_class: NonEmpty
    hostname: str | None = None
    ip_addresses: list[str] = Field(default_factory=list)
    service: str | None = None
    environment: str = "production"
    criticality: Criticality = Criticality.MEDIUM
    owner_group: str | None = None
    source_system: NonEmpty
    attributes: dict[str, str] = Field(default_factory=dict)
    relationships: list[Relationship] = Field(default_factory=list)
    updated_at: UtcDatetime
    deleted: bool = False
    provenance: dict[str, FieldSource] = Field(default_factory=dict)
    source_zone: str | None = None


class WindowKind(StrEnum):
    MAINTENANCE = "MAINTENANCE"
    FREEZE = "FREEZE"
    INHIBITION = "INHIBITION"  # a firing source alert's inhibition (ops/rules/inhibit.toml)


class WindowScope(StrEnum):
    CI = "CI"
    CI_AND_DEPENDENTS = "CI_AND_DEPENDENTS"
    SERVICE = "SERVICE"
    ENVIRONMENT = "ENVIRONMENT"
    GLOBAL = "GLOBAL"


class Weekday(StrEnum):
    MON = "MON"
    TUE = "TUE"
    WED = "WED"
    THU = "THU"
    FRI = "FRI"
    SAT = "SAT"
    SUN = "SUN"


class Recurrence(BaseModel):
    """A weekly schedule: local start time and duration on given weekdays, in a named zone."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    weekdays: list[Weekday] = Field(min_length=1)
    start_time: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
    duration_minutes: int = Field(gt=0)
    timezone: NonEmpty

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        # An unknown zone would make the window silently never open: refuse it instead.
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r}") from None
        return v


class LabelMatcher(BaseModel):
    """One label matcher of a silence (Alertmanager's semantics, streams/core/matchers.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    type: MatchType
    value: str

    @model_validator(mode="after")
    def _compiles(self) -> LabelMatcher:
        self.matcher()  # a regex RE2 refuses is a validation error here, not a crash later
        return self

    def matcher(self) -> Matcher:
        return compiled(self.name, self.type, self.value)

    def __str__(self) -> str:
        return str(self.matcher())


class MaintenanceWindow(Record):
    """A maintenance or freeze window; with matchers, a silence (it covers alerts whose labels
    match them all, within its scope)."""

    avro_name = "io.itsmpipeline.windows.MaintenanceWindow"
    window_id: NonEmpty
    kind: WindowKind
    scope: WindowScope
    target: str = ""
    starts_at: UtcDatetime
    ends_at: UtcDatetime
    recurrence: Recurrence | None = None
    change_id: str | None = None
    reason: str = ""
    created_by: str = ""
    updated_at: UtcDatetime
    cancelled: bool = False
    matchers: list[LabelMatcher] = Field(default_factory=list)
    # Alerts matching every one of these are not covered (empty: no exception).
    except_matchers: list[LabelMatcher] = Field(default_factory=list)
    source_zone: str | None = None  # the offset or zone the source gave its times in


class DeployPhase(StrEnum):
    STARTED = "STARTED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"


class DeploymentEvent(Record):
    """One step of a deployment reported by a CI/CD pipeline."""

    avro_name = "io.itsmpipeline.deploy.DeploymentEvent"
    event_id: NonEmpty
    deployment_id: NonEmpty
    phase: DeployPhase
    service: NonEmpty
    environment: NonEmpty
    ci_ids: list[str] = Field(default_factory=list)
    commit_ids: list[str] = Field(default_factory=list)
    build_number: str | None = None
    pipeline: str = ""
    change_id: str | None = None
    # A deployment lasting more than 31 days is a data error (and would overflow date arithmetic).
    duration_ms: int | None = Field(None, ge=0, le=31 * 24 * 3600 * 1000)
    failure_reason: str | None = None
    triggered_by: str = ""
    occurred_at: UtcDatetime
    source_zone: str | None = None


class IncidentAction(StrEnum):
    OPEN = "OPEN"
    UPDATE = "UPDATE"
    RESOLVE = "RESOLVE"


class IncidentCommand(Record):
    """An instruction to open, update or resolve the incident named by correlation_id."""

    avro_name = "io.itsmpipeline.itsm.IncidentCommand"
    command_id: NonEmpty
    correlation_id: CorrelationId
    action: IncidentAction
    short_description: NonEmpty
    description: str = ""
    impact: int | None = Field(None, ge=1, le=3)
    urgency: int | None = Field(None, ge=1, le=3)
    ci_id: str | None = None
    service: str | None = None
    assignment_group: str | None = None
    alert_fingerprints: list[str] = Field(default_factory=list)
    alert_count: int = Field(1, ge=1)
    source: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    resolution_note: str | None = None
    work_note: str | None = None
    issued_at: UtcDatetime
    targets: list[str] = Field(default_factory=list)  # empty: every sink
    target_fields: dict[str, dict[str, str]] = Field(default_factory=dict)
    acknowledged: bool = False  # a person acknowledged it at the source (PagerDuty)

    def routed_to(self, target: str) -> bool:
        """Is this command for the sink named target (routes.toml)?"""
        return not self.targets or target in self.targets


class SuppressedAlert(Record):
    """An alert kept quiet, with the reason and the window."""

    avro_name = "io.itsmpipeline.alerts.SuppressedAlert"
    alert: Alert
    reason: NonEmpty
    window_id: str | None = None
    change_id: str | None = None
    window_ends_at: UtcDatetime | None = None
    suppressed_at: UtcDatetime


class CorrelationDecisionKind(StrEnum):
    MATCHED = "MATCHED"
    GROUPED = "GROUPED"
    UNKNOWN = "UNKNOWN"


class CorrelationSample(Record):
    """A sampled CI correlation decision for review."""

    avro_name = "io.itsmpipeline.alerts.CorrelationSample"
    sample_id: NonEmpty
    fingerprint: NonEmpty
    rule: NonEmpty
    decision: CorrelationDecisionKind
    ci_id: str | None = None
    incident_id: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    decided_at: UtcDatetime


class ChangeAction(StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    CLOSE = "CLOSE"


class ChangeType(StrEnum):
    STANDARD = "STANDARD"
    NORMAL = "NORMAL"
    EMERGENCY = "EMERGENCY"


class CloseCode(StrEnum):
    SUCCESSFUL = "SUCCESSFUL"
    SUCCESSFUL_WITH_ISSUES = "SUCCESSFUL_WITH_ISSUES"
    UNSUCCESSFUL = "UNSUCCESSFUL"


class ChangeCommand(Record):
    """An instruction to create, update or close the change request named by correlation_id."""

    avro_name = "io.itsmpipeline.itsm.ChangeCommand"
    command_id: NonEmpty
    correlation_id: CorrelationId
    action: ChangeAction
    change_type: ChangeType
    short_description: NonEmpty
    description: str = ""
    service: str | None = None
    ci_ids: list[str] = Field(default_factory=list)
    planned_start: UtcDatetime | None = None
    planned_end: UtcDatetime | None = None
    close_code: CloseCode | None = None
    commit_ids: list[str] = Field(default_factory=list)
    build_number: str | None = None
    deploy_duration_ms: int | None = Field(None, ge=0)
    justification: str = ""
    requested_by: str = ""
    issued_at: UtcDatetime
    itsm_ref: str | None = None
    source_zone: str | None = None  # the offset or zone the requester gave its window in


class ChangeStatus(StrEnum):
    """Where a change request is in the ITSM, in the pipeline's words."""

    REQUESTED = "REQUESTED"
    APPROVED = "APPROVED"
    SCHEDULED = "SCHEDULED"
    IMPLEMENT = "IMPLEMENT"
    REVIEW = "REVIEW"
    CLOSED = "CLOSED"
    CANCELLED = "CANCELLED"


class ChangeRecord(Record):
    """A change request as the ITSM has it (state, approval, window), synced onto itsm.changes."""

    avro_name = "io.itsmpipeline.itsm.ChangeRecord"
    change_id: NonEmpty
    itsm_id: NonEmpty
    target: NonEmpty
    correlation_id: str | None = None
    change_type: ChangeType
    status: ChangeStatus
    approval: str = ""
    short_description: str = ""
    service: str | None = None
    ci_ids: list[str] = Field(default_factory=list)
    planned_start: UtcDatetime | None = None
    planned_end: UtcDatetime | None = None
    close_code: CloseCode | None = None
    updated_at: UtcDatetime


class IncidentStatus(StrEnum):
    """Where an incident is in the ITSM, in the pipeline's words."""

    OPEN = "OPEN"  # new, in progress, on hold: someone has to act
    RESOLVED = "RESOLVED"  # service restored; may be reopened
    CLOSED = "CLOSED"  # history: a new occurrence gets a new incident
    CANCELED = "CANCELED"


class IncidentRecord(Record):
    """An incident the pipeline opened, as the ITSM has it now (state, assignment, who resolved
    it and when), synced onto itsm.incidents keyed by target and correlation id."""

    avro_name = "io.itsmpipeline.itsm.IncidentRecord"
    target: NonEmpty
    correlation_id: NonEmpty
    itsm_id: NonEmpty
    number: str = ""
    status: IncidentStatus
    state: str = ""
    priority: str = ""
    assigned_to: str | None = None
    assignment_group: str | None = None
    person_changed: list[str] = Field(default_factory=list)
    resolved_by: str | None = None
    resolved_by_pipeline: bool = False
    close_code: str | None = None
    opened_at: UtcDatetime | None = None
    resolved_at: UtcDatetime | None = None
    closed_at: UtcDatetime | None = None
    updated_at: UtcDatetime
    updated_by: str | None = None
    time_to_restore_seconds: float | None = None

    @property
    def key(self) -> str:
        return incident_key(self.target, self.correlation_id)


def incident_key(target: str, correlation_id: str) -> str:
    """The itsm.incidents key of an incident: one record per ITSM target it lives in."""
    return f"{target}:{correlation_id}"


class GateRequest(Record):
    """A pipeline's request to deploy, waiting on the approval of the change it asked for."""

    avro_name = "io.itsmpipeline.gate.GateRequest"
    request_id: NonEmpty
    service: NonEmpty
    environment: NonEmpty
    caller: NonEmpty
    change_correlation_id: NonEmpty
    commit: str | None = None
    ci_ids: list[str] = Field(default_factory=list)
    short_description: str = ""
    planned_start: UtcDatetime | None = None
    planned_end: UtcDatetime | None = None
    submitted_at: UtcDatetime


class DriftKind(StrEnum):
    MISSING_IN_CMDB = "MISSING_IN_CMDB"
    NOT_MONITORED = "NOT_MONITORED"
    ATTRIBUTE_MISMATCH = "ATTRIBUTE_MISMATCH"


class CMDBDrift(Record):
    """A difference between the CMDB and what monitoring sees (cmdb.drift, keyed by drift_id)."""

    avro_name = "io.itsmpipeline.cmdb.CMDBDrift"
    drift_id: NonEmpty
    kind: DriftKind
    ci_id: str | None = None
    host: str | None = None
    field: str | None = None
    cmdb_value: str | None = None
    observed_value: str | None = None
    observed_by: list[str] = Field(default_factory=list)
    first_detected_at: UtcDatetime
    last_seen_at: UtcDatetime | None = None
    detected_at: UtcDatetime
    detail: str = ""


class RuleFile(BaseModel):
    """One rule file of a rule set."""

    version: int
    sha256: NonEmpty
    text: str


class RuleSet(Record):
    """A complete, validated set of rule files as applied to the running pipeline (the rules topic)."""

    avro_name = "io.itsmpipeline.rules.RuleSet"
    set_id: NonEmpty
    files: dict[str, RuleFile]
    action: NonEmpty
    applied_by: NonEmpty
    applied_at: UtcDatetime
    reason: str = ""
    previous_set_id: str | None = None

    def versions(self) -> dict[str, int]:
        return {name: f.version for name, f in sorted(self.files.items())}


class RecordType(StrEnum):
    INCIDENT = "INCIDENT"
    CHANGE = "CHANGE"


class SinkOutcome(StrEnum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    RESOLVED = "RESOLVED"
    NOOP = "NOOP"
    DEAD_LETTERED = "DEAD_LETTERED"
    # A create was sent and its outcome is not known yet (an intent recorded before the request,
    # superseded by the command's result): a sink that sees it looks before creating again.
    PENDING = "PENDING"


class SinkResult(Record):
    """What a sink did with one command."""

    avro_name = "io.itsmpipeline.itsm.SinkResult"
    command_id: NonEmpty
    correlation_id: NonEmpty
    target: NonEmpty
    record_type: RecordType
    outcome: SinkOutcome
    itsm_id: str | None = None
    itsm_number: str | None = None
    attempts: int = Field(1, ge=0)
    error_class: str | None = None
    message: str = ""
    completed_at: UtcDatetime


class AuditOutcome(StrEnum):
    ALLOWED = "ALLOWED"
    DENIED = "DENIED"
    REJECTED = "REJECTED"
    BYPASSED = "BYPASSED"
    DONE = "DONE"
    OTHER = "OTHER"
    FLAGGED = "FLAGGED"


class AuditEvent(Record):
    """An auditable decision or action."""

    avro_name = "io.itsmpipeline.audit.AuditEvent"
    event_id: NonEmpty
    occurred_at: UtcDatetime
    actor: NonEmpty
    action: NonEmpty
    subject_type: NonEmpty
    subject_id: NonEmpty
    outcome: AuditOutcome
    reason: str = ""
    details: dict[str, str] = Field(default_factory=dict)


RECORD_TYPES: tuple[type[Record], ...] = (
    Alert,
    ConfigurationItem,
    MaintenanceWindow,
    DeploymentEvent,
    IncidentCommand,
    ChangeCommand,
    SinkResult,
    AuditEvent,
    SuppressedAlert,
    CorrelationSample,
    ChangeRecord,
    GateRequest,
    IncidentRecord,
    CMDBDrift,
    RuleSet,
)
