"""Probable causes: which finished deployment an incident names (its CI, a CI it depends on, its
service; within change_lookback before it opened), what the ITSM gets, the audit records; the
deploy view; and the change failure rate and time to restore, checked against figures by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streams.core import models as m
from streams.core.serde import AvroSerde
from streams.processors.indexes import DeployIndex
from streams.stages.changes.analytics import summarize
from tests.alerting import T0, Harness, am


def deploy(dep: str, minutes_before: float, phase: str = "SUCCEEDED", **kw: object) -> m.DeploymentEvent:
    return m.DeploymentEvent.model_validate(
        {
            "event_id": f"{dep}-{phase}",
            "deployment_id": dep,
            "phase": phase,
            "service": kw.pop("service", "checkout"),
            "environment": "production",
            "ci_ids": kw.pop("ci_ids", ["web-1"]),
            "commit_ids": ["c0ffee"],
            "build_number": "42",
            "change_id": kw.pop("change_id", "CHG0030042"),
            "occurred_at": T0 - timedelta(minutes=minutes_before),
            **kw,
        }
    )


class Deploys:
    def __init__(self, *items: m.DeploymentEvent) -> None:
        self.items = list(items)

    def finished(
        self, ci_ids: list[str], service: str | None, since: datetime, until: datetime
    ) -> list[m.DeploymentEvent]:
        return [
            d
            for d in self.items
            if since <= d.occurred_at <= until and (set(ci_ids) & set(d.ci_ids) or d.service == service)
        ]


def harness(*deploys: m.DeploymentEvent) -> Harness:
    h = Harness(stable_period=0)
    h.engine = type(h.engine)(h.rules, h.store, h.cmdb, h.incidents, h.windows, h.itsm, Deploys(*deploys))
    h.ci("db-1", service="orders-db")
    h.ci("web-1", service="checkout", depends_on=["db-1"])
    h.ci("web-2", service="search")
    return h


@pytest.mark.parametrize(
    ("deploys", "ci", "named"),
    [
        ([deploy("d1", 30)], "web-1", "d1"),  # on its CI
        ([deploy("d1", 90), deploy("d2", 10)], "web-1", "d2"),  # the latest of two
        ([deploy("d1", 30, ci_ids=["db-1"], service="orders-db")], "web-1", "d1"),  # a CI it depends on
        ([deploy("d1", 30, ci_ids=[])], "web-1", "d1"),  # its service (a deploy naming no CI)
        ([deploy("d1", 130)], "web-1", None),  # before the 2 h lookback
        ([deploy("d1", -5)], "web-1", None),  # after it opened
        ([deploy("d1", 30)], "web-2", None),  # another CI and service
    ],
)
def test_an_incident_names_the_latest_deployment_that_finished_where_it_opened(
    deploys: list[m.DeploymentEvent], ci: str, named: str | None
) -> None:
    h = harness(*deploys)
    (cmd,) = h.send(am("f1", ci_id=ci)).commands
    fx_audits = h.engine.process(am("f2", ci_id=ci), T0, 0)[0].audits
    if named is None:
        assert "Probable cause" not in cmd.description and "servicenow" not in cmd.target_fields
        assert fx_audits == []
        return
    assert f"Probable cause: deployment {named} of" in cmd.description
    assert "change CHG0030042; build 42; commit c0ffee" in cmd.description
    assert cmd.target_fields["servicenow"]["caused_by"] == "CHG0030042"
    (event,) = fx_audits
    assert (event.action, event.details["deployment_id"]) == ("incident.cause", named)


def test_a_resolve_records_the_restore_and_a_grouped_alert_names_no_cause() -> None:
    h = harness(deploy("d1", 30, ci_ids=["db-1"], service="orders-db"))
    opened = h.send(am("p", ci_id="db-1"))
    assert [a.action for a in opened.audits] == ["incident.cause"]
    grouped = h.send(am("c", ci_id="web-1"))  # joins db-1's incident: no cause of its own
    assert grouped.audits == [] and "Probable cause" not in (grouped.commands[0].description or "")
    h.advance(600)
    resolved = h.send(am("p", "RESOLVED", ci_id="db-1"))
    ticked = h.tick("p") if not resolved.commands else resolved
    assert ticked is not None
    (restored,) = ticked.audits
    assert restored.action == "incident.restored" and restored.details["seconds"] == "600"
    assert restored.details["service"] == "orders-db" and restored.details["deployment_id"] == "d1"


def test_the_deploy_view_keeps_finished_deployments_within_the_lookback() -> None:
    serde = AvroSerde()
    view = DeployIndex(serde, "deploy.events", keep_seconds=3600)
    for d in (deploy("old", 200), deploy("run", 5, phase="STARTED"), deploy("ok", 30), deploy("new", 1)):
        view.apply(d.deployment_id.encode(), serde.encode(d))
    view.apply(b"bad", b"not avro")  # skipped (the guard dead-letters it), never a crash
    found = view.finished(["web-1"], None, T0 - timedelta(hours=3), T0)
    assert sorted(d.deployment_id for d in found) == ["new", "ok"]  # old pruned, started not finished
    assert view.finished(["x"], "checkout", T0 - timedelta(hours=1), T0) != []  # by service
    assert view.finished(["x"], "search", T0 - timedelta(hours=1), T0) == []


def audit(action: str, service: str, at: datetime, **details: str) -> m.AuditEvent:
    return m.AuditEvent(
        event_id=f"{action}-{service}-{details.get('deployment_id', '')}-{details.get('incident', '')}",
        occurred_at=at,
        actor="pipeline",
        action=action,
        subject_type="x",
        subject_id=details.pop("incident", "s"),
        outcome=m.AuditOutcome.DONE,
        details={"service": service, **details},
    )


def test_change_failure_rate_and_time_to_restore_against_figures_by_hand() -> None:
    day = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    events = [
        audit("deploy.outcome", "checkout", day, deployment_id=f"d{i}", phase="SUCCEEDED")
        for i in range(1, 5)
    ]
    events.append(audit("deploy.outcome", "payments", day, deployment_id="p1", phase="SUCCEEDED"))
    events.append(audit("deploy.unlinked", "checkout", day, deployment_id="u1", phase="SUCCEEDED"))
    # d2 caused one incident, d3 two; u1 (not a linked change) one, which counts no change.
    for dep, inc in (("d2", "i1"), ("d3", "i2"), ("d3", "i3"), ("u1", "i4")):
        events.append(audit("incident.cause", "checkout", day, deployment_id=dep, incident=inc))
    opened = day.isoformat()
    for inc, seconds in (("i1", "600"), ("i2", "1800"), ("i2", "1800")):  # i2 reported twice: once
        events.append(
            audit("incident.restored", "checkout", day, incident=inc, opened_at=opened, seconds=seconds)
        )
    rows = {r.service: r for r in summarize(events, "day")}
    checkout, payments = rows["checkout"], rows["payments"]
    # By hand: checkout 4 linked deploys, 2 of them (d2, d3) named by an incident: 2/4 = 50 %;
    # restores 600 s and 1800 s: (600 + 1800) / 2 = 1200 s.
    assert (checkout.deploys, checkout.caused_incidents, checkout.change_failure_rate) == (4, 2, 0.5)
    assert checkout.mean_time_to_restore_s == 1200.0 and checkout.unlinked == 1
    assert (payments.deploys, payments.change_failure_rate, payments.mean_time_to_restore_s) == (1, 0.0, None)


def test_the_probable_cause_shows_its_time_in_the_zone_and_locale_of_each_target() -> None:
    from streams.core.rules import TemplateRules

    h = harness(deploy("d1", 30))
    display = TemplateRules.model_validate(
        {"version": 2, "display": {"rt": {"time_zone": "Europe/Berlin", "locale": "de_DE"}}}
    )
    rules = h.rules.model_copy(update={"templates": display})
    h.engine = type(h.engine)(
        rules, h.store, h.cmdb, h.incidents, h.windows, h.itsm, Deploys(deploy("d1", 30))
    )
    (cmd,) = h.send(am("f1", ci_id="web-1")).commands
    # T0 is 10:00 UTC: the deployment finished 09:30 UTC, 10:30 in Berlin.
    assert "at 2026-11-27T09:30:00+00:00, 30 min before" in cmd.description  # the default: UTC
    rt = cmd.target_fields["rt"]["description"].replace(" um ", ", ")
    assert "Probable cause: deployment d1 of checkout" in rt and "27. November 2026, 10:30:00 MEZ" in rt
