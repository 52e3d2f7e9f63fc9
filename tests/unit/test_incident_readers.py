"""Incident state read back from the ITSMs' documented APIs (devitsm, the Jira emulator): what a
person did there (resolved, assigned, reprioritised) and what the pipeline did, told apart."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from connectors.devitsm.server import Account, create_devitsm
from connectors.devitsm.store import Store
from connectors.emulators.jira import create_jira
from connectors.sinks.http import RetryPolicy
from connectors.sinks.jira.config import JiraConfig
from connectors.sinks.jira.sink import JiraSink
from connectors.sinks.servicenow.client import ServiceNowClient
from connectors.sinks.servicenow.config import ServiceNowConfig
from connectors.sinks.servicenow.sink import ServiceNowSink
from connectors.sources.incidents.base import with_history
from connectors.sources.incidents.jira import JiraIncidents
from connectors.sources.incidents.servicenow import ServiceNowIncidents
from streams.core.models import IncidentAction, IncidentCommand, IncidentStatus
from tests.servers import serve

PERSON = Account("ada", "ada-pw", frozenset({"itil"}))


def policy() -> RetryPolicy:
    return RetryPolicy(budget_seconds=2, initial_seconds=0.01)


def command(action: IncidentAction, cid: str = "itsmp-f1", **kw: object) -> IncidentCommand:
    fields: dict[str, object] = {
        "command_id": f"c-{action}-{kw.pop('n', 1)}",
        "correlation_id": cid,
        "action": action,
        "short_description": "Disk full on db-1",
        "description": "97% used",
        "impact": 2,
        "urgency": 2,
        "issued_at": datetime.now(UTC),
    }
    return IncidentCommand.model_validate(fields | kw)


@pytest.fixture
def devitsm() -> Iterator[tuple[str, Store]]:
    store = Store(":memory:")
    with serve(create_devitsm(store, "pipeline", "pw", accounts=(PERSON,))) as url:
        yield url, store
    store.close()


def test_servicenow_a_person_resolving_assigning_and_reprioritising_is_told_from_the_pipeline(
    devitsm: tuple[str, Store],
) -> None:
    url, store = devitsm
    config = ServiceNowConfig(url, "pipeline", SecretStr("pw"), True, 5.0)
    sink = ServiceNowSink(ServiceNowClient(config, policy()))
    reader = ServiceNowIncidents(ServiceNowClient(config, policy()))
    sink.handle(command(IncidentAction.OPEN))
    (first,) = reader.changed_since(None)
    first = with_history(reader, None, first)
    assert (first.status, first.state, first.number, first.person_changed) == (
        IncidentStatus.OPEN,
        "New",
        "INC0010001",
        [],
    )
    assert first.updated_by == "pipeline" and first.opened_at is not None

    # The pipeline's own update (a work note) changes nothing a person owns.
    sink.handle(command(IncidentAction.UPDATE, n=2, impact=None, urgency=None))
    (noted,) = reader.changed_since(first.updated_at)
    assert with_history(reader, first, noted).person_changed == []

    # Ada assigns it to herself and raises its impact (its priority), then resolves it.
    ada = store.by_field("sys_user", "user_name", "ada")
    person = httpx.Client(base_url=url, auth=("ada", "ada-pw"))
    patched = person.patch(
        f"/api/now/table/incident/{first.itsm_id}", json={"assigned_to": ada, "impact": "1"}
    )
    assert patched.status_code == 200
    (changed,) = reader.changed_since(first.updated_at)
    changed = with_history(reader, first, changed)
    assert changed.person_changed == ["assignment", "priority"] and changed.assigned_to == "ada"
    assert changed.updated_by == "ada" and changed.priority == "2"
    person.patch(f"/api/now/table/incident/{first.itsm_id}", json={"state": "6", "close_code": "Solved"})
    (resolved,) = reader.changed_since(changed.updated_at)
    resolved = with_history(reader, changed, resolved)
    assert (resolved.status, resolved.resolved_by, resolved.resolved_by_pipeline) == (
        IncidentStatus.RESOLVED,
        "ada",
        False,
    )
    assert resolved.person_changed == ["assignment", "priority"]  # sticky
    assert resolved.time_to_restore_seconds is not None and resolved.time_to_restore_seconds >= 0


def test_servicenow_a_resolution_by_the_pipeline_is_marked_as_such(devitsm: tuple[str, Store]) -> None:
    url, _ = devitsm
    config = ServiceNowConfig(url, "pipeline", SecretStr("pw"), True, 5.0)
    sink = ServiceNowSink(ServiceNowClient(config, policy()))
    reader = ServiceNowIncidents(ServiceNowClient(config, policy()))
    sink.handle(command(IncidentAction.OPEN))
    sink.handle(command(IncidentAction.RESOLVE, n=3))
    (record,) = reader.changed_since(None)
    assert record.status is IncidentStatus.RESOLVED and record.resolved_by_pipeline
    # Only incidents the pipeline opened: one a person opened is not read.
    httpx.post(f"{url}/api/now/table/incident", json={"short_description": "by hand"}, auth=("ada", "ada-pw"))
    assert [r.correlation_id for r in reader.changed_since(None)] == ["itsmp-f1"]


@pytest.mark.parametrize("deployment", ["cloud", "datacenter"])
def test_jira_reads_status_assignee_priority_and_the_correlation_id(deployment: str) -> None:
    with serve(create_jira("bot@example.com", "tok", deployment=deployment)) as url:
        config = JiraConfig(
            url, "bot@example.com", SecretStr("tok"), "1", "10", "11", "Resolve this issue", "Reopen issue",
            True, 5.0, deployment,
        )  # fmt: skip
        sink = JiraSink(config, policy())
        reader = JiraIncidents(config, policy())
        opened = sink.handle_incident(command(IncidentAction.OPEN))
        (record,) = reader.changed_since(None)
        assert (record.correlation_id, record.number, record.status) == (
            "itsmp-f1",
            opened.itsm_number,
            IncidentStatus.OPEN,
        )
        api = "3" if deployment == "cloud" else "2"
        person = httpx.Client(base_url=url, auth=("bot@example.com", "tok"))
        edit = {"fields": {"assignee": {"accountId": "ada"}, "priority": {"name": "Highest"}}}
        assert person.put(f"/rest/api/{api}/issue/{opened.itsm_number}", json=edit).status_code == 204
        (edited,) = reader.changed_since(record.updated_at)
        edited = with_history(reader, record, edited)
        assert edited.assigned_to == "ada" and edited.priority == "Highest"
        assert edited.person_changed == ["assignment", "priority"]  # the Jira sink never edits fields
        sink.handle_incident(command(IncidentAction.RESOLVE, n=2))
        (resolved,) = reader.changed_since(record.updated_at - timedelta(minutes=5))
        assert resolved.status is IncidentStatus.RESOLVED and resolved.resolved_at is not None
        assert with_history(reader, edited, resolved).time_to_restore_seconds is not None


def test_first_seen_after_a_person_changed_it_the_priority_is_taken_as_theirs(
    devitsm: tuple[str, Store],
) -> None:
    url, _ = devitsm
    config = ServiceNowConfig(url, "pipeline", SecretStr("pw"), True, 5.0)
    ServiceNowSink(ServiceNowClient(config, policy())).handle(command(IncidentAction.OPEN))
    reader = ServiceNowIncidents(ServiceNowClient(config, policy()))
    (seen,) = reader.changed_since(None)
    person = httpx.Client(base_url=url, auth=("ada", "ada-pw"))
    person.patch(f"/api/now/table/incident/{seen.itsm_id}", json={"work_notes": "looking"})
    (first,) = reader.changed_since(None)
    assert with_history(reader, None, first).person_changed == ["priority"]
    assert with_history(reader, None, seen).person_changed == []  # the pipeline's own write


def test_an_incident_that_cannot_be_read_is_counted_and_skipped_the_others_still_come(
    devitsm: tuple[str, Store],
) -> None:
    from prometheus_client import REGISTRY

    url, store = devitsm
    config = ServiceNowConfig(url, "pipeline", SecretStr("pw"), True, 5.0)
    sink = ServiceNowSink(ServiceNowClient(config, policy()))
    sink.handle(command(IncidentAction.OPEN, cid="itsmp-bad"))
    sink.handle(command(IncidentAction.OPEN, cid="itsmp-good"))
    bad = store.by_field("incident", "correlation_id", "itsmp-bad")
    assert bad is not None
    store.db.execute("UPDATE incident SET opened_at = 'not a date' WHERE sys_id = ?", (bad,))
    before = (
        REGISTRY.get_sample_value("itsm_pipeline_incidents_unreadable_total", {"target": "servicenow"}) or 0
    )
    reader = ServiceNowIncidents(ServiceNowClient(config, policy()))
    assert [r.correlation_id for r in reader.changed_since(None)] == ["itsmp-good"]
    after = REGISTRY.get_sample_value("itsm_pipeline_incidents_unreadable_total", {"target": "servicenow"})
    assert after == before + 1
