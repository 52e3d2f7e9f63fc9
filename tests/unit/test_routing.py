"""The route tree (ops/rules/routes.toml): Alertmanager's walk (first match, continue, children,
inheritance), CI attributes as ci_* labels, and the engine carrying an incident's sinks on every
command of it, grouped alerts included."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from streams.core import models as m
from streams.core.rules import ROUTE_TARGETS, RouteRules, RuleError, default_rules_dir, load_rules
from streams.stages.alerts.routing import Router
from tests.alerting import Harness, am
from tests.cli import Itsmctl

TREE = """
version = 1
targets = ["servicenow"]
fields.servicenow = { category = "monitoring" }

[[route]]
name = "payments"
matchers = ['route="payments"']
fields.servicenow = { assignment_group = "Payments Ops" }

  [[route.route]]
  name = "payments-db"
  matchers = ['service="payments-db"']
  targets = ["rt"]
  fields.rt = { queue = "DBA" }

[[route]]
name = "platform"
matchers = ['ci_owner_group=~"Platform.*"']
targets = ["rt"]
fields.rt = { queue = "Platform" }
continue = true

[[route]]
name = "critical"
matchers = ['severity="critical"']
targets = ["jira", "servicenow"]
fields.jira = { request_type = "17" }

[[route]]
name = "never-reached-after-critical"
matchers = ['severity="critical"']
targets = ["webhook"]
"""


MONITORING = {"category": "monitoring"}
DBA = {"queue": "DBA"}


def router() -> Router:
    return Router(RouteRules.model_validate(tomllib.loads(TREE)))


def ci(owner: str) -> m.ConfigurationItem:
    return m.ConfigurationItem.model_validate(
        {
            "ci_id": "db-1",
            "name": "db-1",
            "ci_class": "cmdb_ci_server",
            "source_system": "test",
            "owner_group": owner,
            "updated_at": "2026-11-27T10:00:00Z",
        }
    )


@pytest.mark.parametrize(
    ("labels", "owner", "targets", "routes", "fields"),
    [
        # nothing matches: the root, its targets and fields
        ({}, None, ("servicenow",), ("root",), {"servicenow": {"category": "monitoring"}}),
        # a match inherits the root's targets and adds to its fields
        (
            {"route": "payments"},
            None,
            ("servicenow",),
            ("payments",),
            {"servicenow": {"category": "monitoring", "assignment_group": "Payments Ops"}},
        ),
        # a child that matches is where it ends: its own targets, fields of those targets only
        ({"route": "payments", "service": "payments-db"}, None, ("rt",), ("payments-db",), {"rt": DBA}),
        # first match wins: payments stops the walk, critical is not reached
        (
            {"route": "payments", "severity": "critical"},
            None,
            ("servicenow",),
            ("payments",),
            {"servicenow": {"category": "monitoring", "assignment_group": "Payments Ops"}},
        ),
        # a CI attribute as a label; continue goes on to critical; critical does not continue
        (
            {"severity": "critical"},
            "Platform Team",
            ("rt", "jira", "servicenow"),
            ("platform", "critical"),
            {"rt": {"queue": "Platform"}, "jira": {"request_type": "17"}, "servicenow": MONITORING},
        ),
        # an alert label wins over the CI's attribute of the same name
        ({"ci_owner_group": "DBA"}, "Platform Team", ("servicenow",), ("root",), {"servicenow": MONITORING}),
    ],
)  # fmt: skip
def test_the_route_tree_is_walked_as_alertmanager_walks_its_routes(
    labels: dict[str, str],
    owner: str | None,
    targets: tuple[str, ...],
    routes: tuple[str, ...],
    fields: dict[str, dict[str, str]],
) -> None:
    routed = router().route(labels, ci(owner) if owner else None)
    assert (routed.targets, routed.routes, routed.fields) == (targets, routes, fields)


def test_without_routes_every_sink_gets_every_incident() -> None:
    routed = Router(load_rules().routes).route({"severity": "critical"})
    assert routed.targets == () and all(routed.for_target(t) for t in ROUTE_TARGETS)


def test_route_targets_are_the_sinks_itsmctl_runs() -> None:
    from connectors.registry import SINKS

    assert tuple(ROUTE_TARGETS) == SINKS


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('version = 1\n[[route]]\nname = "x"\ntargets = ["remedy"]\n', "unknown target 'remedy'"),
        ('version = 1\n[[route]]\nname = "x"\nfields.rt = { owner = "bob" }\n', "'owner' is not a field"),
        (
            'version = 1\n[[route]]\nname = "x"\nfields.servicenow = { state = "6" }\n',
            "'state' is not a field",
        ),
        ('version = 1\n[[route]]\nname = "x"\nmatchers = [\'a=~"("\']\n', "RE2"),
        ('version = 1\n[[route]]\nname = "x"\n[[route.route]]\nname = "x"\n', "unique"),
        ('version = 1\ntargets = ["nope"]\n', "unknown target 'nope'"),
    ],
)
def test_bad_routes_are_refused_with_the_file_and_the_problem(
    text: str, problem: str, tmp_path: Path
) -> None:
    import shutil

    for path in default_rules_dir().glob("*.toml"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "routes.toml").write_text(text)
    with pytest.raises(RuleError, match=r"routes\.toml") as err:
        load_rules(tmp_path)
    assert problem in str(err.value)


def harness() -> Harness:
    rules = load_rules()
    routes = RouteRules.model_validate(tomllib.loads(TREE))
    return Harness(rules.model_copy(update={"routes": routes}))


def test_every_command_of_an_incident_names_the_sinks_its_route_chose_and_fields_only_the_open() -> None:
    h = harness()
    (opened,) = h.send(am("f1", route="payments")).commands
    assert opened.action is m.IncidentAction.OPEN and opened.targets == ["servicenow"]
    assert opened.target_fields == {
        "servicenow": {"category": "monitoring", "assignment_group": "Payments Ops"}
    }
    h.advance(400)
    (update,) = h.send(am("f1", route="payments")).commands
    assert update.action is m.IncidentAction.UPDATE and update.targets == ["servicenow"]
    assert update.target_fields == {}  # a reassignment made in the ITSM stands
    assert h.send(am("f1", "RESOLVED", route="payments")).commands == []  # clearing
    h.advance(h.rules.lifecycle.stable_period + 1)
    ticked = h.tick("f1")  # auto-resolved by the timer: no alert, no route at hand
    assert ticked is not None
    (resolve,) = ticked.commands
    assert resolve.action is m.IncidentAction.RESOLVE and resolve.targets == ["servicenow"]


def test_a_grouped_alert_goes_to_the_sinks_of_the_incident_it_joins() -> None:
    h = harness()
    h.ci("db-1", owner_group="Platform Team")
    h.ci("app-1", depends_on=["db-1"])
    (parent,) = h.send(am("p", ci_id="db-1")).commands
    assert parent.targets == ["rt"] and parent.target_fields == {"rt": {"queue": "Platform"}}
    assert h.incidents.get("db-1") == "itsmp-p@rt"  # alerts.ci.incidents carries the sinks
    (child,) = h.send(am("c", ci_id="app-1", route="payments")).commands
    # The child's own route would say servicenow; it joins the parent's incident, so it goes
    # where that incident is.
    assert child.correlation_id == "itsmp-p" and child.targets == ["rt"] and child.target_fields == {}


def test_rules_test_shows_where_an_alert_is_routed(tmp_path: Path, itsmctl: Itsmctl) -> None:
    import json
    import shutil

    for path in default_rules_dir().glob("*.toml"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "routes.toml").write_text(TREE)
    sample = str(Path(__file__).resolve().parents[2] / "ops/samples/alertmanager/02-diskfull-firing.json")
    ran = itsmctl("rules", "test", sample, ITSM_RULES_DIR=str(tmp_path))
    assert ran.returncode == 0, ran.stderr
    # The sample is severity="critical": the critical route, to Jira and ServiceNow.
    assert "-> routes.toml v1: route critical to jira, servicenow" in ran.stdout
    assert "jira: request_type=17" in ran.stdout
    doc = json.loads(itsmctl("rules", "test", sample, "-o", "json", ITSM_RULES_DIR=str(tmp_path)).stdout)
    assert doc["alerts"][0]["route"]["targets"] == ["jira", "servicenow"]


def test_a_route_sets_the_hold_of_its_incidents_and_others_keep_lifecycles() -> None:
    routes = RouteRules.model_validate(
        tomllib.loads(
            "version = 1\n"
            '[[route]]\nname = "noisy"\nmatchers = [\'team="noisy"\']\nopen_after_seconds = 120\n'
            '  [[route.route]]\n  name = "noisy-db"\n'
            "  matchers = ['service=\"db\"']\n  open_after_count = 3\n"
        )
    )
    h = Harness(load_rules().model_copy(update={"routes": routes}), dedup_window=0)
    assert router_of(h).route({"team": "noisy", "service": "db"}).hold == (120.0, 3)  # inherited seconds
    assert h.send(am("quiet")).commands[0].action is m.IncidentAction.OPEN  # no hold: opens at once
    assert h.send(am("n1", team="noisy")).outcome.value == "held"
    h.advance(60)
    assert h.tick("n1") is None  # still inside its route's 120 s
    h.advance(61)
    ticked = h.tick("n1")
    assert ticked is not None and ticked.commands[0].action is m.IncidentAction.OPEN
    assert "Opened after a hold of 121s (route noisy open_after)" in (ticked.commands[0].work_note or "")
    # The child route opens on the third notification, before its 120 s.
    for _ in range(2):
        assert h.send(am("d1", team="noisy", service="db")).outcome.value == "held"
        h.advance(1)
    assert h.send(am("d1", team="noisy", service="db")).commands[0].action is m.IncidentAction.OPEN


def router_of(h: Harness) -> Router:
    return h.engine.routing.router
