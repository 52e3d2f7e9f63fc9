"""The alert stages with an injected clock: dedup, CI correlation, maintenance, severity, lifecycle."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest
from prometheus_client import REGISTRY

from streams.core.models import IncidentAction, Recurrence, Weekday
from streams.stages.alerts.lifecycle import correlation_id
from streams.stages.alerts.state import IncidentPhase, Outcome, copy_state
from tests.alerting import T0, Harness, am


def actions(fx: object) -> list[tuple[str, str]]:
    return [(c.action.value, c.correlation_id) for c in fx.commands]  # type: ignore[attr-defined]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- dedup -----------------------------------------------------------------------------------


def test_first_firing_opens_the_incident_of_its_fingerprint() -> None:
    h = Harness()
    fx = h.send(am("f1"))
    assert fx.outcome is Outcome.EMITTED and actions(fx) == [("OPEN", "itsmp-f1")]
    assert h.state("f1").phase is IncidentPhase.OPEN


def test_a_repeat_inside_the_dedup_window_is_deduplicated_and_counted() -> None:
    h = Harness(dedup_window=300)
    h.send(am("f1"))
    h.advance(60)
    fx = h.send(am("f1"))
    assert fx.outcome is Outcome.DEDUPLICATED and fx.commands == []
    assert h.state("f1").count == 2 and h.state("f1").last_seen == h.now


def test_an_ha_pair_sending_the_same_alert_gives_one_incident() -> None:
    h = Harness()
    a = am("f1")
    b = a.model_copy(update={"source_instance": "http://alertmanager-2:9093"})
    assert [h.send(a).outcome, h.send(b).outcome] == [Outcome.EMITTED, Outcome.DEDUPLICATED]


def test_a_repeat_after_the_window_updates_count_and_last_seen_on_the_open_incident() -> None:
    h = Harness(dedup_window=300)
    h.send(am("f1"))
    h.advance(30)
    h.send(am("f1"))
    h.advance(301)
    fx = h.send(am("f1"))
    (cmd,) = fx.commands
    assert cmd.action is IncidentAction.UPDATE and cmd.correlation_id == "itsmp-f1"
    assert cmd.alert_count == 3 and cmd.work_note == "Alert notification repeated."


# --- CI correlation --------------------------------------------------------------------------


def test_a_ci_id_label_wins_and_the_command_names_the_ci() -> None:
    h = Harness()
    h.ci("ci-web-1", hostname="web-1.example.com")
    h.ci("ci-other", hostname="web-9.example.com")
    (cmd,) = h.send(am("f1", ci_id="ci-web-1", instance="web-9:9100")).commands
    assert cmd.ci_id == "ci-web-1" and "matched by ci_id_label" in cmd.description


@pytest.mark.parametrize(
    ("labels", "ci", "rule"),
    [
        ({"instance": "WEB-1:9100"}, "ci-web-1", "hostname"),
        ({"host": "web-1.example.com"}, "ci-web-1", "hostname"),
        ({"instance": "10.0.0.5:9100"}, "ci-web-1", "ip_address"),
        ({"service": "checkout"}, "svc-checkout", "service"),
    ],
)
def test_hostname_ip_and_service_rules_find_the_ci(labels: dict[str, str], ci: str, rule: str) -> None:
    h = Harness()
    h.ci("ci-web-1", hostname="web-1.example.com", ip_addresses=["10.0.0.5"])
    h.ci("svc-checkout", ci_class="cmdb_ci_service", service="checkout")
    (cmd,) = h.send(am("f1", **labels)).commands
    assert cmd.ci_id == ci and f"matched by {rule}" in cmd.description


def test_an_alert_with_an_unknown_ci_still_opens_an_incident_marked_and_counted() -> None:
    h = Harness()
    before = metric("itsm_pipeline_alerts_unknown_ci_total", source="alertmanager")
    (cmd,) = h.send(am("f1", instance="nowhere:9100")).commands
    assert cmd.action is IncidentAction.OPEN and cmd.ci_id is None
    assert "CI: unknown (no CMDB match)" in cmd.description
    assert metric("itsm_pipeline_alerts_unknown_ci_total", source="alertmanager") == before + 1


def test_alerts_on_dependents_join_the_open_incident_of_the_ci_they_depend_on() -> None:
    h = Harness()
    h.ci("db-1")
    h.ci("app-1", depends_on=["db-1"])
    h.ci("web-1", depends_on=["app-1"])
    parent = h.send(am("p", alertname="DBDown", ci_id="db-1"))
    assert actions(parent) == [("OPEN", "itsmp-p")] and h.incidents.entries("db-1") == ["itsmp-p"]
    child = h.send(am("c1", alertname="AppErrors", ci_id="app-1"))
    grandchild = h.send(am("c2", alertname="WebSlow", ci_id="web-1"))
    assert actions(child) == [("UPDATE", "itsmp-p")] and actions(grandchild) == [("UPDATE", "itsmp-p")]
    assert "grouped here instead of a new incident" in (child.commands[0].work_note or "")
    assert child.decisions[0].decision == "grouped" and child.decisions[0].incident_id == "itsmp-p"
    assert h.state("c1").phase is IncidentPhase.GROUPED
    # The related alert clearing never resolves the parent's incident.
    resolved = h.send(am("c1", "RESOLVED", alertname="AppErrors", ci_id="app-1"))
    assert resolved.commands == [] and h.incidents.entries("db-1") == ["itsmp-p"]


def test_two_incidents_on_one_ci_are_tracked_apart_and_dependents_keep_joining_the_open_one() -> None:
    h = Harness(stable_period=0)
    h.ci("db-1")
    h.ci("app-1", depends_on=["db-1"])
    assert actions(h.send(am("a", alertname="DiskFull", ci_id="db-1"))) == [("OPEN", "itsmp-a")]
    assert actions(h.send(am("b", alertname="HighLoad", ci_id="db-1"))) == [("OPEN", "itsmp-b")]
    assert h.incidents.entries("db-1") == ["itsmp-a", "itsmp-b"]  # both open, oldest first
    # The first resolves: only its own entry goes; the second keeps the CI's incident open.
    h.send(am("a", "RESOLVED", alertname="DiskFull", ci_id="db-1"))
    assert h.incidents.entries("db-1") == ["itsmp-b"]
    assert actions(h.send(am("c", ci_id="app-1"))) == [("UPDATE", "itsmp-b")]  # still grouped
    h.send(am("b", "RESOLVED", alertname="HighLoad", ci_id="db-1"))
    assert h.incidents.entries("db-1") == []


def test_the_ci_incident_index_reads_its_keys_and_those_workers_wrote_before() -> None:
    from streams.processors.indexes import CIIncidentIndex, index_key

    index = CIIncidentIndex()
    index.apply(b"db-1", b"itsmp-old")  # a worker before: one key per CI
    index.apply(index_key("db-1", "itsmp-new"), b"itsmp-new@rt")
    assert index.entries("db-1") == ["itsmp-old", "itsmp-new@rt"] and index.get("db-1") == "itsmp-old"
    index.apply(b"db-1", None)  # its tombstone removes only the old entry
    assert index.entries("db-1") == ["itsmp-new@rt"]
    index.apply(index_key("db-1", "itsmp-new"), None)
    assert index.get("db-1") is None


def late_parent_harness(policy: str) -> Harness:
    base = Harness().rules
    topo = base.correlation.topology.model_copy(update={"late_parent": policy})
    rules = base.model_copy(update={"correlation": base.correlation.model_copy(update={"topology": topo})})
    h = Harness(rules)
    h.ci("db-1")
    h.ci("app-1", depends_on=["db-1"])
    h.ci("web-1", depends_on=["app-1"])  # two hops below db-1
    h.ci("other-1")
    return h


@pytest.mark.parametrize("policy", ["link", "resolve", "none"])
def test_a_parent_that_opens_after_its_dependents_gathers_their_incidents_by_the_declared_policy(
    policy: str,
) -> None:
    h = late_parent_harness(policy)
    # The dependents fire first (the database's own alert is late): each opens its own incident.
    h.ci("api-1", depends_on=["db-1"])
    assert actions(h.send(am("api", ci_id="api-1"))) == [("OPEN", "itsmp-api")]
    assert actions(h.send(am("web", ci_id="web-1"))) == [("OPEN", "itsmp-web")]  # two hops below db-1
    assert actions(h.send(am("other", ci_id="other-1"))) == [("OPEN", "itsmp-other")]  # unrelated
    fx = h.send(am("db", alertname="DBDown", ci_id="db-1"))
    if policy == "none":
        assert actions(fx) == [("OPEN", "itsmp-db")]
        return
    action = "RESOLVE" if policy == "resolve" else "UPDATE"
    assert actions(fx) == [
        ("OPEN", "itsmp-db"),
        (action, "itsmp-api"),
        (action, "itsmp-web"),
        ("UPDATE", "itsmp-db"),  # the parent lists what it gathered
    ]
    api = fx.commands[1]
    text = (api.resolution_note if policy == "resolve" else api.work_note) or ""
    assert "Caused by incident itsmp-db (DBDown on db-1, which api-1 depends on)" in text
    assert "itsmp-api on api-1, itsmp-web on web-1" in (fx.commands[3].work_note or "")
    # Resolved ones leave the index; linked ones stay open there.
    expected = [] if policy == "resolve" else ["itsmp-api"]
    assert h.incidents.entries("api-1") == expected and h.incidents.entries("db-1") == ["itsmp-db"]
    assert h.incidents.entries("other-1") == ["itsmp-other"]
    # A repeat of the parent gathers nothing again.
    h.advance(400)
    assert [a for a, _ in actions(h.send(am("db", alertname="DBDown", ci_id="db-1")))] == ["UPDATE"]


def test_once_the_parent_incident_resolves_dependents_open_their_own() -> None:
    h = Harness(stable_period=0)
    h.ci("db-1")
    h.ci("app-1", depends_on=["db-1"])
    h.send(am("p", ci_id="db-1"))
    h.send(am("p", "RESOLVED", ci_id="db-1"))
    assert h.incidents.entries("db-1") == []
    assert actions(h.send(am("c", ci_id="app-1"))) == [("OPEN", "itsmp-c")]


# --- maintenance -----------------------------------------------------------------------------


def test_a_firing_alert_in_a_ci_window_is_suppressed_with_the_window() -> None:
    h = Harness()
    h.ci("db-1")
    h.window("mw-1", "CI", "db-1", change_id="CHG0030001")
    fx = h.send(am("f1", ci_id="db-1"))
    assert fx.outcome is Outcome.SUPPRESSED and fx.commands == []
    (sup,) = fx.suppressed
    assert sup.window is not None and sup.window.window_id == "mw-1" and sup.window.change_id == "CHG0030001"


def test_a_window_on_a_ci_and_its_dependents_covers_the_dependents() -> None:
    h = Harness()
    h.ci("db-1")
    h.ci("app-1", depends_on=["db-1"])
    h.ci("lonely")
    h.window("mw-1", "CI_AND_DEPENDENTS", "db-1")
    assert h.send(am("a", ci_id="app-1")).outcome is Outcome.SUPPRESSED
    assert h.send(am("b", ci_id="lonely")).outcome is Outcome.EMITTED
    h.window("mw-2", "CI", "db-1")  # plain CI scope does not reach dependents
    del h.windows.items["mw-1"]
    assert h.send(am("c", ci_id="app-1")).outcome is Outcome.EMITTED


def test_service_scope_and_cancelled_windows() -> None:
    h = Harness()
    h.window("mw-s", "SERVICE", "checkout")
    assert h.send(am("a", service="checkout")).outcome is Outcome.SUPPRESSED
    h.window("mw-s", "SERVICE", "payments", cancelled=True)
    assert h.send(am("b", service="payments")).outcome is Outcome.EMITTED


@pytest.mark.parametrize(("utc_hour", "suppressed"), [(0, False), (1, True), (2, True), (3, False)])
def test_a_recurring_window_opens_on_its_weekdays_at_local_time(utc_hour: int, suppressed: bool) -> None:
    h = Harness()
    # Saturdays 02:00-04:00 Europe/Berlin = 01:00-03:00 UTC in winter.
    h.window(
        "mw-r",
        "GLOBAL",
        "",
        start=-86400,
        end=30 * 86400,
        recurrence=Recurrence(
            weekdays=[Weekday.SAT], start_time="02:00", duration_minutes=120, timezone="Europe/Berlin"
        ),
    )
    h.now = h.now.replace(day=28, hour=utc_hour, minute=30)  # Saturday 2026-11-28
    assert (h.send(am("f1")).outcome is Outcome.SUPPRESSED) is suppressed


def test_resolves_are_never_suppressed() -> None:
    h = Harness(stable_period=0)
    h.ci("db-1")
    h.send(am("f1", ci_id="db-1"))  # opened before the window
    h.window("mw-1", "CI", "db-1")
    fx = h.send(am("f1", "RESOLVED", ci_id="db-1"))
    assert actions(fx) == [("RESOLVE", "itsmp-f1")]


def test_an_alert_still_firing_when_its_window_ends_opens_its_incident_then() -> None:
    h = Harness()
    h.ci("db-1")
    h.window("mw-1", "CI", "db-1", start=-10, end=120)
    h.send(am("f1", ci_id="db-1"))
    due = h.engine.due(h.state("f1"), h.now)
    assert due == h.now + (h.windows.items["mw-1"].ends_at - h.now)
    h.advance(60)
    assert h.tick("f1") is None  # still inside
    h.advance(61)
    fx = h.tick("f1")
    assert fx is not None and actions(fx) == [("OPEN", "itsmp-f1")]


def test_a_suppressed_alert_that_resolves_inside_the_window_ends_quietly() -> None:
    h = Harness()
    h.window("mw-1", "GLOBAL", "", start=-10, end=120)
    h.send(am("f1"))
    fx = h.send(am("f1", "RESOLVED"))
    assert actions(fx) == [("RESOLVE", "itsmp-f1")]  # the sink answers NOOP: there is no incident
    h.advance(200)
    assert h.tick("f1") is None


# --- silences (windows with label matchers) ---------------------------------------------------


def silence(h: Harness, sid: str, text: str, **kw: object) -> None:
    from streams.core.matchers import parse_matchers

    matchers = [{"name": m.name, "type": m.type, "value": m.value} for m in parse_matchers(text)]
    h.window(sid, "GLOBAL", "", matchers=matchers, **kw)


@pytest.mark.parametrize(
    ("matchers", "labels", "silenced"),
    [
        ('alertname="HighCPU"', {}, True),
        ('alertname="HighCPU",instance=~"db-.*"', {"instance": "db-1:9100"}, True),
        ('alertname="HighCPU",instance=~"db-.*"', {"instance": "web-1:9100"}, False),
        ('alertname="HighCPU",instance=~"db"', {"instance": "db-1:9100"}, False),  # anchored
        ('env!="prod"', {"env": "prod"}, False),
        ('env!="prod"', {"env": "dev"}, True),
        ('env!="prod"', {}, True),  # no env label: "" != "prod"
        ('team=~".+"', {}, False),  # an absent label matches only what "" matches
        ('severity!~"crit.*"', {"severity": "warning"}, True),
    ],
)
def test_a_silence_mutes_exactly_the_alerts_its_matchers_match(
    matchers: str, labels: dict[str, str], silenced: bool
) -> None:
    h = Harness()
    silence(h, "silence-1", matchers, reason="disk swap", created_by="alice")
    fx = h.send(am("f1", **labels))
    assert (fx.outcome is Outcome.SUPPRESSED) is silenced
    if silenced:
        (sup,) = fx.suppressed
        assert sup.reason == "silence silence-1" and sup.window is not None
        assert sup.window.created_by == "alice"
    else:
        assert actions(fx) == [("OPEN", "itsmp-f1")]


def test_a_silence_lets_resolves_pass_and_opens_what_still_fires_when_it_ends() -> None:
    h = Harness()
    silence(h, "silence-2", 'alertname="HighCPU"', start=-10, end=120)
    assert h.send(am("a")).outcome is Outcome.SUPPRESSED
    assert h.send(am("b")).outcome is Outcome.SUPPRESSED
    fx = h.send(am("b", "RESOLVED"))
    assert actions(fx) == [("RESOLVE", "itsmp-b")]  # resolves pass (a NOOP at the sink)
    h.advance(121)
    fx = h.tick("a")
    assert fx is not None and actions(fx) == [("OPEN", "itsmp-a")]  # still firing: opens now
    h.advance(10)
    assert h.tick("b") is None  # resolved inside the silence: ends quietly


def test_a_silence_expired_early_lets_its_alert_open_at_the_next_tick() -> None:
    from streams.stages.silences import expired

    h = Harness()
    silence(h, "silence-4", 'alertname="HighCPU"', start=-10, end=3600)
    assert h.send(am("a")).outcome is Outcome.SUPPRESSED
    h.advance(30)
    assert h.tick("a") is None  # the silence still holds
    h.windows.items["silence-4"] = expired(h.windows.items["silence-4"], h.now)  # itsmctl silence expire
    h.advance(1)
    fx = h.tick("a")
    assert fx is not None and actions(fx) == [("OPEN", "itsmp-a")]


def test_a_silence_never_covers_a_question_without_labels() -> None:
    from streams.core.models import WindowKind

    h = Harness()
    silence(h, "silence-3", 'alertname=~".*"')
    # The change gate asks about a CI or service, not an alert: silences are not freezes.
    assert h.engine.calendar.covering(WindowKind.MAINTENANCE, None, "checkout", None, h.now) is None
    assert (
        h.engine.calendar.covering(WindowKind.MAINTENANCE, None, None, None, h.now, {"alertname": "X"})
        is not None
    )


# --- severity --------------------------------------------------------------------------------


def test_severity_and_ci_criticality_give_impact_urgency_and_the_servicenow_priority() -> None:
    h = Harness()
    h.ci("db-1", criticality="CRITICAL")
    (cmd,) = h.send(am("f1", severity="critical", ci_id="db-1")).commands
    assert (cmd.impact, cmd.urgency) == (1, 1)
    (cmd2,) = h.send(am("f2", severity="info")).commands
    assert (cmd2.impact, cmd2.urgency) == (3, 3)


def test_a_service_tier_raises_impact() -> None:
    h = Harness()
    h.ci("svc", criticality="LOW", attributes={"tier": "0"})
    (cmd,) = h.send(am("f1", severity="warning", ci_id="svc")).commands
    assert (cmd.impact, cmd.urgency) == (1, 2)


def test_an_unmapped_severity_takes_the_default_and_is_counted() -> None:
    h = Harness()
    before = metric("itsm_pipeline_unmapped_values_total", rule="severity", source="alertmanager")
    (cmd,) = h.send(am("f1", severity="apocalyptic")).commands
    assert cmd.urgency == h.rules.severity.urgency[h.rules.severity.default_level]
    assert metric("itsm_pipeline_unmapped_values_total", rule="severity", source="alertmanager") == before + 1


def test_escalating_severity_on_an_open_incident_raises_its_priority_at_once() -> None:
    h = Harness(dedup_window=300)
    h.send(am("f1", severity="warning"))
    h.advance(10)  # inside the dedup window: a new severity is never a duplicate
    fx = h.send(am("f1", severity="critical"))
    (cmd,) = fx.commands
    assert cmd.action is IncidentAction.UPDATE and (cmd.impact, cmd.urgency) == (3, 1)
    assert "escalated" in (cmd.work_note or "")


# --- lifecycle -------------------------------------------------------------------------------


def test_auto_resolve_after_the_alert_stayed_clear_for_the_stable_period() -> None:
    h = Harness(stable_period=300)
    h.send(am("f1"))
    h.advance(10)
    fx = h.send(am("f1", "RESOLVED"))
    assert fx.outcome is Outcome.ABSORBED and fx.commands == []
    assert h.state("f1").phase is IncidentPhase.CLEARING
    h.advance(299)
    assert h.tick("f1") is None
    h.advance(1)
    fx2 = h.tick("f1")
    assert fx2 is not None and actions(fx2) == [("RESOLVE", "itsmp-f1")]
    assert "stayed clear for 300s" in (fx2.commands[0].resolution_note or "")


def test_a_refire_inside_the_stable_period_keeps_the_incident_open_and_counts_a_flap() -> None:
    h = Harness(stable_period=300, dedup_window=0)
    before = metric("itsm_pipeline_flaps_total", source="alertmanager")
    h.send(am("f1"))
    h.send(am("f1", "RESOLVED"))
    h.advance(100)
    fx = h.send(am("f1", starts_at=h.now))
    assert actions(fx) == [("UPDATE", "itsmp-f1")] and "Flapping" in (fx.commands[0].work_note or "")
    assert h.state("f1").phase is IncidentPhase.OPEN and h.state("f1").flaps == 1
    assert metric("itsm_pipeline_flaps_total", source="alertmanager") == before + 1
    h.advance(400)
    assert h.tick("f1") is None  # no longer clearing: nothing to auto-resolve


# --- PagerDuty acknowledge --------------------------------------------------------------------


def test_a_pagerduty_acknowledge_is_an_acknowledgement_note_once_not_a_repeat() -> None:
    from datetime import UTC, datetime

    from connectors.sources.pagerduty.mapping import to_alerts

    h = Harness()  # the default dedup window (300 s): the acknowledge comes inside it
    event = {
        "routing_key": "R" * 32,
        "event_action": "trigger",
        "dedup_key": "pd-1",
        "payload": {"summary": "checkout down", "source": "web-1", "severity": "critical"},
    }
    at = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    (trigger,) = to_alerts(event, at)
    (ack,) = to_alerts({**event, "event_action": "acknowledge"}, at)
    assert actions(h.send(trigger)) == [("OPEN", "itsmp-pd-1")]
    h.advance(30)
    fx = h.send(ack)
    assert actions(fx) == [("UPDATE", "itsmp-pd-1")]
    assert "Acknowledged in PagerDuty" in (fx.commands[0].work_note or "")
    assert fx.commands[0].acknowledged  # the sink moves a New incident to its working state
    h.advance(30)
    assert h.send(ack).outcome is Outcome.DEDUPLICATED  # the same acknowledge again: a repeat
    h.advance(30)
    assert h.send(trigger).outcome is Outcome.DEDUPLICATED  # a repeat trigger, as before


# --- hold (open_after) --------------------------------------------------------------------------


def test_a_held_alert_opens_once_it_fired_for_the_hold_and_its_tick_comes() -> None:
    h = Harness(dedup_window=0, open_after_seconds=120)
    fx = h.send(am("f1"))
    assert fx.outcome is Outcome.HELD and fx.commands == []
    assert h.engine.due(h.state("f1"), h.now) == h.now + timedelta(seconds=120)
    h.advance(60)
    assert h.send(am("f1")).outcome is Outcome.HELD  # still inside the hold
    assert h.tick("f1") is None
    h.advance(61)
    fx = h.tick("f1")
    assert fx is not None and actions(fx) == [("OPEN", "itsmp-f1")]
    assert "hold of 121s" in (fx.commands[0].work_note or "")
    assert h.state("f1").held_since is None and h.state("f1").phase is IncidentPhase.OPEN


def test_an_alert_that_resolves_inside_its_hold_ends_quietly_and_is_counted() -> None:
    h = Harness(dedup_window=0, open_after_seconds=300)
    before = metric("itsm_pipeline_holds_total", outcome="ended_quietly")
    h.send(am("f1"))
    h.advance(30)
    fx = h.send(am("f1", "RESOLVED"))
    assert fx.outcome is Outcome.HELD and fx.commands == []  # no RESOLVE: nothing was opened
    assert metric("itsm_pipeline_holds_total", outcome="ended_quietly") == before + 1
    h.advance(600)
    assert h.tick("f1") is None  # nothing left to open


@pytest.mark.parametrize(("gaps", "opens_at"), [([10, 10], 3), ([10, 700, 10, 10], 5)])
def test_n_occurrences_within_the_window_open_it(gaps: list[int], opens_at: int) -> None:
    h = Harness(dedup_window=0, open_after_count=3, open_after_window=600)
    outcomes = [h.send(am("f1")).outcome]
    for gap in gaps:
        h.advance(gap)
        outcomes.append(h.send(am("f1")).outcome)
    assert outcomes.index(Outcome.EMITTED) == opens_at - 1  # the Nth notification inside the window
    assert all(o is Outcome.HELD for o in outcomes[: opens_at - 1])


def test_without_a_hold_the_first_firing_opens_at_once() -> None:
    h = Harness()
    assert actions(h.send(am("f1"))) == [("OPEN", "itsmp-f1")]


def flap(h: Harness, fp: str = "f1") -> object:
    """One flap: the alert resolves, then fires again 10 s later (inside the stable period)."""
    h.send(am(fp, "RESOLVED", starts_at=h.now))
    h.advance(10)
    fx = h.send(am(fp, starts_at=h.now))
    h.advance(10)
    return fx


def test_flap_damping_writes_one_summary_then_counts_and_sums_up_at_resolution() -> None:
    h = Harness(stable_period=300, dedup_window=0, flap_threshold=3, flap_period=3600)
    before = metric("itsm_pipeline_flaps_damped_total", source="alertmanager")
    h.send(am("f1"))
    notes = []
    for _ in range(6):
        fx = flap(h)
        notes.append(fx.commands[0].work_note if fx.commands else None)  # type: ignore[attr-defined]
    assert notes[0] and notes[1] and "Flapping: fired again" in notes[0]
    assert notes[2] is not None and "3 flaps within 3600s" in notes[2] and "damped" in notes[2]
    assert notes[3:] == [None, None, None]  # damped: no note, no command
    assert metric("itsm_pipeline_flaps_damped_total", source="alertmanager") == before + 3
    assert h.state("f1").flaps == 6 and h.state("f1").damped == 3
    # The resolution sums the damped flaps up.
    h.send(am("f1", "RESOLVED", starts_at=h.now))
    h.advance(301)
    fx = h.tick("f1")
    assert fx is not None and actions(fx) == [("RESOLVE", "itsmp-f1")]
    assert "3 flap(s) were damped without a note" in (fx.commands[0].resolution_note or "")


def test_after_the_flap_period_notes_come_back_and_name_what_was_damped() -> None:
    h = Harness(stable_period=300, dedup_window=0, flap_threshold=2, flap_period=600)
    h.send(am("f1"))
    flap(h)
    flap(h)  # the summary
    assert flap(h).commands == []  # type: ignore[attr-defined]
    h.advance(700)  # the period has passed
    fx = flap(h)
    (cmd,) = fx.commands  # type: ignore[attr-defined]
    assert "Flapping: fired again" in (cmd.work_note or "") and "1 earlier flap(s) were damped" in (
        cmd.work_note or ""
    )


def test_without_damping_every_flap_writes_its_note() -> None:
    h = Harness(stable_period=300, dedup_window=0)
    h.send(am("f1"))
    assert all(flap(h).commands for _ in range(5))  # type: ignore[attr-defined]


def test_a_refire_within_the_reopen_period_reopens_and_later_opens_a_new_incident() -> None:
    h = Harness(stable_period=0, reopen_period=3600, dedup_window=0)
    h.send(am("f1"))
    h.send(am("f1", "RESOLVED"))
    h.advance(1800)
    assert actions(h.send(am("f1", starts_at=h.now))) == [("OPEN", "itsmp-f1")]
    h.send(am("f1", "RESOLVED", starts_at=h.now))
    h.advance(3601)
    assert (
        actions(h.send(am("f1", starts_at=h.now)))
        == [("OPEN", correlation_id("f1", 1))]
        == [("OPEN", "itsmp-f1-1")]
    )


def test_an_alert_without_any_signal_for_the_timeout_is_resolved() -> None:
    h = Harness(signal_timeout=3600)
    h.send(am("f1"))
    h.advance(3599)
    assert h.tick("f1") is None
    h.advance(1)
    fx = h.tick("f1")
    assert fx is not None and actions(fx) == [("RESOLVE", "itsmp-f1")]
    assert "No signal" in (fx.commands[0].resolution_note or "")


def test_the_same_input_always_gives_the_same_commands() -> None:
    runs = []
    for _ in range(2):
        h = Harness()
        runs.append([c.model_dump() for c in h.send(am("f1")).commands])
    assert runs[0] == runs[1]


def test_a_window_with_an_unknown_time_zone_is_refused_not_silently_ignored() -> None:
    from pydantic import ValidationError

    from streams.core.models import Recurrence

    with pytest.raises(ValidationError, match="unknown IANA time zone 'Mars/Olympus_Mons'"):
        Recurrence(
            weekdays=[Weekday.SAT], start_time="02:00", duration_minutes=60, timezone="Mars/Olympus_Mons"
        )


def test_a_late_firing_of_an_episode_already_resolved_is_stale_and_changes_nothing() -> None:
    # Two Alertmanagers of an HA pair: the second member's "firing" (same startsAt) arrives after
    # the first member's "resolved".
    h = Harness(stable_period=0, reopen_period=3600, dedup_window=0)
    h.send(am("f1"))
    h.advance(60)
    resolved = am("f1", "RESOLVED").model_copy(update={"ends_at": h.now})
    assert actions(h.send(resolved)) == [("RESOLVE", "itsmp-f1")]
    before = copy_state(h.state("f1"))
    h.advance(5)
    fx = h.send(am("f1"))  # startsAt T0, before the resolve's endsAt
    assert fx.outcome is Outcome.STALE and fx.commands == []
    assert h.state("f1") == before  # not even counted as a notification of the alert
    # A real re-fire starts anew and reopens.
    assert actions(h.send(am("f1", starts_at=h.now))) == [("OPEN", "itsmp-f1")]


def test_a_late_resolve_of_an_earlier_episode_does_not_clear_the_current_one() -> None:
    h = Harness(stable_period=0, reopen_period=0, dedup_window=0)
    h.send(am("f1"))
    h.send(am("f1", "RESOLVED"))
    h.advance(60)
    assert actions(h.send(am("f1", starts_at=h.now))) == [("OPEN", "itsmp-f1-1")]
    fx = h.send(am("f1", "RESOLVED"))  # the first episode's resolve, delivered again late
    assert fx.outcome is Outcome.STALE and fx.commands == []
    assert h.state("f1").phase is IncidentPhase.OPEN


def test_notifications_without_an_applied_time_are_never_stale() -> None:
    from streams.stages.alerts.ordering import stale_reason

    h = Harness()
    h.send(am("f1"))
    state = msgspec.structs.replace(h.state("f1"), event_starts_at=None, event_status=None)
    assert stale_reason(state, am("f1", "RESOLVED")) is None  # a state written before this rule
    assert stale_reason(h.state("f1"), am("f1", starts_at=T0 - timedelta(seconds=1))) is not None


def test_a_refire_in_the_same_instant_as_a_resolve_without_an_end_is_a_new_firing() -> None:
    # A producer stamping each notification with its own time (a resolve without endsAt): a
    # firing at or after the resolve's time is news, even within the same millisecond.
    h = Harness(stable_period=300, dedup_window=0)
    h.send(am("f1"))
    h.send(am("f1", "RESOLVED"))
    fx = h.send(am("f1"))
    assert fx.outcome is not Outcome.STALE and actions(fx) == [("UPDATE", "itsmp-f1")]  # a flap


def test_a_new_incident_goes_to_the_group_owning_its_ci_and_updates_never_reassign() -> None:
    h = Harness()
    h.ci("db-1", owner_group="dba-team")
    h.ci("app-1", depends_on=["db-1"], owner_group="app-team")
    h.ci("orphan-1")
    (opened,) = h.send(am("p", alertname="DBDown", ci_id="db-1")).commands
    assert (opened.action, opened.assignment_group) == (IncidentAction.OPEN, "dba-team")
    h.advance(60)
    (again,) = h.send(am("p", alertname="DBDown", ci_id="db-1", severity="critical")).commands
    assert again.action is IncidentAction.UPDATE and again.assignment_group is None
    (grouped,) = h.send(am("c1", alertname="AppErrors", ci_id="app-1")).commands
    assert grouped.correlation_id == "itsmp-p" and grouped.assignment_group is None  # the parent's
    (unowned,) = h.send(am("o", alertname="Disk", ci_id="orphan-1")).commands
    assert unowned.action is IncidentAction.OPEN and unowned.assignment_group is None


# --- the ITSM's side: a person resolved it, a person changed its priority -----------------------


def test_an_incident_a_person_resolved_while_the_alert_fires_is_reopened_after_the_reopen_period() -> None:
    h = Harness(dedup_window=0, reopen_period=600)
    (opened,) = h.send(am("f1")).commands
    h.advance(60)
    h.itsm.person_resolved(opened.correlation_id, h.now)
    before = metric("itsm_pipeline_person_resolutions_total", action="held")
    # The alert keeps firing: within reopen_period nothing goes to the ITSM (no flip-flop).
    h.advance(30)
    assert h.send(am("f1")).commands == []
    assert metric("itsm_pipeline_person_resolutions_total", action="held") == before + 1
    assert h.engine.due(h.state("f1"), h.now) == T0 + timedelta(seconds=60 + 600)
    # Once reopen_period has passed, the tick reopens it once, with a note naming who resolved it.
    h.advance(600)
    fx = h.tick("f1")
    assert fx is not None
    (cmd,) = fx.commands
    assert cmd.action is IncidentAction.OPEN and cmd.correlation_id == opened.correlation_id
    assert "after Ada Lovelace resolved INC0010001" in (cmd.work_note or "")
    # The same resolution is never acted on twice; a later one is (again after the period).
    h.advance(5)
    assert [c.action for c in h.send(am("f1")).commands] == [IncidentAction.UPDATE]
    assert h.tick("f1") is None


def test_with_the_new_policy_a_person_resolution_gets_a_new_incident() -> None:
    h = Harness(dedup_window=0, reopen_period=300)
    h.rules = h.rules.model_copy(
        update={"lifecycle": h.rules.lifecycle.model_copy(update={"person_resolved": "new"})}
    )
    h.engine = type(h.engine)(h.rules, h.store, h.cmdb, h.incidents, h.windows, h.itsm)
    (opened,) = h.send(am("f1")).commands
    h.itsm.person_resolved(opened.correlation_id, h.now, status="CLOSED", closed_at=h.now)
    h.advance(301)
    (cmd,) = h.send(am("f1")).commands
    assert cmd.action is IncidentAction.OPEN and cmd.correlation_id == correlation_id("f1", 1)
    assert "this is a new incident" in (cmd.work_note or "")


def test_a_resolution_by_the_pipeline_or_before_its_reopen_is_not_a_persons() -> None:
    h = Harness(dedup_window=0, reopen_period=300)
    (opened,) = h.send(am("f1")).commands
    h.itsm.person_resolved(opened.correlation_id, h.now, resolved_by_pipeline=True)
    h.advance(400)
    assert [c.action for c in h.send(am("f1")).commands] == [IncidentAction.UPDATE]
    # A resolution older than the pipeline's last open (an earlier cycle) is not acted on either.
    h.itsm.person_resolved(opened.correlation_id, T0 - timedelta(seconds=10))
    h.advance(400)
    assert [c.action for c in h.send(am("f1")).commands] == [IncidentAction.UPDATE]


def test_a_repeat_never_sends_priority_and_an_escalation_leaves_a_persons_priority() -> None:
    h = Harness(dedup_window=0)
    (opened,) = h.send(am("f1", severity="warning")).commands
    h.advance(10)
    (repeat,) = h.send(am("f1", severity="warning")).commands
    assert repeat.action is IncidentAction.UPDATE and (repeat.impact, repeat.urgency) == (None, None)
    assert repeat.assignment_group is None
    record = h.itsm.person_resolved(opened.correlation_id, h.now, status="OPEN", person_changed=["priority"])
    assert record.status.value == "OPEN"
    h.advance(10)
    (escalated,) = h.send(am("f1", severity="critical")).commands
    assert (escalated.impact, escalated.urgency) == (None, None)
    assert "the priority stays as a person set it" in (escalated.work_note or "")


def test_reopening_an_incident_a_person_reprioritised_keeps_their_priority() -> None:
    h = Harness(dedup_window=0, reopen_period=300)
    (opened,) = h.send(am("f1")).commands
    h.itsm.person_resolved(opened.correlation_id, h.now, person_changed=["priority"])
    h.advance(301)
    (cmd,) = h.send(am("f1")).commands
    assert cmd.action is IncidentAction.OPEN and (cmd.impact, cmd.urgency) == (None, None)
