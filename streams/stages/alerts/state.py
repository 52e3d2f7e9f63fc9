"""What the alert stages share: per-fingerprint state, the work item, effects, and state protocols."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

import msgspec

from streams.core.models import (
    Alert,
    AuditEvent,
    ConfigurationItem,
    DeploymentEvent,
    IncidentCommand,
    IncidentRecord,
    MaintenanceWindow,
)


class IncidentPhase(StrEnum):
    """Where the alert's incident is in its lifecycle."""

    NONE = "none"  # no incident (never opened, or suppressed)
    OPEN = "open"  # open and the alert is firing
    CLEARING = "clearing"  # the source said resolved; waiting out the stable period
    RESOLVED = "resolved"  # resolved by the pipeline
    GROUPED = "grouped"  # attached as a related alert to another CI's incident


class AlertState(msgspec.Struct, kw_only=True, array_like=True):
    """Everything remembered about one alert fingerprint (the Faust table value).

    Stored as a MessagePack array (encode_state): compact, and decoded in microseconds, which at a
    million open alerts decides memory, changelog size and restart time. Fields are positional
    there, so a new field goes at the end, with a default (values written before it still read).
    """

    fingerprint: str
    partition: int = -1
    source: str = ""
    status: str = "FIRING"  # the source's last word: FIRING | RESOLVED
    phase: IncidentPhase = IncidentPhase.NONE
    incident_id: str | None = None  # correlation id of the incident this alert belongs to
    generation: int = 0  # bumps when a re-fire after reopen_period opens a new incident
    first_seen: datetime
    last_seen: datetime  # last notification received
    last_forwarded: datetime | None = None  # last notification that went to the ITSM
    count: int = 0  # every notification received
    flaps: int = 0
    clear_since: datetime | None = None
    resolved_at: datetime | None = None
    suppressed_by: str | None = None
    suppressed_until: datetime | None = None
    ci_id: str | None = None
    impact: int | None = None
    urgency: int | None = None
    alert: dict[str, Any] | None = None  # the last firing alert, to open its incident later
    # The alert's own times of the last notification applied (OrderStage): older ones are stale.
    event_starts_at: datetime | None = None
    event_status: str | None = None
    event_ended_at: datetime | None = None  # an applied resolve's end (its endsAt, else its time)
    opened_at: datetime | None = None  # when the pipeline last opened or reopened the incident
    person_resolution: datetime | None = None  # the ITSM resolution by a person last acted on
    # Flap damping: when the recent flaps happened (epoch seconds, within flap_period), and how
    # many flaps wrote no note since the summary.
    flap_times: list[float] = msgspec.field(default_factory=list)
    damped: int = 0
    # Hold: since when a new alert has been held, and its notifications meanwhile (epoch seconds).
    held_since: datetime | None = None
    hold_times: list[float] = msgspec.field(default_factory=list)
    # Inhibition: the INHIBITION windows this alert holds open as a source, and until when.
    inhibiting: list[str] = msgspec.field(default_factory=list)
    inhibit_until: datetime | None = None
    # Routing: the sinks its incident goes to (routes.toml, chosen when it opened, or those of
    # the incident it was grouped into); empty: every sink.
    targets: list[str] = msgspec.field(default_factory=list)
    # The probable cause its open incident names: "<deployment id>@<service>" (causes.py).
    cause: str | None = None
    # group_by: the group whose incident it opened, or joined as a member (correlation.toml).
    group: str | None = None
    hold_seconds: float = 0.0  # the open_after_seconds of the hold it is in (its route's or global)


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(AlertState)


def _default(name: str) -> Any:
    """A field's default value (a fresh one for a default factory), for legacy JSON values."""
    info = _FIELDS[name]
    if info.default_factory is not msgspec.NODEFAULT:
        return info.default_factory()
    return None if info.default is msgspec.NODEFAULT else info.default


_FIELDS = {f.name: f for f in msgspec.structs.fields(AlertState)}


def encode_state(state: AlertState) -> bytes:
    """The table's value for a state."""
    return _ENCODER.encode(state)


def decode_state(raw: bytes) -> AlertState:
    """A table value back to its state; a JSON object (written by workers before the MessagePack
    form) is read too. msgspec.ValidationError or DecodeError if it is neither."""
    if raw[:1] == b"{":
        legacy = msgspec.json.decode(raw)
        row = [legacy[name] if name in legacy else _default(name) for name in AlertState.__struct_fields__]
        return msgspec.convert(row, AlertState, strict=False)
    return _DECODER.decode(raw)


def copy_state(state: AlertState) -> AlertState:
    """A deep copy (a stage may change it and then fail)."""
    return _DECODER.decode(_ENCODER.encode(state))


class StateStore(Protocol):
    """Alert state by fingerprint (a Faust table in the worker, a dict in tests)."""

    def get(self, fingerprint: str) -> AlertState | None: ...

    def put(self, state: AlertState) -> None: ...


class IncidentIndex(Protocol):
    """The open incidents of each CI, as alerts.ci.incidents entries (shared by every worker)."""

    def get(self, ci_id: str) -> str | None: ...

    def entries(self, ci_id: str) -> list[str]: ...


class ItsmIncidents(Protocol):
    """The incidents as the ITSMs have them (itsm.incidents), by correlation id."""

    def records(self, correlation_id: str) -> list[IncidentRecord]: ...


class NoItsmIncidents:
    """No incident state from the ITSMs (no `itsmctl incidents sync` runs)."""

    def records(self, correlation_id: str) -> list[IncidentRecord]:
        return []


# PagerDuty's acknowledge (connectors/sources/pagerduty): a person works on it. The alert still
# fires; the incident gets an acknowledgement note instead of a generic repeat.
ACK_ANNOTATION, ACK_VALUE = "pagerduty_event_action", "acknowledge"


def is_acknowledgement(annotations: dict[str, str] | None) -> bool:
    return annotations is not None and annotations.get(ACK_ANNOTATION) == ACK_VALUE


class Outcome(StrEnum):
    """How one input record was accounted for (bounded metric label)."""

    EMITTED = "emitted"  # one or more incident commands went out
    ABSORBED = "absorbed"  # state changed, nothing to send yet (e.g. clearing starts)
    DEDUPLICATED = "deduplicated"
    SUPPRESSED = "suppressed"
    STALE = "stale"  # older than what the state already applied: changed nothing
    HELD = "held"  # a new alert inside its hold (lifecycle.toml open_after_*): no incident yet
    INHIBITED = "inhibited"  # a firing source alert keeps it quiet (ops/rules/inhibit.toml)


@dataclass
class Suppression:
    """An alert kept quiet, for alerts.suppressed."""

    alert: Alert
    window: MaintenanceWindow | None
    reason: str


@dataclass
class CorrelationDecision:
    """One CI correlation decision, for sampling."""

    fingerprint: str
    rule: str
    decision: str  # matched | grouped | unknown
    ci_id: str | None
    incident_id: str | None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Effects:
    """What processing one record (or one tick) produced."""

    outcome: Outcome = Outcome.ABSORBED
    commands: list[IncidentCommand] = field(default_factory=list)
    suppressed: list[Suppression] = field(default_factory=list)
    decisions: list[CorrelationDecision] = field(default_factory=list)
    # (ci_id, correlation id) -> its alerts.ci.incidents entry while open, None once it is not
    index_updates: dict[tuple[str, str], str | None] = field(default_factory=dict)
    # Inhibition windows a source alert opens (or renews) and the ids of those it lets go.
    windows: list[MaintenanceWindow] = field(default_factory=list)
    windows_gone: list[str] = field(default_factory=list)
    audits: list[AuditEvent] = field(default_factory=list)  # for audit.events


@dataclass(frozen=True)
class Routed:
    """Where an incident goes: targets (empty: every sink), per-target fields, the routes matched."""

    targets: tuple[str, ...] = ()
    fields: dict[str, dict[str, str]] = field(default_factory=dict)
    routes: tuple[str, ...] = ()
    # The route's hold (open_after seconds, count); None: lifecycle.toml's.
    hold: tuple[float, int] | None = None

    def for_target(self, target: str) -> bool:
        return not self.targets or target in self.targets


@dataclass
class AlertWork:
    """One alert on its way through the stages, with what each stage learned."""

    alert: Alert
    state: AlertState
    now: datetime
    ci: ConfigurationItem | None = None
    ci_rule: str = "none"
    parent_incident: str | None = None
    parent_targets: tuple[str, ...] = ()  # the sinks of the parent incident (empty: every sink)
    routed: Routed = field(default_factory=Routed)
    # The open incidents of CIs that depend on this alert's CI, as (ci id, index entry), looked up
    # when called: a parent that opens late gathers them (correlation.toml late_parent).
    dependents: Callable[[], list[tuple[str, str]]] | None = None
    timed: bool = False  # made by a timer (a window or hold ended), not by a record
    cause: DeploymentEvent | None = None  # a deployment that finished shortly before (causes.py)
    group: str | None = None  # its group_by group's key, when grouping is on
    parent_ci: str | None = None
    impact: int | None = None
    urgency: int | None = None
    level: str = ""
    escalated: bool = False
    effects: Effects = field(default_factory=Effects)
