"""Per-target incident templates (ops/rules/templates.toml): rendered in Jinja2's sandbox from the
alert, its annotations and its CI; a template that fails on a record's alert raises (the worker
dead-letters the alert); one that fails on a timer's open falls back to the default text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from connectors.sinks.jira.mapping import request_fields
from connectors.sinks.rt.mapping import ticket_body
from connectors.sinks.servicenow.mapping import open_fields
from streams.core import models as m
from streams.core.rules import RuleError, TemplateRules, default_rules_dir, load_rules
from streams.stages.alerts.state import Outcome
from streams.stages.alerts.templates import TemplateFault
from tests.alerting import Harness, am
from tests.cli import Itsmctl

GOOD = {
    "short_description": (
        "{{ alert.severity | upper }}: {{ alert.summary }} on {{ ci.name if ci else 'unknown CI' }}"
    ),
    "description": (
        "{{ alert.annotations.get('description', alert.summary) }}\n"
        "Owner {{ ci.owner_group }}, tier {{ ci.attributes.tier }}, {{ ci.attributes.location }}\n"
        "Runbook: {{ alert.annotations.runbook_url }}\nIncident {{ correlation_id }}"
    ),
}


def harness(**targets: dict[str, str]) -> Harness:
    rules = load_rules()
    templates = TemplateRules.model_validate({"version": 3, **targets})
    return Harness(rules.model_copy(update={"templates": templates}))


def alert(fp: str, **annotations: str) -> m.Alert:
    return am(fp, ci_id="db-1").model_copy(update={"annotations": annotations})


def test_a_template_puts_annotations_and_ci_attributes_into_the_incident_of_its_target() -> None:
    h = harness(servicenow=GOOD, rt={"short_description": "RT: {{ alert.name }}"})
    h.ci("db-1", owner_group="DBA", attributes={"tier": "1", "location": "Frankfurt"})
    (cmd,) = h.send(alert("f1", runbook_url="https://runbooks/db", description="Disk almost full")).commands
    sn = cmd.target_fields["servicenow"]
    assert sn["short_description"] == "WARNING: HighCPU f1 on db-1"
    assert sn["description"].splitlines() == [
        "Disk almost full",
        "Owner DBA, tier 1, Frankfurt",
        "Runbook: https://runbooks/db",
        "Incident itsmp-f1",
    ]
    assert cmd.target_fields["rt"] == {"short_description": "RT: HighCPU"}
    # Each sink writes its own target's text, and the default where it has none.
    assert open_fields(cmd, "bot")["short_description"] == "WARNING: HighCPU f1 on db-1"
    body = ticket_body("Ops", cmd, "ITSM Correlation Id", "ITSM CI")
    assert (body["Subject"], body["Content"]) == ("RT: HighCPU", cmd.description)
    assert request_fields(cmd)["summary"] == cmd.short_description  # no Jira template


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ alert.annotations.runbook_url }}", "UndefinedError"),  # strict: no silent blank
        ("{{ alert.__class__.__mro__ }}", "SecurityError"),  # the sandbox refuses internals
        ("{{ ''.__class__.__subclasses__() }}", "SecurityError"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{% if false %}x{% endif %}", "rendered to nothing"),
    ],
)
def test_a_template_that_fails_on_a_records_alert_raises_with_the_reason(template: str, reason: str) -> None:
    h = harness(servicenow={"description": template})
    before = REGISTRY.get_sample_value("itsm_pipeline_template_errors_total", {"target": "servicenow"}) or 0
    with pytest.raises(TemplateFault) as info:
        h.send(alert("f1"))
    assert "template servicenow.description" in str(info.value) and reason in str(info.value)
    assert isinstance(info.value, ValueError)  # a data fault: the worker dead-letters the alert
    after = REGISTRY.get_sample_value("itsm_pipeline_template_errors_total", {"target": "servicenow"})
    assert after == before + 1
    assert h.store.get("f1") is None  # nothing of it was kept: a replay after the fix opens it


def test_a_template_that_fails_on_a_timers_open_falls_back_to_the_default_text() -> None:
    from tests.unit.test_alert_engine import silence

    h = harness(servicenow={"description": "{{ alert.annotations.runbook_url }}"})
    silence(h, "s-1", 'alertname="HighCPU"', start=-10, end=60)
    assert h.send(alert("f1")).outcome is Outcome.SUPPRESSED  # no open, no template yet
    h.advance(61)
    fx = h.tick("f1")  # the silence ended: the timer opens it, with no record to dead-letter
    assert fx is not None
    (cmd,) = fx.commands
    assert cmd.action is m.IncidentAction.OPEN and "servicenow" not in cmd.target_fields


def test_templates_only_for_the_targets_an_incident_is_routed_to() -> None:
    import tomllib

    from streams.core.rules import RouteRules

    rules = load_rules()
    routes = RouteRules.model_validate(tomllib.loads('version = 1\ntargets = ["rt"]\n'))
    templates = TemplateRules.model_validate({"version": 1, "servicenow": GOOD, "rt": {"description": "x"}})
    h = Harness(rules.model_copy(update={"routes": routes, "templates": templates}))
    (cmd,) = h.send(alert("f1")).commands  # no CI: GOOD would fail, but servicenow is not a target
    assert cmd.targets == ["rt"] and cmd.target_fields == {"rt": {"description": "x"}}


def test_a_template_that_does_not_parse_or_sets_another_field_is_refused_at_load(tmp_path: Path) -> None:
    for path in default_rules_dir().glob("*.toml"):
        shutil.copy(path, tmp_path / path.name)
    for text, problem in (
        ('version = 1\n[servicenow]\ndescription = "{{ alert.name "\n', "line 1"),
        ('version = 1\n[rt]\nqueue = "x"\n', "short_description or description"),
        ('version = 1\n[remedy]\ndescription = "x"\n', "remedy"),
    ):
        (tmp_path / "templates.toml").write_text(text)
        with pytest.raises(RuleError, match=r"templates\.toml") as err:
            load_rules(tmp_path)
        assert problem in str(err.value)


def test_rules_test_renders_the_templates_and_names_one_that_fails(tmp_path: Path, itsmctl: Itsmctl) -> None:
    import json

    for path in default_rules_dir().glob("*.toml"):
        shutil.copy(path, tmp_path / path.name)
    sample = str(Path(__file__).resolve().parents[2] / "ops/samples/alertmanager/02-diskfull-firing.json")
    (tmp_path / "templates.toml").write_text(
        'version = 1\n[rt]\nshort_description = "{{ alert.name }} on {{ alert.labels.instance }}"\n'
    )
    ran = itsmctl("rules", "test", sample, ITSM_RULES_DIR=str(tmp_path))
    assert ran.returncode == 0, ran.stderr
    assert (
        "-> rt short_description (templates.toml, the CI unknown here):\n     DiskFull on db-1:9100"
        in ran.stdout
    )
    (tmp_path / "templates.toml").write_text('version = 1\n[rt]\ndescription = "{{ ci.name }}"\n')
    doc = json.loads(itsmctl("rules", "test", sample, "-o", "json", ITSM_RULES_DIR=str(tmp_path)).stdout)
    assert "template rt.description" in doc["alerts"][0]["template_error"]
    assert "dead-letter" in doc["alerts"][0]["template_error"]
