"""DedupStage: a repeat of the same notification inside the dedup window is counted, not forwarded."""

from __future__ import annotations

from datetime import timedelta

from streams.core.models import AlertStatus
from streams.stages.alerts.state import AlertWork, is_acknowledgement
from streams.stages.base import Ctx, Dropped, DropReason


class DedupStage:
    """Same fingerprint, same status, inside dedup_window since the last forwarded one: deduplicated.

    Two gateways of an HA pair, or Alertmanager's repeat notifications, therefore give one
    incident; a repeat after the window updates the open incident's count and last-seen.
    """

    name = "dedup"

    def __init__(self, window_seconds: float) -> None:
        self.window = timedelta(seconds=window_seconds)

    def __call__(self, work: AlertWork, ctx: Ctx) -> AlertWork | Dropped:
        state = work.state
        state.count += 1
        previous = state.alert or {}
        # A changed severity is news (it may escalate the incident), never a duplicate; so is a
        # first acknowledgement (a person took it), though not a repeat of one.
        first_ack = is_acknowledgement(work.alert.annotations) and not is_acknowledgement(
            previous.get("annotations")
        )
        same = (
            state.count > 1
            and state.status == work.alert.status.value
            and previous.get("severity", work.alert.severity) == work.alert.severity
            and not first_ack
        )
        state.last_seen = ctx.now
        if work.alert.status is AlertStatus.FIRING:
            state.alert = work.alert.to_avro()
        if same and state.last_forwarded is not None and ctx.now - state.last_forwarded < self.window:
            return Dropped(DropReason.DEDUPLICATED, f"repeat within {self.window.total_seconds():.0f}s")
        return work
