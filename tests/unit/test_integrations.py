"""The integration inventory: the shipped file is valid and agrees with ops/acls.toml; the audit's
classification of what the broker shows, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ops.acls import Declared
from ops.integrations import (
    DEFAULT,
    Integration,
    Inventory,
    InventoryError,
    Live,
    audit,
    document,
    load,
    set_status,
)
from streams.core.settings import Settings

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SETTINGS = Settings(topic_prefix="p.", app_id="app")
SHIPPED = load(DEFAULT, Declared.load().principals)


def test_the_shipped_inventory_covers_every_principal_and_topic() -> None:
    principals = {p for i in SHIPPED.integration for p in i.principals}
    assert principals == set(Declared.load().principals)
    from streams.core.topics import TOPICS

    used = {t for i in SHIPPED.integration for t in (*i.reads, *i.writes, *i.external_writes)}
    assert {t.name for t in TOPICS} <= used


ONE = 'version = 1\n[[integration]]\nname = "x"\nowner = "o"\nbusiness_service = "b"\nserves = ["i"]\n'


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            ONE + 'reads = ["nope"]\n',
            "not declared",
        ),
        (
            ONE + 'principals = ["ghost"]\n',
            "not in ops/acls.toml",
        ),
        (
            ONE + 'excludes = { i = "why" }\n',
            "both served and excluded",
        ),
        (
            ONE + 'status = "gone"\n',
            "status",
        ),
        ("version = 1\n", "integration"),
        ("version = [", "not valid TOML"),
    ],
)
def test_a_bad_inventory_is_refused_with_the_reason(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "integrations.toml"
    path.write_text(text)
    with pytest.raises(InventoryError, match=problem):
        load(path, Declared.load().principals)


def inv(*extra: Integration) -> Inventory:
    base = [
        Integration(
            name="ingest",
            owner="sre",
            business_service="m",
            serves=["event"],
            writes=["alerts.raw"],
            producers=["gateway"],
            consumer_groups=["{app_id}-view-*"],
        ),
        Integration(
            name="sink",
            owner="itsm",
            business_service="i",
            serves=["incident"],
            reads=["itsm.incident.commands"],
            consumer_groups=["{app_id}-sink-x"],
            producers=["sink-x"],
            principals=["sink-x"],
        ),
        Integration(
            name="cmdb",
            owner="cmdb",
            business_service="c",
            serves=["config"],
            external_writes=["cmdb.ci.updates"],
        ),
    ]
    return Inventory(version=1, integration=[*base, *extra])


RECENT = NOW - timedelta(minutes=5)
OLD = NOW - timedelta(days=30)


@pytest.mark.parametrize(
    ("name", "live", "extra", "expected"),
    [
        (
            "everything declared and working",
            Live(
                groups={"app-sink-x": ("STABLE", ["itsm-sink-x"])},
                producers={"p.alerts.raw": {"gateway": RECENT}, "p.cmdb.ci.updates": {None: RECENT}},
            ),
            [],
            [],
        ),
        (
            "a consumer group nobody declared",
            Live(
                groups={"app-sink-x": ("STABLE", ["a"]), "etl-nightly": ("STABLE", ["etl"])},
                producers={"p.alerts.raw": {"gateway": RECENT}, "p.cmdb.ci.updates": {None: RECENT}},
            ),
            [],
            [("shadow_group", "etl-nightly", "")],
        ),
        (
            "an undeclared producer and unattributed records",
            Live(
                groups={"app-sink-x": ("STABLE", ["a"])},
                producers={
                    "p.alerts.raw": {"gateway": RECENT, "zabbix-bridge": RECENT},
                    "p.itsm.results": {None: RECENT},
                    "p.cmdb.ci.updates": {None: RECENT},
                },
            ),
            [],
            [("shadow_producer", "p.alerts.raw", ""), ("shadow_producer", "p.itsm.results", "")],
        ),
        (
            "declared but idle: no member, producer silent for a month",
            Live(
                groups={"app-sink-x": ("EMPTY", [])},
                producers={
                    "p.alerts.raw": {"gateway": RECENT},
                    "p.cmdb.ci.updates": {None: RECENT},
                    "p.itsm.results": {"sink-x": OLD},
                },
            ),
            [],
            [("dead", "sink", "sink")],
        ),
        (
            "an external writer gone quiet is dead too",
            Live(groups={"app-sink-x": ("STABLE", ["a"])}, producers={"p.alerts.raw": {"gateway": RECENT}}),
            [],
            [("dead", "cmdb", "cmdb")],
        ),
        (
            "retired but still consuming",
            Live(
                groups={"app-sink-x": ("STABLE", ["a"]), "old-export": ("STABLE", ["x"])},
                producers={"p.alerts.raw": {"gateway": RECENT}, "p.cmdb.ci.updates": {None: RECENT}},
            ),
            [
                Integration(
                    name="export",
                    owner="o",
                    business_service="b",
                    serves=["x"],
                    consumer_groups=["old-export"],
                    status="retired",
                )
            ],
            [("retired_live", "old-export", "export")],
        ),
        (
            "principals with grants nobody declared; topics nobody uses; other prefixes ignored",
            Live(
                groups={"app-sink-x": ("STABLE", ["a"])},
                producers={"p.alerts.raw": {"gateway": RECENT}, "p.cmdb.ci.updates": {None: RECENT}},
                principals={"sink-x", "gateway", "admin", "legacy-bot"},
                topics={"p.alerts.raw", "p.scratch", "q.other", "__consumer_offsets", "app-table-changelog"},
            ),
            [],
            [("shadow_principal", "legacy-bot", ""), ("shadow_topic", "p.scratch", "")],
        ),
    ],
)
def test_audit(name: str, live: Live, extra: list[Integration], expected: list[tuple[str, str, str]]) -> None:
    found = audit(inv(*extra), live, SETTINGS, NOW)
    got = [
        (f.kind, f.subject, f.integration) for f in found if f.kind != "shadow_principal" or live.principals
    ]
    # gateway is undeclared as a principal in this inventory: only the cases that list principals see it.
    got = [g for g in got if g != ("shadow_principal", "gateway", "")]
    assert got == sorted(expected), [f.detail for f in found]


@pytest.mark.parametrize(
    ("endpoint", "environment", "flagged"),
    [
        (
            {"api": "jira-cloud-rest", "version": "3", "setting": "ITSM_JIRA_URL"},
            {"ITSM_JIRA_URL": "https://acme.atlassian.net", "ITSM_JIRA_DEPLOYMENT": "cloud"},
            False,
        ),
        (
            {"api": "jira-cloud-rest", "version": "3", "setting": "ITSM_JIRA_URL"},
            {"ITSM_JIRA_URL": "https://acme.atlassian.net", "ITSM_JIRA_DEPLOYMENT": "datacenter"},
            True,
        ),
        ({"api": "jira-datacenter-rest", "version": "2", "url": "https://acme.atlassian.net"}, {}, True),
        ({"api": "jira-datacenter-rest", "version": "2", "url": "https://jira.acme.internal"}, {}, False),
        ({"api": "alertmanager-api", "version": "v1"}, {}, True),
        ({"api": "alertmanager-api", "version": "v2"}, {}, False),
    ],
)
def test_deprecated_api_versions_in_use_are_reported(
    endpoint: dict[str, str], environment: dict[str, str], flagged: bool
) -> None:
    i = Integration.model_validate(
        {
            "name": "e",
            "owner": "o",
            "business_service": "b",
            "serves": ["x"],
            "endpoints": [{"name": "api", "direction": "out", **endpoint}],
        }
    )
    found = [
        f
        for f in audit(Inventory(version=1, integration=[i]), Live(), SETTINGS, NOW, environment)
        if f.kind == "deprecated_api"
    ]
    assert bool(found) is flagged, found


def test_the_document_names_who_writes_and_reads_each_topic() -> None:
    text = document(SHIPPED, SETTINGS)
    assert "| p.alerts.raw | alert-ingest, prometheus-poll, operations | stream-worker, cmdb-drift |" in text
    assert "| app-sink-servicenow | servicenow |" in text
    assert "problem management (problems are raised by people in the ITSM" in text


def test_set_status_rewrites_only_that_block(tmp_path: Path) -> None:
    path = tmp_path / "i.toml"
    path.write_text(DEFAULT.read_text())
    assert set_status(path, "jira", "retired")
    again = load(path, Declared.load().principals)
    assert [i.name for i in again.integration if i.status == "retired"] == ["jira"]
    assert path.read_text().count("# The integration inventory") == 1
