"""What every incident reader gives the sync, and the pure rules the sync applies."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Protocol

from streams.core import telemetry
from streams.core.models import IncidentRecord, IncidentStatus

UNREADABLE = telemetry.Counter(
    "itsm_pipeline_incidents_unreadable_total",
    "Incidents an ITSM holds that the incident sync cannot read (a malformed date, a missing id), "
    "by target: logged with the reason and skipped, so one bad record never stalls the others.",
    ["target"],
)
log = telemetry.get_logger("incidents.sync")

ASSIGNMENT = "assignment"
PRIORITY = "priority"


class IncidentReader(Protocol):
    """Reads the incidents the pipeline opened in one ITSM, changed at or after a time."""

    target: str
    # Whether the pipeline itself ever changes the priority of an existing incident there (only
    # ServiceNow's sink does, on escalation): elsewhere every priority change is a person's.
    pipeline_changes_priority: bool
    actor: str  # the pipeline's own account, as the ITSM names the updater

    def changed_since(self, since: datetime | None) -> Iterator[IncidentRecord]: ...

    def close(self) -> None: ...


def readable(target: str, build: Callable[[Any], IncidentRecord | None], raw: Any) -> IncidentRecord | None:
    """build(raw), or None (logged with the reason, counted) for a record that cannot be read."""
    try:
        return build(raw)
    except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        UNREADABLE.labels(target).inc()
        ident = raw.get("sys_id") or raw.get("id") or raw.get("key") if isinstance(raw, dict) else None
        log.warning(
            "incident_unreadable", target=target, record=str(ident), error=str(exc).splitlines()[0][:300]
        )
        return None


def with_history(reader: IncidentReader, prev: IncidentRecord | None, new: IncidentRecord) -> IncidentRecord:
    """The new snapshot with what only history tells: the fields a person changed (sticky once
    seen) and the time to restore."""
    changed = set(prev.person_changed if prev else ())
    if new.assigned_to:
        changed.add(ASSIGNMENT)  # the pipeline never assigns a person
    by_pipeline = new.updated_by == reader.actor
    if prev is None and new.updated_by is not None and not by_pipeline:
        # First seen after someone else changed it: which fields they changed is unknown, so
        # the priority is taken as theirs (the pipeline then leaves it alone), as is the
        # assignment when there is one.
        changed.add(PRIORITY)
        if new.assignment_group:
            changed.add(ASSIGNMENT)
    if prev is not None:
        if new.assignment_group != prev.assignment_group and (prev.assignment_group or not by_pipeline):
            changed.add(ASSIGNMENT)  # the pipeline sets the group only when it opens the incident
        if new.priority != prev.priority and not (by_pipeline and reader.pipeline_changes_priority):
            changed.add(PRIORITY)
    ttr = None
    if new.status in (IncidentStatus.RESOLVED, IncidentStatus.CLOSED) and new.opened_at:
        end = new.resolved_at or new.closed_at
        if end is not None:
            ttr = max((end - new.opened_at).total_seconds(), 0.0)
    return new.model_copy(update={"person_changed": sorted(changed), "time_to_restore_seconds": ttr})


def same(a: IncidentRecord, b: IncidentRecord) -> bool:
    """Nothing a consumer would act on differs (the sync does not republish an unchanged incident)."""
    return a.model_dump() == b.model_dump()
