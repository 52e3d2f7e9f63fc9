"""Event rules (ops/rules/events.toml): conditions, actions, order, stop; bad files refused; the
engine drops without keeping state and records why; `itsmctl rules test` shows it all."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from streams.core.models import AlertSource
from streams.core.rules import EventRules, RuleError, default_rules_dir, load_rules
from streams.stages.alerts.events import EventRuleSet
from streams.stages.alerts.state import Outcome
from tests.alerting import Harness, am
from tests.cli import Itsmctl


def ruleset(*rules: dict[str, object]) -> EventRuleSet:
    return EventRuleSet(EventRules.model_validate({"version": 3, "rule": list(rules)}))


@pytest.mark.parametrize(
    ("when", "labels", "severity", "holds"),
    [
        ({}, {}, "warning", True),  # no condition: every alert
        ({"severity": ["info", "none"]}, {}, "INFO", True),  # any of, case-insensitive
        ({"severity": ["info"]}, {}, "warning", False),
        ({"source": ["alertmanager"]}, {}, "warning", True),
        ({"source": ["GRAFANA"]}, {}, "warning", False),
        ({"labels": ['namespace=~"dev-.*"']}, {"namespace": "dev-7"}, "warning", True),
        ({"labels": ['namespace=~"dev-.*"']}, {"namespace": "prod"}, "warning", False),
        (
            {"labels": ['namespace=~"dev-.*"', 'team!="db"']},
            {"namespace": "dev-1", "team": "db"},
            "warning",
            False,
        ),
        ({"annotations": ['summary=~".*test.*"']}, {}, "warning", False),  # am() summary: "HighCPU f1"
        ({"annotations": ['summary=~"HighCPU.*"']}, {}, "warning", True),
    ],
)
def test_conditions(when: dict[str, object], labels: dict[str, str], severity: str, holds: bool) -> None:
    rules = ruleset({"name": "r", "when": when, "then": {"drop": True}})
    verdict = rules.apply(am("f1", severity=severity, **labels), count=False)
    assert (verdict.dropped_by == "r") is holds
    assert (verdict.alert is None) is holds


def test_actions_apply_in_order_and_stop_ends_the_list() -> None:
    rules = ruleset(
        {"name": "rename", "then": {"rename_labels": {"host": "instance"}}},
        {
            "name": "payments",
            "when": {"labels": ['instance=~"pay-.*"']},  # sees the renamed label
            "then": {
                "set_labels": {"team": "payments"},
                "severity": "critical",
                "ci": "pay-db",
                "route": "pay",
            },
            "stop": True,
        },
        {"name": "never", "then": {"drop": True}},  # after a stop: not reached
    )
    verdict = rules.apply(am("f1", host="pay-1"), count=False)
    assert verdict.matched == [("rename", "changed"), ("payments", "changed")]
    assert verdict.alert is not None and verdict.dropped_by is None
    assert verdict.alert.labels == {
        "alertname": "HighCPU",
        "instance": "pay-1",
        "team": "payments",
        "ci_id": "pay-db",
        "route": "pay",
    }
    assert verdict.alert.severity == "critical" and verdict.alert.fingerprint == "f1"  # identity kept
    other = rules.apply(am("f2", host="web-1"), count=False)
    assert other.matched == [("rename", "changed"), ("never", "dropped")] and other.alert is None


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"name": "x", "then": {"drop": True, "severity": "info"}}, "cannot also change"),
        ({"name": "x", "then": {}}, "must drop or change"),
        ({"name": "x", "when": {"labels": ['a=~"(x"']}, "then": {"drop": True}}, "RE2"),
        ({"name": "bad name!", "then": {"drop": True}}, "name"),
        ({"name": "x", "then": {"drop": True}, "extra": 1}, "extra"),
    ],
)
def test_a_bad_rule_file_is_refused_naming_the_problem(
    tmp_path: Path, rule: dict[str, object], problem: str
) -> None:
    for path in default_rules_dir().glob("*.toml"):
        shutil.copy(path, tmp_path / path.name)
    lines = ["version = 2", "[[rule]]"]
    for key, value in rule.items():
        lines.append(
            f"{key} = {json.dumps(value)}" if not isinstance(value, dict) else f"{key} = {_toml(value)}"
        )
    (tmp_path / "events.toml").write_text("\n".join(lines) + "\n")
    with pytest.raises(RuleError, match=r"events\.toml") as err:
        load_rules(tmp_path)
    assert problem in str(err.value)


def _toml(value: dict[str, object]) -> str:
    parts = []
    for k, v in value.items():
        parts.append(f"{k} = {_toml(v) if isinstance(v, dict) else json.dumps(v)}")
    return "{ " + ", ".join(parts) + " }"


def test_the_engine_records_a_drop_and_keeps_no_state() -> None:
    h = Harness()
    h.engine.events = ruleset({"name": "drop-info", "when": {"severity": ["info"]}, "then": {"drop": True}})
    fx, state = h.engine.process(am("noise", severity="info"), h.now)
    assert fx.outcome is Outcome.SUPPRESSED and state is None and fx.commands == []
    (sup,) = fx.suppressed
    assert sup.reason == "event rule drop-info" and sup.window is None
    assert h.store.get("noise") is None
    assert h.send(am("real", severity="critical")).outcome is Outcome.EMITTED


def test_a_rule_can_set_the_ci() -> None:
    h = Harness()
    h.ci("db-9")
    h.engine.events = ruleset({"name": "ci", "when": {"labels": ['job="postgres"']}, "then": {"ci": "db-9"}})
    fx = h.send(am("f1", job="postgres"))
    (cmd,) = fx.commands
    assert cmd.ci_id == "db-9"


def test_rules_test_shows_matches_and_the_result(tmp_path: Path, itsmctl: Itsmctl) -> None:
    for path in default_rules_dir().glob("*.toml"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "events.toml").write_text(
        "version = 5\n"
        '[[rule]]\nname = "db-team"\nwhen = { labels = [\'service="orders-db"\'] }\n'
        'then = { set_labels = { team = "db" }, severity = "warning" }\n'
        '[[rule]]\nname = "drop-disk"\nwhen = { labels = [\'alertname="DiskFull"\', \'team="db"\'] }\n'
        "then = { drop = true }\n"
    )
    sample = str(Path(__file__).resolve().parents[2] / "ops/samples/alertmanager/02-diskfull-firing.json")
    ran = itsmctl("rules", "test", sample, ITSM_RULES_DIR=str(tmp_path))
    assert ran.returncode == 0, ran.stderr
    assert "events.toml v5: 2 rule(s)" in ran.stdout
    assert "matched db-team: changed" in ran.stdout and "matched drop-disk: dropped" in ran.stdout
    assert "-> dropped by drop-disk" in ran.stdout
    doc = json.loads(itsmctl("rules", "test", sample, "-o", "json", ITSM_RULES_DIR=str(tmp_path)).stdout)
    (one,) = doc["alerts"]
    assert one["dropped_by"] == "drop-disk" and one["alert"] is None
    assert [m["rule"] for m in one["matched"]] == ["db-team", "drop-disk"]
    # A file that is not an alert: one line, exit 2.
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    ran = itsmctl("rules", "test", str(bad), ITSM_RULES_DIR=str(tmp_path))
    assert ran.returncode == 2 and "not an alert this pipeline reads" in ran.stderr
    assert AlertSource.ALERTMANAGER  # the sample is an Alertmanager webhook
