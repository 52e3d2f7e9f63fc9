"""Contract tests: the ServiceNow and Jira sinks against emulators of their APIs, over the whole status table.

The Jira emulator (connectors/emulators/jira.py) and the development ITSM follow the vendors' public
API documentation; they are emulators, not the products. RT is tested against the real RT.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr

from connectors.devitsm.server import create_devitsm
from connectors.devitsm.store import Store
from connectors.emulators.jira import create_jira
from connectors.sinks.http import RetryPolicy, SinkError, classify
from connectors.sinks.jira.config import JiraConfig
from connectors.sinks.jira.mapping import correlation_label
from connectors.sinks.jira.sink import JiraSink
from connectors.sinks.servicenow.client import ServiceNowClient
from connectors.sinks.servicenow.config import ServiceNowConfig
from connectors.sinks.servicenow.sink import ServiceNowSink
from connectors.sources.incidents.jira import adf_text
from streams.core.models import ChangeCommand, IncidentAction, IncidentCommand, SinkOutcome
from tests.servers import serve

STATUSES = [400, 401, 403, 404, 405, 408, 409, 410, 413, 415, 422, 429, 500, 502, 503, 504]


def incident(action: IncidentAction, cid: str = "itsmp-c1", **kw: object) -> IncidentCommand:
    return IncidentCommand.model_validate(
        dict(
            command_id=f"c-{action}",
            correlation_id=cid,
            action=action,
            short_description="Disk full on db-1",
            impact=1,
            urgency=2,
            issued_at=datetime(2026, 11, 27, tzinfo=UTC),
            **kw,
        )
    )


def policy() -> RetryPolicy:
    return RetryPolicy(budget_seconds=5, initial_seconds=0.01, max_seconds=0.05)


@pytest.fixture
def jira() -> Iterator[tuple[str, JiraSink]]:
    with serve(create_jira("bot@example.com", "api-token")) as url:
        cfg = JiraConfig(
            url,
            "bot@example.com",
            SecretStr("api-token"),
            "1",
            "10",
            "11",
            "Resolve this issue",
            "Reopen issue",
            True,
            5.0,
        )
        yield url, JiraSink(cfg, policy())


@pytest.fixture
def servicenow() -> Iterator[tuple[str, ServiceNowSink]]:
    store = Store(":memory:")
    with serve(create_devitsm(store, "pipeline", "pw", faults=True)) as url:
        cfg = ServiceNowConfig(url, "pipeline", SecretStr("pw"), True, 5.0)
        yield url, ServiceNowSink(ServiceNowClient(cfg, policy()))
    store.close()


def jira_issues(url: str, cid: str) -> list[dict[str, object]]:
    r = httpx.get(
        f"{url}/rest/api/3/search/jql",
        params={"jql": f'labels = "{correlation_label(cid)}"', "fields": "*all"},
        auth=("bot@example.com", "api-token"),
    )
    return list(r.json()["issues"])


def test_jira_open_is_idempotent_through_the_label(jira: tuple[str, JiraSink]) -> None:
    url, sink = jira
    first = sink.handle_incident(incident(IncidentAction.OPEN))
    again = sink.handle_incident(incident(IncidentAction.OPEN))
    assert (first.outcome, again.outcome) == (SinkOutcome.CREATED, SinkOutcome.UPDATED)
    assert first.itsm_number == "SD-1" and again.itsm_number == "SD-1"
    (issue,) = jira_issues(url, "itsmp-c1")
    fields = issue["fields"]  # type: ignore[index]
    # REST API 3 answers rich text as ADF (adf_text reads it as the sync does).
    assert fields["summary"] == "Disk full on db-1"
    assert "Correlation id: itsmp-c1" in adf_text(fields["description"])
    assert fields["comment"]["total"] == 1


def test_jira_resolve_reopen_and_noop(jira: tuple[str, JiraSink]) -> None:
    url, sink = jira
    sink.handle_incident(incident(IncidentAction.OPEN))
    assert (
        sink.handle_incident(incident(IncidentAction.RESOLVE, resolution_note="cleared")).outcome
        is SinkOutcome.RESOLVED
    )
    assert sink.handle_incident(incident(IncidentAction.RESOLVE)).outcome is SinkOutcome.NOOP
    assert (
        sink.handle_incident(incident(IncidentAction.UPDATE, work_note="late")).outcome is SinkOutcome.UPDATED
    )
    (issue,) = jira_issues(url, "itsmp-c1")
    assert issue["fields"]["status"]["name"] == "Resolved"  # type: ignore[index]
    reopened = sink.handle_incident(incident(IncidentAction.OPEN))
    assert reopened.message == "reopened"
    (issue,) = jira_issues(url, "itsmp-c1")
    assert issue["fields"]["status"]["name"] == "Waiting for support"  # type: ignore[index]


def test_jira_changes_are_created_enriched_and_closed(jira: tuple[str, JiraSink]) -> None:
    url, sink = jira

    def cc(action: str, **kw: object) -> ChangeCommand:
        return ChangeCommand.model_validate(
            dict(
                command_id=f"cc-{action}",
                correlation_id="chg-9",
                action=action,
                change_type="NORMAL",
                short_description="Deploy 421",
                issued_at=datetime(2026, 11, 27, tzinfo=UTC),
                **kw,
            )
        )

    outcomes = [
        sink.handle_change(cc("CREATE")).outcome,
        sink.handle_change(cc("UPDATE", commit_ids=["a1b2"], build_number="421")).outcome,
        sink.handle_change(cc("CLOSE", close_code="SUCCESSFUL", deploy_duration_ms=61000)).outcome,
    ]
    assert outcomes == [SinkOutcome.CREATED, SinkOutcome.UPDATED, SinkOutcome.RESOLVED]
    (issue,) = jira_issues(url, "chg-9")
    comments = [c["body"] for c in issue["fields"]["comment"]["comments"]]  # type: ignore[index]
    assert "Commits: a1b2" in comments[0] and "Outcome: successful" in comments[1]


def test_jira_addresses_a_change_by_its_issue_key_when_given(jira: tuple[str, JiraSink]) -> None:
    url, sink = jira

    def cc(action: str, cid: str, **kw: object) -> ChangeCommand:
        return ChangeCommand.model_validate(
            dict(
                command_id=f"cc-{action}-{cid}",
                correlation_id=cid,
                action=action,
                change_type="NORMAL",
                short_description="Deploy 421",
                issued_at=datetime(2026, 11, 27, tzinfo=UTC),
                **kw,
            )
        )

    made = sink.handle_change(cc("CREATE", "made-by-a-person"))
    closed = sink.handle_change(cc("CLOSE", "change-x", close_code="SUCCESSFUL", itsm_ref=made.itsm_number))
    assert closed.outcome is SinkOutcome.RESOLVED and closed.itsm_number == made.itsm_number
    assert jira_issues(url, "change-x") == []  # nothing created under the new correlation id
    with pytest.raises(SinkError, match="has no change"):
        sink.handle_change(cc("UPDATE", "change-y", itsm_ref="ITSM-999"))


def test_jira_refuses_unknown_request_types_as_validation(jira: tuple[str, JiraSink]) -> None:
    url, sink = jira
    sink.config = JiraConfig(
        url,
        "bot@example.com",
        SecretStr("api-token"),
        "1",
        "99",
        "11",
        "Resolve this issue",
        "Reopen issue",
        True,
        5.0,
    )
    with pytest.raises(SinkError) as info:
        sink.handle_incident(incident(IncidentAction.OPEN))
    assert info.value.error_class.value == "validation" and "request type '99' does not exist" in str(
        info.value
    )


def inject(url: str, status: int, count: int = 1) -> None:
    spec = {"status": status, "count": count}
    if status == 429:
        spec["retry_after"] = 0
    assert httpx.post(f"{url}/__faults", json=spec).status_code == 200


def records(name: str, url: str) -> int:
    """How many records the emulated ITSM holds for the test's correlation id."""
    if name == "jira":
        return len(jira_issues(url, "itsmp-c1"))
    rows = httpx.get(
        f"{url}/api/now/table/incident",
        auth=("pipeline", "pw"),
        params={"sysparm_query": "correlation_id=itsmp-c1"},
    ).json()["result"]
    return len(rows)


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("itsm", ["jira", "servicenow"])
def test_the_sinks_follow_the_status_table(request: pytest.FixtureRequest, itsm: str, status: int) -> None:
    url, sink = request.getfixturevalue(itsm)
    inject(url, status)
    verdict = classify(status)
    assert verdict is not None
    if verdict.retryable:
        result = sink.handle_incident(incident(IncidentAction.OPEN))
        assert result.outcome is SinkOutcome.CREATED and result.attempts >= 3  # failed lookup, lookup, create
        assert records(itsm, url) == 1
    else:
        with pytest.raises(SinkError) as info:
            sink.handle_incident(incident(IncidentAction.OPEN))
        assert info.value.error_class is verdict.error_class and not info.value.retryable
        assert info.value.attempts == 1 and records(itsm, url) == 0


def test_the_resolved_policy_new_opens_a_new_record_on_every_itsm(
    jira: tuple[str, JiraSink], servicenow: tuple[str, ServiceNowSink]
) -> None:
    jurl, jsink = jira
    surl, ssink = servicenow
    jsink.resolved_policy = ssink.resolved_policy = "new"
    for s in (jsink, ssink):
        s.handle_incident(incident(IncidentAction.OPEN))
        s.handle_incident(incident(IncidentAction.RESOLVE))
        assert s.handle_incident(incident(IncidentAction.OPEN)).outcome is SinkOutcome.CREATED
        # Later commands act on the newest record.
        assert s.handle_incident(incident(IncidentAction.RESOLVE)).outcome is SinkOutcome.RESOLVED
    assert len(jira_issues(jurl, "itsmp-c1")) == 2
    rows = httpx.get(
        f"{surl}/api/now/table/incident",
        auth=("pipeline", "pw"),
        params={"sysparm_query": "correlation_id=itsmp-c1"},
    ).json()["result"]
    assert sorted(r["state"] for r in rows) == ["6", "6"]


def test_jira_finds_a_known_request_by_its_key(jira: tuple[str, JiraSink]) -> None:
    from prometheus_client import REGISTRY

    from connectors.sinks.known import KnownIds

    _url, sink = jira
    sink.known = KnownIds("jira")
    created = sink.handle_incident(incident(IncidentAction.OPEN))
    sink.known.learn(created)
    before = (
        REGISTRY.get_sample_value("itsm_pipeline_sink_lookups_total", {"target": "jira", "via": "known"}) or 0
    )
    assert sink.handle_incident(incident(IncidentAction.RESOLVE)).outcome is SinkOutcome.RESOLVED
    assert (
        REGISTRY.get_sample_value("itsm_pipeline_sink_lookups_total", {"target": "jira", "via": "known"})
        == before + 1
    )
