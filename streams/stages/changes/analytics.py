"""Change analytics: success rate, failure causes and mean deploy duration per service and period,
from the linked deployment outcomes recorded in audit.events; and two of DORA's measures from the
pipeline's own incidents: the change failure rate (deployments that an incident named as its
probable cause, incident.cause) and the mean time to restore (incident.restored). Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from streams.core.models import AuditEvent
from streams.stages.alerts.causes import CAUSE_ACTION, RESTORED_ACTION
from streams.stages.changes.linking import OUTCOME_ACTION, UNLINKED_ACTION

PERIODS = ("day", "week", "month")


def period_start(at: datetime, period: str, zone: ZoneInfo) -> str:
    """The period a moment falls in, named by its first day in the zone (2026-11-23 for a week)."""
    local = at.astimezone(zone).date()
    if period == "day":
        return local.isoformat()
    if period == "week":
        return (local - timedelta(days=local.weekday())).isoformat()
    if period == "month":
        return local.replace(day=1).isoformat()
    raise ValueError(f"period must be one of {PERIODS}, not {period!r}")


@dataclass
class ServicePeriod:
    """One service in one period: linked deploy outcomes, and unlinked deploys flagged."""

    service: str
    period: str
    succeeded: int = 0
    failed: int = 0
    unlinked: int = 0
    durations_ms: list[int] = field(default_factory=list)
    causes: Counter[str] = field(default_factory=Counter)
    caused_incidents: int = 0  # deployments followed by an incident that named them
    restore_seconds: list[float] = field(default_factory=list)  # incidents restored, opened here
    _seen: set[str] = field(default_factory=set)

    @property
    def change_failure_rate(self) -> float | None:
        return self.caused_incidents / self.deploys if self.deploys else None

    @property
    def mean_time_to_restore_s(self) -> float | None:
        return sum(self.restore_seconds) / len(self.restore_seconds) if self.restore_seconds else None

    @property
    def deploys(self) -> int:
        return self.succeeded + self.failed

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.deploys if self.deploys else None

    @property
    def mean_duration_s(self) -> float | None:
        return sum(self.durations_ms) / len(self.durations_ms) / 1000 if self.durations_ms else None


def summarize(
    events: Iterable[AuditEvent], period: str = "week", zone: ZoneInfo | None = None
) -> list[ServicePeriod]:
    """Rows per (service, period), sorted; each deployment counts once (its last outcome wins
    when a pipeline reports twice, e.g. failed and then rolled back)."""
    zone = zone or ZoneInfo("UTC")
    rows: dict[tuple[str, str], ServicePeriod] = {}
    last: dict[tuple[str, str, str], AuditEvent] = {}
    caused: set[tuple[str, str]] = set()  # (service, deployment id) an incident named
    restores: dict[tuple[str, str], float] = {}  # (service, incident) -> seconds; a repeat counts once
    restored_at: dict[tuple[str, str], str] = {}
    for ev in events:
        d = ev.details
        if ev.action == CAUSE_ACTION:
            caused.add((d.get("service", "?"), d.get("deployment_id", "")))
            continue
        if ev.action == RESTORED_ACTION:
            key2 = (d.get("service", "?"), ev.subject_id)
            restores[key2] = float(d.get("seconds") or 0)
            opened = datetime.fromisoformat(d["opened_at"]) if d.get("opened_at") else ev.occurred_at
            restored_at[key2] = period_start(opened, period, zone)
            continue
        if ev.action not in (OUTCOME_ACTION, UNLINKED_ACTION):
            continue
        d = ev.details
        service = d.get("service", "?")
        at = datetime.fromisoformat(d["deployed_at"]) if d.get("deployed_at") else ev.occurred_at
        key = (service, period_start(at, period, zone), d.get("deployment_id", ev.event_id))
        if ev.action == OUTCOME_ACTION:
            last[key] = ev
        else:
            row = rows.setdefault(key[:2], ServicePeriod(*key[:2]))
            if key[2] not in row._seen:
                row._seen.add(key[2])
                row.unlinked += 1
    for (service, start, _), ev in last.items():
        row = rows.setdefault((service, start), ServicePeriod(service, start))
        d = ev.details
        if d.get("phase") == "SUCCEEDED":
            row.succeeded += 1
        else:
            row.failed += 1
            cause = (d.get("failure_reason") or "no reason given").strip()
            row.causes[f"{d.get('phase', '').lower()}: {cause}"[:80]] += 1
        if d.get("duration_ms"):
            row.durations_ms.append(int(d["duration_ms"]))
        if (service, d.get("deployment_id", "")) in caused:
            row.caused_incidents += 1
    for (service, _incident), seconds in restores.items():
        start = restored_at[(service, _incident)]
        rows.setdefault((service, start), ServicePeriod(service, start)).restore_seconds.append(seconds)
    return [rows[k] for k in sorted(rows)]


def render(rows: list[ServicePeriod]) -> str:
    """A plain-text table of the rows, with the top failure causes."""
    lines = [
        f"{'SERVICE':<20} {'PERIOD':<11} {'DEPLOYS':>7} {'OK':>4} {'FAILED':>6} {'SUCCESS':>8} "
        f"{'MEAN DUR':>9} {'UNLINKED':>8} {'CFR':>5} {'MTTR':>8}  TOP FAILURE CAUSES"
    ]
    for r in rows:
        rate = f"{r.success_rate:.0%}" if r.success_rate is not None else "-"
        dur = f"{r.mean_duration_s:.1f}s" if r.mean_duration_s is not None else "-"
        causes = "; ".join(f"{c} ({n})" for c, n in r.causes.most_common(3))
        cfr = f"{r.change_failure_rate:.0%}" if r.change_failure_rate is not None else "-"
        mttr = f"{r.mean_time_to_restore_s / 60:.1f}m" if r.mean_time_to_restore_s is not None else "-"
        lines.append(
            f"{r.service:<20} {r.period:<11} {r.deploys:>7} {r.succeeded:>4} {r.failed:>6} {rate:>8} "
            f"{dur:>9} {r.unlinked:>8} {cfr:>5} {mttr:>8}  {causes}"
        )
    return "\n".join(lines)
