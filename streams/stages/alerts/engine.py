"""AlertEngine: the alert stages in their one declared order, and the timer that ends waits."""

from __future__ import annotations

from datetime import datetime, timedelta

from streams.core.models import Alert, AlertStatus
from streams.core.rules import Rules
from streams.stages.alerts.causes import CauseStage, DeploySource, NoDeploys
from streams.stages.alerts.correlation import CorrelationStage
from streams.stages.alerts.dedup import DedupStage
from streams.stages.alerts.events import EventRuleSet
from streams.stages.alerts.inhibition import Inhibitor
from streams.stages.alerts.lifecycle import LifecycleStage
from streams.stages.alerts.maintenance import MaintenanceStage
from streams.stages.alerts.ordering import OrderStage
from streams.stages.alerts.routing import RoutingStage
from streams.stages.alerts.severity import SeverityStage
from streams.stages.alerts.state import (
    AlertState,
    AlertWork,
    Effects,
    IncidentIndex,
    IncidentPhase,
    ItsmIncidents,
    Outcome,
    StateStore,
    Suppression,
)
from streams.stages.base import Ctx, Dropped, DropReason, Pipeline
from streams.stages.cmdb import CIIndex
from streams.stages.windows import WindowCalendar, WindowSource, occurrence_end

OUTCOME_OF_DROP = {
    DropReason.DEDUPLICATED: Outcome.DEDUPLICATED,
    DropReason.SUPPRESSED: Outcome.SUPPRESSED,
    DropReason.INHIBITED: Outcome.INHIBITED,
    DropReason.STALE: Outcome.STALE,
}


class AlertEngine:
    """event rules, then order -> dedup -> correlate (CI, topology, group_by) -> maintenance
    (inhibition, silences, windows) -> severity -> routing -> cause -> lifecycle, over narrow
    state protocols; a source alert's inhibition windows after."""

    def __init__(
        self,
        rules: Rules,
        store: StateStore,
        cmdb: CIIndex,
        incidents: IncidentIndex,
        windows: WindowSource,
        itsm: ItsmIncidents | None = None,
        deploys: DeploySource | None = None,
    ) -> None:
        self.rules = rules
        self.store = store
        topo = rules.correlation.topology
        self.calendar = WindowCalendar(windows, cmdb, frozenset(topo.relationships), topo.max_depth)
        self.correlation = CorrelationStage(rules.correlation, cmdb, incidents)
        self.maintenance = MaintenanceStage(self.calendar)
        self.severity = SeverityStage(rules.severity)
        self.routing = RoutingStage(rules.routes)
        self.cause = CauseStage(rules.correlation, cmdb, deploys or NoDeploys())
        self.lifecycle = LifecycleStage(
            rules.lifecycle,
            rules.versions(),
            itsm,
            rules.templates.texts(),
            topo.late_parent,
            incidents,
            rules.templates.display,
        )
        self.events = EventRuleSet(rules.events)
        self.inhibitor = Inhibitor(rules.inhibit, rules.lifecycle.signal_timeout)
        self.pipeline = Pipeline(
            "alerts",
            [
                OrderStage(),
                DedupStage(rules.lifecycle.dedup_window),
                self.correlation,
                self.maintenance,
                self.severity,
                self.routing,
                self.cause,
                self.lifecycle,
            ],
        )
        # When a suppressed alert's window ends, it goes through everything after dedup again.
        self.window_end = Pipeline(
            "alerts.window_end",
            [self.correlation, self.maintenance, self.severity, self.routing, self.cause, self.lifecycle],
        )

    def process(self, alert: Alert, now: datetime, partition: int = -1) -> tuple[Effects, AlertState | None]:
        """Run one alert through the event rules and the stages; the effects to publish and the new
        state (None when an event rule dropped the alert: nothing of it is kept).

        The caller stores the state only after the effects are acknowledged: a crash in between
        re-processes the record (at least once), it never loses an incident command.
        """
        verdict = self.events.apply(alert)
        if verdict.alert is None:
            dropped = Effects(outcome=Outcome.SUPPRESSED)
            dropped.suppressed.append(Suppression(alert, None, f"event rule {verdict.dropped_by}"))
            return dropped, None
        alert = verdict.alert
        state = self.store.get(alert.fingerprint) or AlertState(
            fingerprint=alert.fingerprint,
            partition=partition,
            source=alert.source.value,
            first_seen=now,
            last_seen=now,
        )
        if partition >= 0:
            state.partition = partition
        work = AlertWork(alert, state, now)
        result = self.pipeline.run(work, Ctx(now=now))
        if isinstance(result, Dropped):
            work.effects.outcome = OUTCOME_OF_DROP[result.reason]
        if work.effects.outcome is not Outcome.STALE:  # an older notification renews nothing
            self._inhibit(state, alert.labels, work.effects, now)
        return work.effects, state

    def _inhibit(self, state: AlertState, labels: dict[str, str], fx: Effects, now: datetime) -> None:
        """The inhibition windows this alert opens, renews or lets go as a source."""
        if not self.inhibitor.rules and not state.inhibiting:
            return
        fx.windows, fx.windows_gone = self.inhibitor.follow(state, labels, now)

    def due(self, state: AlertState, now: datetime) -> datetime | None:
        """When tick() must look at this fingerprint again, if ever."""
        return self.lifecycle.due(state, now)

    def _still_open(self, window_id: str | None, now: datetime) -> bool:
        """Is the window that keeps an alert quiet still open (not expired, cancelled or gone)?"""
        for window in self.calendar.source.windows():
            if window.window_id == window_id:
                return occurrence_end(window, now) is not None
        return False

    def tick(self, fingerprint: str, now: datetime) -> tuple[Effects | None, AlertState | None]:
        """Time-driven work for one fingerprint that came due: auto-resolve, timeout, window end.

        Returns the effects (None if nothing was due) and the state to store after publishing them.
        """
        state = self.store.get(fingerprint)
        if state is None:
            return None, None
        fx = self.lifecycle.expire(state, now)
        window_over = (
            fx is None
            and state.suppressed_until is not None
            and (now >= state.suppressed_until or not self._still_open(state.suppressed_by, now))
            and state.status == AlertStatus.FIRING.value
            and state.phase is IncidentPhase.NONE
            and state.alert is not None
        )
        hold_over = (
            fx is None
            and state.held_since is not None
            and state.status == AlertStatus.FIRING.value
            and self.lifecycle.hold_seconds(state) > 0
            and now >= state.held_since + timedelta(seconds=self.lifecycle.hold_seconds(state))
            and state.alert is not None
        )
        if (window_over or hold_over) and state.alert is not None:
            # The window ended while the alert still fires: it opens its incident now (or a
            # later window takes over and it stays suppressed).
            state.suppressed_by = state.suppressed_until = None
            work = AlertWork(Alert.model_validate(state.alert), state, now, timed=True)
            self.window_end.run(work, Ctx(now=now))
            fx = work.effects
        if state.inhibiting and state.status != AlertStatus.FIRING.value:
            # A source resolved by the timeout lets its windows go (only a notification renews
            # them: one whose source went quiet lapses at its end).
            fx = fx or Effects()
            self._inhibit(state, dict((state.alert or {}).get("labels") or {}), fx, now)
        return fx, state
