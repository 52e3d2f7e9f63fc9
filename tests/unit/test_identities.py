"""Identity mapping: a change's requested_by becomes an ITSM user through the table, the ITSM's
own users, or the integration user; each outcome counted, the original kept in the record."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from connectors.devitsm.store import Store
from connectors.identities import Identities, IdentitiesError, IdentitiesFile
from connectors.sinks.http import RetryPolicy
from connectors.sinks.servicenow.client import ServiceNowClient
from connectors.sinks.servicenow.config import ServiceNowConfig
from connectors.sinks.servicenow.sink import ServiceNowSink
from tests.unit.test_servicenow_sink import PASSWORD, change, changes, itsm_store, itsm_url

__all__ = ["itsm_store", "itsm_url"]  # fixtures

TABLE = """
integration_user = "svc.itsm"
[users]
"Jane.Doe@Example.com" = "jane.doe"
"release-bot" = "svc.release"
[targets.jira]
integration_user = "jira-bot"
"""


def counted(outcome: str) -> float:
    labels = {"target": "servicenow", "field": "requested_by", "outcome": outcome}
    return REGISTRY.get_sample_value("itsm_pipeline_identities_total", labels) or 0.0


def sink_with(url: str, table: Path | None) -> ServiceNowSink:
    config = ServiceNowConfig(url, "pipeline", SecretStr(PASSWORD), True, 5.0)
    identities = IdentitiesFile(str(table) if table else None)
    if identities.watched is not None:
        identities.watched.interval = 0  # reread on every call in a test
    client = ServiceNowClient(config, RetryPolicy(budget_seconds=2, initial_seconds=0.01))
    return ServiceNowSink(client, identities=identities)


def test_requested_by_is_mapped_found_or_stood_in_for_and_counted(
    itsm_url: str, itsm_store: Store, tmp_path: Path
) -> None:
    users = {
        name: itsm_store.insert("sys_user", {"user_name": name, "email": email, "active": "true"})["sys_id"]
        for name, email in (
            ("jane.doe", "jane.doe@example.com"),
            ("ops.lead", "ops.lead@example.com"),
            ("svc.itsm", ""),
        )
    }
    table = tmp_path / "identities.toml"
    table.write_text(TABLE)
    sink = sink_with(itsm_url, table)
    before = {o: counted(o) for o in ("mapped", "found", "unmapped")}

    def requested(cid: str, who: str) -> dict[str, str]:
        sink.handle_change(change("CREATE", cid=cid, requested_by=who))
        (rec,) = changes(itsm_url, cid)
        return rec

    by_table = requested("chg-1", "JANE.DOE@example.com")  # case does not matter
    assert by_table["requested_by"] == users["jane.doe"] and "requested_by" not in by_table["description"]
    by_email = requested("chg-2", "ops.lead@example.com")  # not in the table: sys_user's email
    assert by_email["requested_by"] == users["ops.lead"]
    by_name = requested("chg-3", "ops.lead")
    assert by_name["requested_by"] == users["ops.lead"]
    unknown = requested("chg-4", "github-actions")
    assert unknown["requested_by"] == users["svc.itsm"]  # the table's integration user
    assert "requested_by: github-actions (no sys_user user; recorded as svc.itsm)" in unknown["description"]
    mapped_to_nobody = requested("chg-5", "release-bot")  # the table names a user the ITSM lacks
    assert mapped_to_nobody["requested_by"] == users["svc.itsm"]
    assert "release-bot as svc.release (no sys_user user" in mapped_to_nobody["description"]
    assert counted("mapped") == before["mapped"] + 1
    assert counted("found") == before["found"] + 2
    assert counted("unmapped") == before["unmapped"] + 2

    # The table is reread: a new mapping applies to the next change, no restart.
    table.write_text(TABLE + '\n[targets.servicenow.users]\n"github-actions" = "ops.lead"\n')
    assert requested("chg-6", "github-actions")["requested_by"] == users["ops.lead"]
    # A broken edit keeps the last good table.
    table.write_text("[users\n")
    assert requested("chg-7", "github-actions")["requested_by"] == users["ops.lead"]
    watched = sink.binder.identities.watched
    assert watched is not None and "not TOML" in str(watched.error)


def test_without_a_table_the_sinks_own_account_stands_in(itsm_url: str) -> None:
    sink = sink_with(itsm_url, None)
    sink.handle_change(change("CREATE", cid="chg-x", requested_by="someone@example.com"))
    (rec,) = changes(itsm_url, "chg-x")
    # The development ITSM made the sink's account a sys_user; it is the integration user.
    assert rec["requested_by"] and "recorded as pipeline" in rec["description"]


def test_the_table_is_checked_when_it_loads(tmp_path: Path) -> None:
    assert Identities.parse(TABLE, "t").integration("jira", "x") == "jira-bot"
    assert Identities.parse(TABLE, "t").integration("servicenow", "x") == "svc.itsm"
    assert Identities.parse("", "t").integration("servicenow", "own") == "own"
    for text, error in (
        ("[users]\na = 1\n", "maps each identity to an ITSM user name"),
        ("user = 'x'\n", "unknown key"),
        ("[targets.jira]\nfoo = 1\n", "takes users and integration_user"),
    ):
        with pytest.raises(IdentitiesError, match=error):
            Identities.parse(text, "t")
    with pytest.raises(IdentitiesError, match="No such file"):
        IdentitiesFile(str(tmp_path / "missing.toml"))
