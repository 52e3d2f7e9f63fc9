"""CI reconciliation (ops/rules/changes.toml [[reconcile]]): which source's value a field keeps when
granted sources disagree, table-driven on the decision and on the shipped rules with three sources."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams.core.models import ConfigurationItem, FieldSource
from streams.core.rules import ChangeRules, ReconcileRule, load_rules
from streams.stages.changes.validation import CIUpdateValidator, decide

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
RULE = ReconcileRule(
    fields=["hostname"], priority=["discovery", "terraform", "cmdb"], refresh={"discovery": 7200}
)


def held(source: str, hours_ago: float = 1) -> FieldSource:
    return FieldSource(source=source, at=T0 - hours_ago * HOUR)


@pytest.mark.parametrize(
    ("name", "rule", "holder", "source", "won", "outcome"),
    [
        ("nobody holds the field", RULE, None, "cmdb", True, "won_new"),
        ("the holder reports again, newer", RULE, held("terraform"), "terraform", True, "won_same_source"),
        ("the holder's own older report", RULE, held("terraform", -1), "terraform", False, "lost_older"),
        ("no rule: the newer report wins", None, held("terraform"), "cmdb", True, "won_newest"),
        ("no rule: an older report loses", None, held("terraform", -1), "cmdb", False, "lost_older"),
        ("higher priority replaces lower", RULE, held("terraform"), "discovery", True, "won_priority"),
        ("higher priority wins even when older", RULE, held("cmdb", -1), "discovery", True, "won_priority"),
        (
            "lower priority loses to a fresh holder",
            RULE,
            held("discovery", 1),
            "terraform",
            False,
            "lost_priority",
        ),
        (
            "lower priority replaces a stale holder",
            RULE,
            held("discovery", 3),
            "terraform",
            True,
            "won_stale",
        ),
        (
            "a holder without refresh never goes stale",
            RULE,
            held("terraform", 900),
            "cmdb",
            False,
            "lost_priority",
        ),
        ("an unlisted source ranks last", RULE, held("cmdb"), "spreadsheet", False, "lost_priority"),
        ("two unlisted sources: newest", RULE, held("sheet-a"), "sheet-b", True, "won_newest"),
    ],
)
def test_decide(
    name: str, rule: ReconcileRule | None, holder: FieldSource | None, source: str, won: bool, outcome: str
) -> None:
    assert decide(rule, holder, source, T0) == (won, outcome)


def test_a_rule_naming_the_class_comes_before_a_wildcard_one() -> None:
    rules = load_rules().changes
    pod = rules.reconcile_rule("cmdb_ci_kubernetes_pod", "relationships")
    assert pod is not None and pod.priority[0] == "kubernetes"
    assert rules.reconcile_rule("server", "relationships") is None  # no rule: newest wins
    hostname = rules.reconcile_rule("server", "attributes.version")
    assert hostname is not None and hostname.priority[0] == "discovery"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"priority": ["discovery", "discovery"]}, "twice"),
        ({"refresh": {"terraform": 60}}, "not in priority"),
        ({"refresh": {"discovery": 0}}, "positive"),
    ],
)
def test_bad_rules_are_refused(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ReconcileRule.model_validate({"fields": ["hostname"], "priority": ["discovery"], **change})


def test_a_rule_naming_a_source_without_a_grant_is_refused() -> None:
    data = load_rules().changes.model_dump()
    data["reconcile"][0]["priority"].append("spreadsheet")
    with pytest.raises(ValueError, match="spreadsheet"):
        ChangeRules.model_validate(data)


STAGE = CIUpdateValidator(load_rules().changes)


def ci(source: str, at: datetime, **kw: Any) -> ConfigurationItem:
    data = {
        "ci_id": "db-1",
        "name": "db-1",
        "ci_class": "server",
        "hostname": "db-1",
        "service": "billing",
        "owner_group": "team-db",
        "attributes": {"os": "debian 12"},
        "source_system": source,
        "updated_at": at,
    }
    return ConfigurationItem.model_validate({**data, **kw})


def test_three_sources_reconcile_field_by_field() -> None:
    """The CMDB of record creates db-1; discovery (first for hostname and attributes) and terraform
    (first for service) report over two days; every step is deterministic and leaves provenance."""
    steps: list[tuple[str, ConfigurationItem, dict[str, str]]] = []
    first = STAGE.check(None, ci("servicenow-cmdb", T0), T0)
    assert first.accepted and first.ci is not None
    current = first.ci
    assert current.provenance["hostname"] == FieldSource(source="servicenow-cmdb", at=T0)

    def step(update: ConfigurationItem, now: datetime) -> dict[str, str]:
        nonlocal current
        verdict = STAGE.check(current, update, now)
        assert verdict.accepted, verdict.reason
        if verdict.ci is not None:
            current = verdict.ci
        outcome = {d.path: d.outcome for d in verdict.decisions}
        steps.append((update.source_system, current, outcome))
        return outcome

    # discovery sees another host name and OS: it outranks the CMDB for both.
    t1 = T0 + HOUR
    assert step(ci("discovery", t1, hostname="db-1.prod", attributes={"os": "debian 13"}), t1) == {
        "hostname": "won_priority",
        "attributes.os": "won_priority",
    }
    # terraform an hour later: its host name loses to discovery's (fresh), its service wins.
    t2 = t1 + HOUR
    lost = STAGE.check(current, ci("terraform", t2, hostname="db-1.tf", service="ledger"), t2)
    assert {d.path: d.outcome for d in lost.decisions} == {
        "hostname": "lost_priority",
        "service": "won_priority",
        "attributes.os": "lost_priority",  # terraform's record lacks discovery's attribute
    }
    assert next((d.path, d.offered, d.kept, d.holder) for d in lost.lost if d.path == "hostname") == (
        "hostname",
        "db-1.tf",
        "db-1.prod",
        FieldSource(source="discovery", at=t1),
    )
    assert lost.ci is not None
    current = lost.ci
    assert (current.hostname, current.service, current.attributes) == (
        "db-1.prod",
        "ledger",
        {"os": "debian 13"},
    )
    assert current.provenance["service"].source == "terraform"
    assert lost.changed == ["service"] and lost.change is not None  # a significant change, as before
    # The CMDB of record cannot take back the service terraform set (terraform is first).
    t3 = t2 + HOUR
    assert step(
        ci("servicenow-cmdb", t3, hostname="db-1.prod", service="billing", attributes={"os": "debian 13"}), t3
    ) == {"service": "lost_priority"}
    assert current.service == "ledger"
    # discovery confirms its host name a day later: no change, but its claim is refreshed.
    t4 = t1 + 24 * HOUR
    assert (
        step(ci("discovery", t4, hostname="db-1.prod", service="ledger", attributes={"os": "debian 13"}), t4)
        == {}
    )
    assert current.provenance["hostname"] == FieldSource(source="discovery", at=t4)
    # Two days without discovery: its host name is stale and terraform's replaces it.
    t5 = t4 + 49 * HOUR
    assert step(
        ci("terraform", t5, hostname="db-1.tf", service="ledger", attributes={"os": "debian 13"}), t5
    ) == {"hostname": "won_stale"}
    assert current.hostname == "db-1.tf" and current.provenance["hostname"] == FieldSource(
        source="terraform", at=t5
    )
    # owner_group is the CMDB's alone: a granted source cannot take it (terraform has no grant).
    assert current.provenance["owner_group"].source == "servicenow-cmdb"
    # The same history replayed decides the same (only the records decide).
    assert [s[2] for s in steps] == [
        {"hostname": "won_priority", "attributes.os": "won_priority"},
        {"service": "lost_priority"},
        {},
        {"hostname": "won_stale"},
    ]


def test_an_update_that_loses_everything_writes_nothing() -> None:
    created = STAGE.check(None, ci("discovery", T0, owner_group="team-db"), T0)
    assert created.ci is not None
    # kubernetes ranks below discovery for attributes; discovery's value is fresh.
    verdict = STAGE.check(created.ci, ci("kubernetes", T0 + HOUR, attributes={"os": "alpine"}), T0 + HOUR)
    assert verdict.accepted and [d.outcome for d in verdict.decisions] == ["lost_priority"]
    assert verdict.ci is None and verdict.change is None and verdict.changed == []


def test_a_version_without_provenance_is_held_by_its_writer() -> None:
    """cmdb.ci records written before provenance existed: every value belongs to their source."""
    legacy = ci("terraform", T0)
    verdict = STAGE.check(legacy, ci("kubernetes", T0 + HOUR, attributes={"os": "alpine"}), T0 + HOUR)
    assert [(d.outcome, d.holder) for d in verdict.decisions] == [
        ("won_priority", FieldSource(source="terraform", at=T0))
    ]


def test_a_report_from_the_future_counts_as_now() -> None:
    created = STAGE.check(None, ci("servicenow-cmdb", T0), T0)
    assert created.ci is not None
    ahead = STAGE.check(created.ci, ci("discovery", T0 + 10 * HOUR, hostname="x"), T0 + HOUR)
    assert ahead.ci is not None and ahead.ci.provenance["hostname"].at == T0 + HOUR
