"""group_by grouping (correlation.toml [grouping]): alerts with the same group label values join
the incident of the first within group_window; the incident resolves only once every member
cleared and stayed clear; a member that falls silent leaves the group."""

from __future__ import annotations

from streams.core.models import IncidentAction
from streams.stages.alerts.state import IncidentPhase
from tests.alerting import Harness, am


def harness(window: float = 300, **lifecycle: float) -> Harness:
    h = Harness(**lifecycle)
    grouping = h.rules.correlation.grouping.model_copy(
        update={"group_by": ["alertname", "cluster"], "group_window": window}
    )
    rules = h.rules.model_copy(
        update={"correlation": h.rules.correlation.model_copy(update={"grouping": grouping})}
    )
    return Harness(rules, **lifecycle)


def actions(fx: object) -> list[tuple[str, str]]:
    return [(c.action.value, c.correlation_id) for c in fx.commands]  # type: ignore[attr-defined]


def test_alerts_of_one_group_join_the_first_ones_incident_and_other_groups_open_their_own() -> None:
    h = harness()
    assert actions(h.send(am("a1", cluster="c1", instance="n1"))) == [("OPEN", "itsmp-a1")]
    joined = h.send(am("a2", cluster="c1", instance="n2"))
    assert actions(joined) == [("UPDATE", "itsmp-a1")]
    assert "joins this incident's group (alertname=HighCPU,cluster=c1)" in (
        joined.commands[0].work_note or ""
    )
    assert joined.decisions[0].decision == "grouped" and h.state("a2").phase is IncidentPhase.GROUPED
    assert actions(h.send(am("a3", cluster="c2", instance="n1"))) == [("OPEN", "itsmp-a3")]  # another group


def test_the_groups_incident_resolves_only_once_every_member_cleared_and_stayed_clear() -> None:
    h = harness(stable_period=60)
    h.send(am("a1", cluster="c1"))
    h.send(am("a2", cluster="c1", instance="n2"))
    h.advance(10)
    assert h.send(am("a1", "RESOLVED", cluster="c1")).commands == []  # the first clears: clearing
    h.advance(61)
    assert h.tick("a1") is None  # stable, but a2 still fires: the incident stays open
    assert h.state("a1").phase is IncidentPhase.CLEARING
    h.advance(30)
    assert h.send(am("a2", "RESOLVED", cluster="c1", instance="n2")).commands == []  # a member leaves
    fx = h.tick("a1")  # the last member gone: the group's incident resolves now
    assert fx is not None and actions(fx) == [("RESOLVE", "itsmp-a1")]
    assert "Every alert of the group cleared" in (fx.commands[0].resolution_note or "")
    assert h.incidents.entries("group:alertname=HighCPU,cluster=c1") == []


def test_after_group_window_a_new_alert_opens_the_groups_next_incident() -> None:
    h = harness(window=120)
    h.send(am("a1", cluster="c1"))
    h.advance(121)
    assert actions(h.send(am("a2", cluster="c1", instance="n2"))) == [("OPEN", "itsmp-a2")]
    h.advance(10)
    assert actions(h.send(am("a3", cluster="c1", instance="n3"))) == [("UPDATE", "itsmp-a2")]


def test_a_member_that_falls_silent_leaves_the_group_so_its_incident_can_resolve() -> None:
    h = harness(stable_period=0, signal_timeout=600)
    h.send(am("a1", cluster="c1"))
    h.send(am("a2", cluster="c1", instance="n2"))
    h.advance(10)
    assert h.send(am("a1", "RESOLVED", cluster="c1")).commands == []  # a2 fires: waits
    h.advance(600)
    assert h.tick("a2") is not None  # silent for signal_timeout: it leaves the group
    fx = h.tick("a1")
    assert fx is not None and [c.action for c in fx.commands] == [IncidentAction.RESOLVE]


def test_without_group_by_nothing_is_grouped_by_labels() -> None:
    h = Harness()
    assert actions(h.send(am("a1", cluster="c1"))) == [("OPEN", "itsmp-a1")]
    assert actions(h.send(am("a2", cluster="c1", instance="n2"))) == [("OPEN", "itsmp-a2")]
