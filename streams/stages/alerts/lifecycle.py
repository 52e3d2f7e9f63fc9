"""LifecycleStage: open, update, group, clear, reopen or resolve the incident of an alert; and the timers."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta

from streams.core import telemetry
from streams.core.models import (
    Alert,
    AlertStatus,
    IncidentAction,
    IncidentCommand,
    IncidentRecord,
    IncidentStatus,
)
from streams.core.rules import Display, LifecycleRules
from streams.core.timeutil import localized
from streams.stages.alerts.causes import cause_event, describe, restored_event
from streams.stages.alerts.correlation import index_entry, members_key, parse_entry
from streams.stages.alerts.state import (
    AlertState,
    AlertWork,
    Effects,
    IncidentIndex,
    IncidentPhase,
    ItsmIncidents,
    NoItsmIncidents,
    Outcome,
    is_acknowledgement,
)
from streams.stages.alerts.templates import TemplateFault, compile_all, context, render
from streams.stages.base import Ctx

# Deterministic command ids: the same transition always yields the same id (idempotent downstream).
COMMAND_NAMESPACE = uuid.UUID("5b0e7c1e-3f57-4b0f-9a53-6d1d2f1f0a11")
_NAMESPACE_BYTES = COMMAND_NAMESPACE.bytes


def command_id(identity: str) -> str:
    """str(uuid.uuid5(COMMAND_NAMESPACE, identity)), without making a UUID object (a third of the
    time; one per command): RFC 4122 4.3, the SHA-1 of the namespace and the name with the version
    (5) and variant bits set, as CPython's uuid5 makes it (tests/unit/test_lifecycle_ids.py)."""
    sha1 = hashlib.sha1(_NAMESPACE_BYTES + identity.encode(), usedforsecurity=False)
    digest = bytearray(sha1.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


CORRELATION_PREFIX = "itsmp-"
DONE = frozenset({IncidentStatus.RESOLVED, IncidentStatus.CLOSED, IncidentStatus.CANCELED})
PRIORITY_FIELD = "priority"  # IncidentRecord.person_changed


def correlation_id(fingerprint: str, generation: int = 0) -> str:
    """The ITSM correlation id of an alert's incident (a new generation after a late re-fire)."""
    return CORRELATION_PREFIX + fingerprint + (f"-{generation}" if generation else "")


def fingerprints_of(incident: str) -> list[str]:
    """The fingerprints whose correlation_id may be incident (the inverse of correlation_id; a
    fingerprint may itself end in -<digits>, so both readings are candidates)."""
    if not incident.startswith(CORRELATION_PREFIX):
        return []
    rest = incident[len(CORRELATION_PREFIX) :]
    head, dash, tail = rest.rpartition("-")
    return [rest, head] if dash and head and tail.isdigit() else [rest]


class LifecycleStage:
    """Decides the incident command for an alert that got this far (see README: incident lifecycle)."""

    name = "lifecycle"

    def __init__(
        self,
        rules: LifecycleRules,
        rules_version: str = "",
        itsm: ItsmIncidents | None = None,
        templates: dict[str, dict[str, str]] | None = None,
        late_parent: str = "link",
        incidents: IncidentIndex | None = None,
        display: Mapping[str, Display] | None = None,
    ) -> None:
        self.display = dict(display or {})
        self.rules = rules
        self.incidents = incidents
        self.late_parent = late_parent
        self.templates = compile_all(templates or {})
        self.stable = timedelta(seconds=rules.stable_period)
        self.reopen = timedelta(seconds=rules.reopen_period)
        self.rules_version = rules_version
        self.itsm = itsm or NoItsmIncidents()

    def __call__(self, work: AlertWork, ctx: Ctx) -> AlertWork:
        state, alert, fx = work.state, work.alert, work.effects
        state.status = alert.status.value
        state.last_forwarded = ctx.now
        if alert.status is AlertStatus.RESOLVED:
            self._resolved(work, ctx)
        else:
            self._firing(work, ctx)
        if fx.commands:
            fx.outcome = Outcome.EMITTED
        return work

    # --- firing --------------------------------------------------------------------------------

    def _firing(self, work: AlertWork, ctx: Ctx) -> None:
        state = work.state
        phase = state.phase
        if phase is IncidentPhase.CLEARING:
            state.phase, state.clear_since, state.flaps = IncidentPhase.OPEN, None, state.flaps + 1
            telemetry.FLAPS.labels(work.alert.source.value.lower()).inc()
            note = self._flap_note(state, ctx.now)
            if note is None:
                # Damped: the summary note already told the ITSM this incident flaps.
                telemetry.FLAPS_DAMPED.labels(work.alert.source.value.lower()).inc()
                return
            self._emit(work, ctx, IncidentAction.UPDATE, price=False, note=note)
            return
        if phase is IncidentPhase.OPEN:
            held = self.person_resolution(state)
            if held is not None:
                # A person resolved it in the ITSM while the alert fires: nothing goes to the
                # ITSM until reopen_period has passed (then the declared policy acts, once).
                self._after_person(state, work.effects, ctx.now, held, work)
                return
            note = "Alert notification repeated."
            if is_acknowledgement(work.alert.annotations):
                note = "Acknowledged in PagerDuty: a person is working on it (the alert still fires)."
            escalate = work.escalated
            if escalate and self._person_set(state, PRIORITY_FIELD):
                escalate = False
                note = (
                    f"Severity escalated to {work.alert.severity or work.level}; the priority stays as "
                    "a person set it in the ITSM."
                )
            elif escalate:
                note = f"Severity escalated to {work.alert.severity or work.level}: priority raised."
            self._emit(work, ctx, IncidentAction.UPDATE, note=note, price=escalate)
            return
        if phase is IncidentPhase.GROUPED and state.incident_id is not None:
            self._emit(
                work,
                ctx,
                IncidentAction.UPDATE,
                incident=state.incident_id,
                price=False,
                note=f"Related alert {work.alert.name} on {state.ci_id} repeated.",
            )
            return
        if work.parent_incident is not None:
            state.phase, state.incident_id = IncidentPhase.GROUPED, work.parent_incident
            state.targets = list(work.parent_targets)  # the parent's sinks, wherever it went
            if work.parent_ci is None and work.group:
                # A member of a group_by group: indexed while it fires, so the group's incident
                # resolves only once every member cleared.
                state.group = work.group
                work.effects.index_updates[(members_key(work.group), state.fingerprint)] = state.fingerprint
                note = (
                    f"Related alert {work.alert.name} on {state.ci_id or 'an unknown CI'} joins this "
                    f"incident's group ({work.group.removeprefix('group:')})."
                )
            else:
                note = (
                    f"Related alert {work.alert.name} on {state.ci_id} (depends on {work.parent_ci}, "
                    "which has this incident): grouped here instead of a new incident."
                )
            self._emit(
                work, ctx, IncidentAction.UPDATE, incident=work.parent_incident, price=False, note=note
            )
            return
        if (
            phase is IncidentPhase.RESOLVED
            and state.resolved_at
            and ctx.now - state.resolved_at <= self.reopen
        ):
            state.phase, state.clear_since = IncidentPhase.OPEN, None
            self._emit(work, ctx, IncidentAction.OPEN, note="Reopened: the alert fired again.")
            self._index_open(work)
            self._gather(work, ctx)
            return
        note = None
        seconds, count = work.routed.hold or (self.rules.open_after_seconds, self.rules.open_after_count)
        if seconds > 0 or count > 0:
            waited = self._hold(state, ctx.now, seconds, count)
            if waited is None:
                work.effects.outcome = Outcome.HELD
                telemetry.HOLDS.labels("held").inc()
                return
            where = f"route {work.routed.routes[0]}" if work.routed.hold else "lifecycle.toml"
            note = f"Opened after a hold of {waited:.0f}s ({where} open_after)."
            telemetry.HOLDS.labels("opened").inc()
        if phase is IncidentPhase.RESOLVED:
            state.generation += 1
        state.phase, state.clear_since, state.resolved_at = IncidentPhase.OPEN, None, None
        state.incident_id = correlation_id(state.fingerprint, state.generation)
        self._emit(work, ctx, IncidentAction.OPEN, note=note)
        self._index_open(work)
        self._gather(work, ctx)

    def _gather(self, work: AlertWork, ctx: Ctx) -> None:
        """A parent that opened after incidents of CIs depending on its CI (it fired late): each of
        them gets the cause ("link"), or is resolved as caused by it ("resolve"); the parent's
        incident lists them. Their own alerts go on as before (a later resolve is a no-op)."""
        state, parent = work.state, work.state.incident_id
        if self.late_parent == "none" or work.dependents is None or parent is None:
            return
        gathered = []
        resolve = self.late_parent == "resolve"
        for dep_ci, entry in work.dependents():
            incident, targets = parse_entry(entry)
            if incident == parent:
                continue
            cause = (
                f"Caused by incident {parent} ({work.alert.name} on {state.ci_id}, which {dep_ci} "
                "depends on); it opened after this one."
            )
            action = IncidentAction.RESOLVE if resolve else IncidentAction.UPDATE
            identity = f"{incident}|caused-by|{parent}|{action}"
            work.effects.commands.append(
                IncidentCommand(
                    command_id=command_id(identity),
                    correlation_id=incident,
                    action=action,
                    short_description=f"Caused by {parent}",
                    source=state.source,
                    work_note=None if resolve else cause,
                    resolution_note=f"{cause} Resolved as caused by it." if resolve else None,
                    issued_at=ctx.now,
                    targets=list(targets),
                )
            )
            if resolve:
                work.effects.index_updates[(dep_ci, incident)] = None
            gathered.append(f"{incident} on {dep_ci}")
            telemetry.LATE_PARENTS.labels(self.late_parent).inc()
        if gathered:
            verb = "resolved as caused by this one" if resolve else "linked to this one"
            note = f"Incidents of CIs depending on {state.ci_id}, opened before this one, {verb}: "
            self._emit(work, ctx, IncidentAction.UPDATE, price=False, note=note + ", ".join(gathered) + ".")

    def hold_seconds(self, state: AlertState) -> float:
        """The open_after_seconds of the hold a state is in (a state held before routes could set
        it has none recorded: lifecycle.toml's)."""
        return state.hold_seconds or self.rules.open_after_seconds

    def _hold(self, state: AlertState, now: datetime, seconds: float, count: int) -> float | None:
        """None while a new alert is held (open after `seconds` firing, or `count` notifications
        within open_after_window); once the hold is over, how long it lasted (and the hold is
        forgotten)."""
        stamp = now.timestamp()
        if state.held_since is None:
            state.held_since, state.hold_times = now, []
        state.hold_seconds = seconds  # for the timer (due, and the engine's tick)
        window = self.rules.open_after_window
        state.hold_times = [t for t in state.hold_times if t > stamp - window] + [stamp]
        waited = (now - state.held_since).total_seconds()
        by_time = seconds > 0 and waited >= seconds
        by_count = count > 0 and len(state.hold_times) >= count
        if not (by_time or by_count):
            return None
        state.held_since, state.hold_times, state.hold_seconds = None, [], 0.0
        return waited

    # --- resolved ------------------------------------------------------------------------------

    def _resolved(self, work: AlertWork, ctx: Ctx) -> None:
        state = work.state
        if state.phase is IncidentPhase.OPEN:
            state.phase, state.clear_since = IncidentPhase.CLEARING, ctx.now
            if self.stable.total_seconds() == 0 and not self._members(state):
                self._resolve(work.state, work.effects, ctx.now, "The alert resolved at its source.")
            return
        if state.phase is IncidentPhase.GROUPED:
            # A related alert clearing never resolves the incident it was grouped into; a group
            # member leaves the group (the last one to go lets the group's incident resolve).
            self._leave_group(state, work.effects)
            state.phase, state.incident_id = IncidentPhase.NONE, None
            return
        if state.phase is IncidentPhase.CLEARING:
            return
        if state.held_since is not None:
            # Resolved inside its hold: it ends quietly (no incident was opened), counted.
            state.held_since, state.hold_times = None, []
            work.effects.outcome = Outcome.HELD
            telemetry.HOLDS.labels("ended_quietly").inc()
            return
        # No incident of ours is open: resolves are never suppressed, the sink answers NOOP if none.
        state.suppressed_by = state.suppressed_until = None
        incident = state.incident_id or correlation_id(state.fingerprint, state.generation)
        self._emit(
            work,
            ctx,
            IncidentAction.RESOLVE,
            incident=incident,
            price=False,
            resolution="The alert resolved at its source.",
        )

    # --- the ITSM's side -----------------------------------------------------------------------

    def person_resolution(self, state: AlertState) -> IncidentRecord | None:
        """The ITSM's resolution of this alert's open incident by someone other than the pipeline,
        made after the pipeline last opened it and not acted on yet (None: there is none)."""
        if state.phase is not IncidentPhase.OPEN or state.incident_id is None:
            return None
        for record in self.itsm.records(state.incident_id):
            if record.status not in DONE or record.resolved_by_pipeline:
                continue
            at = _resolved_at(record)
            if state.opened_at is not None and at < state.opened_at:
                continue  # an older resolution, before the pipeline's last (re)open
            if state.person_resolution is not None and at <= state.person_resolution:
                continue  # acted on already
            return record
        return None

    def _person_set(self, state: AlertState, name: str) -> bool:
        """Whether a person changed this field of the alert's incident in any ITSM."""
        incident = state.incident_id
        return incident is not None and any(name in r.person_changed for r in self.itsm.records(incident))

    def _after_person(
        self, state: AlertState, fx: Effects, now: datetime, held: IncidentRecord, work: AlertWork | None
    ) -> None:
        at = _resolved_at(held)
        if now < at + self.reopen:
            telemetry.PERSON_RESOLUTIONS.labels("held").inc()
            return
        who = held.resolved_by or "someone in the ITSM"
        done = held.status.value.lower()
        since = f"{(now - at).total_seconds() / 60:.0f} min"
        old = held.number or state.incident_id or ""
        state.person_resolution = at
        if self.rules.person_resolved == "new":
            state.generation += 1
            state.incident_id = correlation_id(state.fingerprint, state.generation)
            note = f"The alert kept firing {since} after {who} {done} {old}: this is a new incident for it."
            telemetry.PERSON_RESOLUTIONS.labels("new").inc()
        else:
            note = f"Reopened: the alert kept firing {since} after {who} {done} {old}."
            telemetry.PERSON_RESOLUTIONS.labels("reopened").inc()
        incident = state.incident_id or correlation_id(state.fingerprint, state.generation)
        state.opened_at = now
        alert = work.alert if work is not None else None
        # Reopening the incident a person reprioritised keeps their priority.
        keep = self.rules.person_resolved == "reopen" and self._person_set(state, PRIORITY_FIELD)
        fx.commands.append(
            self._command(state, now, IncidentAction.OPEN, incident, alert, work, note, keep_priority=keep)
        )
        fx.outcome = Outcome.EMITTED
        if state.ci_id:
            fx.index_updates[(state.ci_id, incident)] = index_entry(incident, state.targets)

    # --- timers --------------------------------------------------------------------------------

    def due(self, state: AlertState, now: datetime) -> datetime | None:
        """When the tick must look at this state again (None: nothing pending)."""
        if state.phase is IncidentPhase.CLEARING and state.clear_since:
            return state.clear_since + self.stable  # past it, while group members fire: each tick
        if state.phase is IncidentPhase.GROUPED and state.group:
            return state.last_seen + timedelta(seconds=self.rules.signal_timeout)
        if state.phase is IncidentPhase.OPEN:
            silent = state.last_seen + timedelta(seconds=self.rules.signal_timeout)
            held = self.person_resolution(state)
            return silent if held is None else min(silent, _resolved_at(held) + self.reopen)
        if state.suppressed_until is not None and state.status == AlertStatus.FIRING.value:
            return state.suppressed_until
        if (
            state.held_since is not None
            and state.status == AlertStatus.FIRING.value
            and self.hold_seconds(state) > 0
        ):
            return state.held_since + timedelta(seconds=self.hold_seconds(state))
        return None

    def expire(self, state: AlertState, now: datetime) -> Effects | None:
        """Time-driven transitions: auto-resolve after the stable period, resolve after no signal."""
        fx = Effects()
        if (
            state.phase is IncidentPhase.GROUPED
            and state.group
            and now >= state.last_seen + timedelta(seconds=self.rules.signal_timeout)
        ):
            # A group member that fell silent leaves the group (it would keep its incident open).
            self._leave_group(state, fx)
            state.phase, state.incident_id, state.status = (
                IncidentPhase.NONE,
                None,
                AlertStatus.RESOLVED.value,
            )
            return fx
        if (
            state.phase is IncidentPhase.CLEARING
            and state.clear_since
            and now >= state.clear_since + self.stable
        ):
            waiting = self._members(state)
            if waiting:
                return None  # the group's incident resolves once its last member cleared
            if state.group:
                note = "Every alert of the group cleared and stayed clear: auto-resolved."
                self._resolve(state, fx, now, note)
                return fx
            self._resolve(
                state, fx, now, f"The alert stayed clear for {self.rules.stable_period:.0f}s: auto-resolved."
            )
            return fx
        held = self.person_resolution(state)
        if held is not None and now >= _resolved_at(held) + self.reopen:
            self._after_person(state, fx, now, held, None)
            return fx
        timeout = timedelta(seconds=self.rules.signal_timeout)
        if state.phase is IncidentPhase.OPEN and now >= state.last_seen + timeout:
            state.status = AlertStatus.RESOLVED.value
            self._resolve(
                state,
                fx,
                now,
                f"No signal from the source for {self.rules.signal_timeout:.0f}s: resolved by timeout.",
            )
            return fx
        return None

    def _flap_note(self, state: AlertState, now: datetime) -> str | None:
        """The work note of a flap, or None when damping keeps it quiet (flap_threshold flaps
        within flap_period: one summary note, then silence until the period has passed)."""
        plain = (
            f"Flapping: fired again within the stable period ({state.flaps} flap(s) so far); "
            "the incident stays open."
        )
        threshold = self.rules.flap_threshold
        if threshold <= 0:
            return plain
        stamp = now.timestamp()
        state.flap_times = [t for t in state.flap_times if t > stamp - self.rules.flap_period]
        state.flap_times.append(stamp)
        recent = len(state.flap_times)
        if recent < threshold:
            if state.damped:
                plain += f" {state.damped} earlier flap(s) were damped without a note."
                state.damped = 0
            return plain
        if recent == threshold:
            return (
                f"Flapping: {recent} flaps within {self.rules.flap_period:.0f}s ({state.flaps} in all); "
                "further flaps in that period are damped: no note each, a count in the resolution."
            )
        state.damped += 1
        return None

    def _resolve(self, state: AlertState, fx: Effects, now: datetime, note: str) -> None:
        incident = state.incident_id or correlation_id(state.fingerprint, state.generation)
        if state.damped:
            note += f" {state.damped} flap(s) were damped without a note."
            state.damped = 0
        state.phase, state.resolved_at, state.clear_since = IncidentPhase.RESOLVED, now, None
        fx.commands.append(
            self._command(state, now, IncidentAction.RESOLVE, incident, None, None, None, resolution=note)
        )
        restored = restored_event(state, incident, now)
        if restored is not None:
            fx.audits.append(restored)
            state.cause = None
        fx.outcome = Outcome.EMITTED
        if state.ci_id:
            fx.index_updates[(state.ci_id, incident)] = None  # only its own: others may stay open
        if state.group:
            fx.index_updates[(state.group, incident)] = None
            state.group = None

    # --- helpers -------------------------------------------------------------------------------

    def _index_open(self, work: AlertWork) -> None:
        state = work.state
        if state.ci_id and state.incident_id:
            entry = index_entry(state.incident_id, state.targets)
            work.effects.index_updates[(state.ci_id, state.incident_id)] = entry
        state.group = work.group
        if work.group and state.incident_id:
            # The group's incident, joinable for group_window from now.
            entry = index_entry(state.incident_id, state.targets, work.now)
            work.effects.index_updates[(work.group, state.incident_id)] = entry

    def _members(self, state: AlertState) -> list[str]:
        """The members of the group whose incident this alert opened that still fire."""
        if not state.group or self.incidents is None:
            return []
        return [m for m in self.incidents.entries(members_key(state.group)) if m != state.fingerprint]

    def _leave_group(self, state: AlertState, fx: Effects) -> None:
        if state.group:
            fx.index_updates[(members_key(state.group), state.fingerprint)] = None
            state.group = None

    def _emit(
        self,
        work: AlertWork,
        ctx: Ctx,
        action: IncidentAction,
        *,
        note: str | None = None,
        incident: str | None = None,
        price: bool = True,
        resolution: str | None = None,
    ) -> None:
        state = work.state
        if price:
            state.impact, state.urgency = work.impact, work.urgency
        if action is IncidentAction.OPEN:
            state.opened_at = ctx.now
            state.targets = list(work.routed.targets)
            deploy = work.cause
            state.cause = f"{deploy.deployment_id}@{deploy.service}" if deploy else None
            if deploy is not None:
                incident_id = incident or state.incident_id or correlation_id(state.fingerprint)
                work.effects.audits.append(cause_event(state, incident_id, deploy, ctx.now))
                telemetry.INCIDENT_CAUSES.inc()
            for route in work.routed.routes:
                telemetry.labelled(telemetry.ROUTES, route).inc()
        work.effects.commands.append(
            self._command(
                state,
                ctx.now,
                action,
                incident or state.incident_id or correlation_id(state.fingerprint),
                work.alert,
                work,
                note,
                resolution=resolution,
                priced=price,
                keep_priority=action is IncidentAction.OPEN and self._person_set(state, PRIORITY_FIELD),
            )
        )

    def _command(
        self,
        state: AlertState,
        now: datetime,
        action: IncidentAction,
        incident: str,
        alert: Alert | None,
        work: AlertWork | None,
        note: str | None,
        resolution: str | None = None,
        priced: bool = False,
        keep_priority: bool = False,
    ) -> IncidentCommand:
        alert = alert or (Alert.model_validate(state.alert) if state.alert else None)
        identity = f"{incident}|{action}|{state.fingerprint}|{state.count}|{now.isoformat()}"
        grouped = incident != state.incident_id or state.phase is IncidentPhase.GROUPED
        # An UPDATE carries impact and urgency only when it means to change the priority (an
        # escalation): a repeat never re-sends them over what a person set in the ITSM.
        priced = priced and work is not None and not grouped
        return IncidentCommand(
            command_id=command_id(identity),
            correlation_id=incident,
            action=action,
            short_description=_title(alert, state),
            description=_body(alert, state, work, self.rules_version)
            + (
                "\n\n" + describe(work.cause, now)
                if action is IncidentAction.OPEN and not grouped and work is not None and work.cause
                else ""
            ),
            impact=state.impact if priced or (action is IncidentAction.OPEN and not keep_priority) else None,
            urgency=state.urgency
            if priced or (action is IncidentAction.OPEN and not keep_priority)
            else None,
            ci_id=None if grouped else state.ci_id,
            # Who owns the CI is who gets its incident; only when opening, so a later update never
            # overrides an assignment a person made in the ITSM.
            assignment_group=(
                work.ci.owner_group
                if action is IncidentAction.OPEN and not grouped and work is not None and work.ci is not None
                else None
            ),
            service=(alert.labels.get("service") if alert else None),
            alert_fingerprints=[state.fingerprint],
            alert_count=max(state.count, 1),
            source=state.source,
            labels=dict(alert.labels) if alert else {},
            resolution_note=resolution,
            work_note=note,
            issued_at=now,
            targets=list(state.targets),
            acknowledged=(
                action is IncidentAction.UPDATE
                and not grouped
                and alert is not None
                and is_acknowledgement(alert.annotations)
            ),
            # What the route sets on the record, and the targets' templates: only when opening
            # (as the assignment above).
            target_fields=(
                self._open_fields(work, incident, state)
                if action is IncidentAction.OPEN and not grouped and work is not None
                else {}
            ),
        )

    def _open_fields(self, work: AlertWork, incident: str, state: AlertState) -> dict[str, dict[str, str]]:
        """The route's fields, the change that probably caused it (ServiceNow's caused_by, a
        reference the sink binds by number), and the title and body of each target's template."""
        fields = {t: dict(v) for t, v in work.routed.fields.items()}
        if work.cause is not None and work.cause.change_id:
            fields.setdefault("servicenow", {})["caused_by"] = work.cause.change_id
        # A target that shows times in its own zone and locale gets the default body so (a template
        # of its own below replaces it).
        for target, display in self.display.items():
            if state.targets and target not in state.targets:
                continue
            body = _body(work.alert, state, work, self.rules_version, display)
            if work.cause is not None:
                body += "\n\n" + describe(work.cause, work.now, display)
            fields.setdefault(target, {})["description"] = body
        if not self.templates:
            return fields
        extra = {
            "correlation_id": incident,
            "impact": state.impact,
            "urgency": state.urgency,
            "route": list(work.routed.routes),
        }
        try:
            rendered = render(
                self.templates, state.targets, context(work.alert, work.ci, extra), self.display
            )
        except TemplateFault as fault:
            telemetry.TEMPLATE_ERRORS.labels(fault.target).inc()
            if not work.timed:
                raise  # the worker dead-letters the alert with the reason
            return fields  # no record to dead-letter: the default text, and the count says so
        for target, values in rendered.items():
            fields.setdefault(target, {}).update(values)
        return fields


def _resolved_at(record: IncidentRecord) -> datetime:
    return record.resolved_at or record.closed_at or record.updated_at


def _title(alert: Alert | None, state: AlertState) -> str:
    if alert is None:
        return f"Alert {state.fingerprint}"
    title = alert.summary or alert.name
    host = alert.labels.get("instance") or alert.labels.get("host") or ""
    where = f" on {host}" if host and host.split(":")[0] not in title else ""
    return f"[{alert.severity or 'unknown'}] {title}{where}"[:160]


SHOWN_ANNOTATIONS = frozenset({"summary", "description", "message"})


def _body(
    alert: Alert | None,
    state: AlertState,
    work: AlertWork | None,
    rules_version: str,
    display: Display | None = None,
) -> str:
    lines = [alert.description or alert.summary or alert.name if alert else state.fingerprint, ""]
    if alert is not None:
        # When it started, in the target's zone and locale (UTC, RFC 3339 by default), and the
        # offset the source gave it in.
        started = (
            localized(alert.starts_at, display.time_zone, display.locale)
            if display
            else alert.starts_at.isoformat()
        )
        source = f" (source time zone {alert.source_zone})" if alert.source_zone else ""
        lines += [f"Started: {started}{source}", ""]
    if work is not None:
        if work.ci is None:
            lines.append("CI: unknown (no CMDB match)")
        else:
            lines.append(
                f"CI: {work.ci.name} ({work.ci.ci_id}, {work.ci.ci_class}), matched by {work.ci_rule}"
            )
    if alert is not None:
        lines += [f"{k}={v}" for k, v in sorted(alert.labels.items())]
        # What the alert's author wrote for the responder (runbook, dashboards, ...): the summary
        # and description are above already.
        notes = {k: v for k, v in alert.annotations.items() if v and k not in SHOWN_ANNOTATIONS}
        if notes.get("runbook_url"):
            lines += ["", f"Runbook: {notes.pop('runbook_url')}"]
        if notes:
            lines += ["", *(f"{k}: {v}" for k, v in sorted(notes.items()))]
        if alert.generator_url:
            lines += ["", f"Source: {alert.generator_url}"]
    if rules_version:
        lines += ["", f"Rules: {rules_version}"]
    return "\n".join(lines)
