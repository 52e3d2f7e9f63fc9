"""Freeze import: a calendar's freeze windows onto maintenance.windows, so every tool (the gate,
the alert worker) sees one schedule. An import replaces what the same source imported before:
windows gone from the calendar are published cancelled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from streams.core.models import MaintenanceWindow


@dataclass(frozen=True)
class Planned:
    action: str  # new | changed | unchanged | cancelled
    window: MaintenanceWindow


def _same(a: MaintenanceWindow, b: MaintenanceWindow) -> bool:
    return a.model_dump(exclude={"updated_at"}) == b.model_dump(exclude={"updated_at"})


def plan(
    new: list[MaintenanceWindow], current: list[MaintenanceWindow], source: str, now: datetime
) -> list[Planned]:
    """What an import of `new` from `source` does to the windows now on the topic."""
    by_id = {w.window_id: w for w in current}
    out: list[Planned] = []
    for w in new:
        old = by_id.get(w.window_id)
        out.append(Planned("new" if old is None else ("unchanged" if _same(old, w) else "changed"), w))
    mine = f"calendar:{source}"
    fresh = {w.window_id for w in new}
    for old in sorted(current, key=lambda w: w.window_id):
        gone = old.window_id not in fresh and old.ends_at > now  # an ended window needs no cancel
        if old.created_by == mine and gone and not old.cancelled:
            out.append(Planned("cancelled", old.model_copy(update={"cancelled": True, "updated_at": now})))
    return out
