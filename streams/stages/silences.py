"""Silences: maintenance windows with label matchers on maintenance.windows (one calendar for every
reason to keep an alert quiet), made, listed, expired and imported the way amtool does it.

A silence is a MAINTENANCE window of GLOBAL scope whose matchers must all match an alert's labels
(Alertmanager's semantics, streams/core/matchers.py). Like Alertmanager's API (silence validation
in silence/silence.go), a silence needs at least one matcher that does not match the empty string,
so no silence mutes every alert, and it must end after it starts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from streams.core.matchers import Matcher, MatchType, parse_matchers
from streams.core.models import (
    AuditEvent,
    AuditOutcome,
    LabelMatcher,
    MaintenanceWindow,
    Recurrence,
    SuppressedAlert,
    WindowKind,
    WindowScope,
)
from streams.core.timeutil import parse_rfc3339, zone_of_text
from streams.stages.windows import occurrence_end

PREFIX = "silence-"


class SilenceError(ValueError):
    """A silence that cannot be made as asked; the message says why."""


def matchers_of(args: Iterable[str]) -> list[Matcher]:
    """Matchers from command-line words: `alertname=Foo`, `'instance=~"db-.*"'` or `{a="b",c!="d"}`."""
    out: list[Matcher] = []
    for arg in args:
        try:
            out.extend(parse_matchers(arg))
        except ValueError as exc:
            raise SilenceError(str(exc)) from None
    if not out:
        raise SilenceError("give at least one matcher, e.g. alertname=DiskFull 'instance=~\"db-.*\"'")
    if all(m.matches({}) for m in out):
        raise SilenceError(
            "at least one matcher must not match the empty string (this silence would mute every alert)"
        )
    return out


def make(
    matchers: list[Matcher],
    starts_at: datetime,
    ends_at: datetime,
    author: str,
    comment: str,
    now: datetime,
    recurrence: Recurrence | None = None,
    silence_id: str | None = None,
) -> MaintenanceWindow:
    if ends_at <= starts_at:
        raise SilenceError(f"the silence must end after it starts ({starts_at.isoformat()})")
    if not comment.strip():
        raise SilenceError("a comment is required: say why (it is shown with every alert the silence mutes)")
    return MaintenanceWindow(
        window_id=silence_id or f"{PREFIX}{uuid.uuid4()}",
        kind=WindowKind.MAINTENANCE,
        scope=WindowScope.GLOBAL,
        target="",
        starts_at=starts_at,
        ends_at=ends_at,
        recurrence=recurrence,
        reason=comment,
        created_by=author,
        updated_at=now,
        matchers=[LabelMatcher(name=m.name, type=m.type, value=m.value) for m in matchers],
    )


def audit_event(
    window: MaintenanceWindow, action: str, actor: str, now: datetime, via: str, caller: str | None = None
) -> AuditEvent:
    """The audit.events record of a silence made, updated, expired or imported; caller: the
    authenticated principal of an API call (createdBy is what the caller wrote)."""
    return AuditEvent(
        event_id=f"{action}-{window.window_id}-{int(now.timestamp() * 1000)}",
        occurred_at=now,
        actor=actor or "unknown",
        action=action,
        subject_type="silence",
        subject_id=window.window_id,
        outcome=AuditOutcome.DONE,
        reason=window.reason,
        details={
            "matchers": ",".join(str(m) for m in window.matchers),
            "starts_at": window.starts_at.isoformat(),
            "ends_at": window.ends_at.isoformat(),
            "via": via,
            **({"caller": caller} if caller else {}),
        },
    )


def state(window: MaintenanceWindow, now: datetime) -> str:
    """active (muting now), pending (starts later, or between recurring occurrences) or expired."""
    if window.cancelled or window.ends_at <= now:
        return "expired"
    return "active" if occurrence_end(window, now) is not None else "pending"


def silences(windows: Iterable[MaintenanceWindow]) -> list[MaintenanceWindow]:
    """The silences among windows (inhibitions have matchers too, but are no one's silence)."""
    return sorted(
        (w for w in windows if w.matchers and w.kind is WindowKind.MAINTENANCE),
        key=lambda w: (w.ends_at, w.window_id),
    )


def expired(window: MaintenanceWindow, now: datetime) -> MaintenanceWindow:
    """The silence ending now (kept, so `query --expired` still shows who muted what)."""
    return window.model_copy(
        update={"starts_at": min(window.starts_at, now), "ends_at": now, "updated_at": now}
    )


def describe(window: MaintenanceWindow, now: datetime) -> dict[str, Any]:
    return {
        "id": window.window_id,
        "matchers": [str(m) for m in window.matchers],
        "starts_at": window.starts_at,
        "ends_at": window.ends_at,
        "recurrence": window.recurrence.model_dump() if window.recurrence else None,
        "created_by": window.created_by,
        "comment": window.reason,
        "state": state(window, now),
    }


@dataclass(frozen=True)
class Muted:
    """An alert a silence kept quiet (from alerts.suppressed)."""

    silence_id: str
    fingerprint: str
    name: str
    labels: dict[str, str]
    status: str
    suppressed_at: datetime


def muted(records: Iterable[SuppressedAlert], ids: set[str]) -> list[Muted]:
    return [
        Muted(
            r.window_id or "",
            r.alert.fingerprint,
            r.alert.name,
            r.alert.labels,
            r.alert.status.value,
            r.suppressed_at,
        )
        for r in records
        if r.window_id in ids
    ]


# --- import from Alertmanager ------------------------------------------------------------------


def from_alertmanager(raw: Any, now: datetime) -> list[MaintenanceWindow]:
    """Alertmanager silences (the JSON array `amtool silence query -o json` prints, or GET
    /api/v2/silences answers: gettableSilences) as silences here; expired ones are skipped. The
    id is kept (silence-<id>), so importing again updates instead of duplicating."""
    if not isinstance(raw, list):
        raise SilenceError("expected a JSON array of Alertmanager silences (amtool silence query -o json)")
    out: list[MaintenanceWindow] = []
    for i, item in enumerate(raw):
        try:
            if (item.get("status") or {}).get("state") == "expired":
                continue
            window = from_am_silence({"comment": "imported from Alertmanager", **item}, now)
        except SilenceError as exc:
            raise SilenceError(f"silence {i}: {exc}") from None
        except AttributeError:
            raise SilenceError(f"silence {i}: not an object") from None
        if window.ends_at > now:
            out.append(window)
    return out


def from_am_silence(item: Any, now: datetime, default_author: str = "alertmanager") -> MaintenanceWindow:
    """One Alertmanager silence object (postableSilence or gettableSilence: matchers with name,
    value, isRegex and isEqual (default true), startsAt, endsAt, createdBy, comment, optional id)
    as a silence here; SilenceError names what is wrong."""
    if not isinstance(item, dict):
        raise SilenceError("not an object")
    try:
        ends = parse_rfc3339(str(item["endsAt"]), "endsAt")
        starts = parse_rfc3339(str(item["startsAt"]), "startsAt")
        raw_matchers = item["matchers"]
        if not isinstance(raw_matchers, list) or not raw_matchers:
            raise SilenceError("matchers: at least one matcher")
        matchers = []
        for m in raw_matchers:
            if (
                not isinstance(m, dict)
                or not isinstance(m.get("name"), str)
                or not isinstance(m.get("value"), str)
            ):
                raise SilenceError("matchers: each needs a name and a value (strings)")
            regex, equal = bool(m.get("isRegex", False)), bool(m.get("isEqual", True))
            kind = {
                (False, True): MatchType.EQUAL,
                (False, False): MatchType.NOT_EQUAL,
                (True, True): MatchType.REGEX,
                (True, False): MatchType.NOT_REGEX,
            }[(regex, equal)]
            matchers.append(Matcher(m["name"], kind, m["value"]))
    except KeyError as exc:
        raise SilenceError(f"{exc.args[0]} is required") from None
    except ValueError as exc:
        raise SilenceError(str(exc)) from None
    if all(m.matches({}) for m in matchers):
        raise SilenceError("at least one matcher must not match the empty string")
    given = str(item.get("id") or "")
    window = make(
        matchers,
        starts,
        ends,
        str(item.get("createdBy") or default_author),
        str(item.get("comment") or ""),
        now,
        silence_id=(given if given.startswith(PREFIX) else PREFIX + given) if given else None,
    )
    return window.model_copy(update={"source_zone": zone_of_text(item.get("startsAt"))})


def to_am_silence(window: MaintenanceWindow, now: datetime) -> dict[str, Any]:
    """A silence in Alertmanager's gettableSilence shape (its id without our prefix)."""
    return {
        "id": window.window_id.removeprefix(PREFIX),
        "status": {"state": state(window, now)},
        "updatedAt": window.updated_at.isoformat(),
        "matchers": [
            {
                "name": m.name,
                "value": m.value,
                "isRegex": m.type in (MatchType.REGEX, MatchType.NOT_REGEX),
                "isEqual": m.type in (MatchType.EQUAL, MatchType.REGEX),
            }
            for m in window.matchers
        ],
        "startsAt": window.starts_at.isoformat(),
        "endsAt": window.ends_at.isoformat(),
        "createdBy": window.created_by,
        "comment": window.reason,
        "annotations": {},
    }


def recurrence(days: str | None, at: str | None, length: timedelta | None, zone: str) -> Recurrence | None:
    """--every MON,FRI --at 02:00 --for 2h --timezone Europe/Berlin, or None when not recurring."""
    if days is None and at is None and length is None:
        return None
    if not (days and at and length):
        raise SilenceError("a recurring silence needs --every, --at and --for together")
    try:
        return Recurrence.model_validate(
            {
                "weekdays": [d.strip().upper() for d in days.split(",") if d.strip()],
                "start_time": at,
                "duration_minutes": max(1, int(length.total_seconds() // 60)),
                "timezone": zone,
            }
        )
    except ValueError as exc:
        raise SilenceError(f"recurrence: {exc}") from None
