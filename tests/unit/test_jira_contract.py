"""Jira as Atlassian documents it: the removed search endpoints answer 410, /rest/api/3/search/jql
returns ids unless fields are asked for, pages with nextPageToken/isLast and lags behind writes;
Data Center keeps /rest/api/2/search. The Jira sink against both, idempotent while search lags."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from connectors.emulators.jira import REMOVED, create_jira
from connectors.sinks.http import RetryPolicy, SinkError
from connectors.sinks.jira.config import JiraConfig
from connectors.sinks.jira.mapping import correlation_label
from connectors.sinks.jira.sink import JiraSink
from streams.core.models import IncidentAction, IncidentCommand, RecordType, SinkOutcome, SinkResult
from tests.servers import serve

AUTH = ("bot@example.com", "api-token")
CREATE = "/rest/servicedeskapi/request"


class Clock:
    """The emulator's index clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def incident(action: IncidentAction, cid: str = "itsmp-lag") -> IncidentCommand:
    return IncidentCommand(
        command_id=f"c-{action}",
        correlation_id=cid,
        action=action,
        short_description="Disk full on db-1",
        issued_at=datetime(2026, 11, 30, tzinfo=UTC),
    )


def config(url: str, deployment: str = "cloud", lag: float = 60.0) -> JiraConfig:
    return JiraConfig(
        url, AUTH[0], SecretStr(AUTH[1]), "1", "10", "11", "Resolve this issue", "Reopen issue", True, 5.0,
        deployment, lag,
    )  # fmt: skip


@pytest.fixture
def cloud() -> Iterator[tuple[str, Clock]]:
    clock = Clock()
    with serve(create_jira(*AUTH, index_delay=30.0, clock=clock)) as url:
        yield url, clock


def create(url: str, label: str) -> dict[str, Any]:
    body = {
        "serviceDeskId": "1",
        "requestTypeId": "10",
        "requestFieldValues": {"summary": "s", "labels": [label]},
    }
    r = httpx.post(f"{url}/rest/servicedeskapi/request", json=body, auth=AUTH)
    assert r.status_code == 201
    return dict(r.json())


def search(url: str, method: str = "GET", **params: Any) -> httpx.Response:
    if method == "POST":
        return httpx.post(f"{url}/rest/api/3/search/jql", json=params, auth=AUTH)
    return httpx.get(f"{url}/rest/api/3/search/jql", params=params, auth=AUTH)


@pytest.mark.parametrize("path", ["/rest/api/3/search", "/rest/api/2/search"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_cloud_answers_410_gone_on_the_removed_search(
    cloud: tuple[str, Clock], path: str, method: str
) -> None:
    # CHANGE-2046: GET/POST /rest/api/{2,3}/search were removed from Jira Cloud.
    url, _ = cloud
    r = httpx.request(method, f"{url}{path}", params={"jql": 'labels = "x"'}, auth=AUTH)
    assert r.status_code == 410
    assert r.json() == {"errorMessages": [REMOVED], "errors": {}}
    assert "/rest/api/3/search/jql" in REMOVED and "CHANGE-2046" in REMOVED


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_search_jql_returns_ids_unless_fields_are_asked_for(cloud: tuple[str, Clock], method: str) -> None:
    url, clock = cloud
    made = create(url, "l1")
    clock.now += 31
    bare = search(url, method, jql='labels = "l1"').json()
    assert bare == {"issues": [{"id": made["issueId"]}], "isLast": True}
    fields = ["labels", "status"] if method == "POST" else "labels,status"
    full = search(url, method, jql='labels = "l1"', fields=fields).json()["issues"][0]
    assert full == {
        "id": made["issueId"],
        "key": made["issueKey"],
        "fields": {
            "labels": ["l1"],
            "status": {"name": "Waiting for support", "statusCategory": {"key": "new"}},
        },
    }


def test_search_jql_pages_with_next_page_token_and_is_last(cloud: tuple[str, Clock]) -> None:
    url, clock = cloud
    ids = [create(url, "many")["issueId"] for _ in range(3)]
    clock.now += 31
    seen, token, pages = [], None, 0
    while True:
        params = {"jql": 'labels = "many" ORDER BY created ASC', "maxResults": 2}
        body = search(url, **(params | ({"nextPageToken": token} if token else {}))).json()
        assert "startAt" not in body and "total" not in body
        seen += [i["id"] for i in body["issues"]]
        pages += 1
        if body["isLast"]:
            assert "nextPageToken" not in body
            break
        token = body["nextPageToken"]
    assert (seen, pages) == (ids, 2)
    assert search(url, jql='labels = "many"', nextPageToken="bm9wZQ==").status_code == 400


def test_a_new_issue_is_searchable_only_after_indexing_unless_reconciled(cloud: tuple[str, Clock]) -> None:
    url, clock = cloud
    made = create(url, "fresh")
    assert search(url, jql='labels = "fresh"').json()["issues"] == []  # eventually consistent
    reconciled = search(url, jql='labels = "fresh"', reconcileIssues=made["issueId"]).json()
    assert reconciled["issues"] == [{"id": made["issueId"]}]
    clock.now += 29
    assert search(url, jql='labels = "fresh"').json()["issues"] == []
    clock.now += 2
    assert search(url, jql='labels = "fresh"').json()["issues"] == [{"id": made["issueId"]}]


def test_a_changed_issue_is_searched_in_its_old_state_until_indexed(cloud: tuple[str, Clock]) -> None:
    url, clock = cloud
    key = create(url, "chg")["issueKey"]
    clock.now += 31
    r = httpx.post(f"{url}/rest/servicedeskapi/request/{key}/transition", json={"id": "761"}, auth=AUTH)
    assert r.status_code == 204
    status = search(url, jql='labels = "chg"', fields="status").json()["issues"][0]["fields"]["status"]
    assert status["name"] == "Waiting for support"  # the index has not caught up
    assert (
        httpx.get(f"{url}/rest/api/3/issue/{key}", auth=AUTH).json()["fields"]["status"]["name"] == "Resolved"
    )
    clock.now += 31
    status = search(url, jql='labels = "chg"', fields="status").json()["issues"][0]["fields"]["status"]
    assert status == {"name": "Resolved", "statusCategory": {"key": "done"}}


def test_errors_have_the_documented_bodies(cloud: tuple[str, Clock]) -> None:
    url, _ = cloud
    denied = httpx.get(
        f"{url}/rest/api/3/search/jql", params={"jql": 'labels = "x"'}, auth=("bot@example.com", "x")
    )
    assert denied.status_code == 401 and set(denied.json()) == {"errorMessages", "errors"}
    bad = httpx.post(f"{url}/rest/servicedeskapi/request", json={"serviceDeskId": "9"}, auth=AUTH)
    assert bad.status_code == 404 and set(bad.json()) == {"errorMessage", "i18nErrorMessage"}


def test_data_center_keeps_rest_api_2_search_with_start_at_and_total() -> None:
    with serve(create_jira(*AUTH, deployment="datacenter")) as url:
        for _ in range(3):
            create(url, "dc")
        body = httpx.get(
            f"{url}/rest/api/2/search",
            params={"jql": 'labels = "dc"', "startAt": 1, "maxResults": 1},
            auth=AUTH,
        ).json()
        assert (body["startAt"], body["maxResults"], body["total"], len(body["issues"])) == (1, 1, 3, 1)
        assert httpx.get(f"{url}/rest/api/3/search/jql", auth=AUTH).status_code == 404  # cloud only
        sink = JiraSink(config(url, "datacenter"), RetryPolicy(budget_seconds=5, initial_seconds=0.01))
        assert sink.client.api == "2"
        first = sink.handle_incident(incident(IncidentAction.OPEN, "itsmp-dc"))
        fresh = JiraSink(config(url, "datacenter"), RetryPolicy(budget_seconds=5, initial_seconds=0.01))
        again = fresh.handle_incident(incident(IncidentAction.OPEN, "itsmp-dc"))
        assert (first.outcome, again.outcome, again.itsm_number) == (
            SinkOutcome.CREATED, SinkOutcome.UPDATED, first.itsm_number,
        )  # fmt: skip


def requests_made(url: str, label: str) -> int:
    found = httpx.get(
        f"{url}/rest/api/3/search/jql",
        params={
            "jql": f'labels = "{label}"',
            "reconcileIssues": ",".join(str(10000 + n) for n in range(1, 50)),
        },
        auth=AUTH,
    )
    return len(found.json()["issues"])


def test_a_lost_create_answer_never_makes_a_second_request_while_search_lags(
    cloud: tuple[str, Clock],
) -> None:
    # The create takes effect but its answer is lost (504); Jira's search shows the request only
    # 30 s later (the emulator's index delay), longer than the sink's whole retry budget.
    url, clock = cloud
    httpx.post(f"{url}/__faults", json={"status": 504, "lost": True, "method": "POST", "path": CREATE})
    policy = RetryPolicy(budget_seconds=1.0, initial_seconds=0.05, max_seconds=0.2)
    sink = JiraSink(config(url, lag=60.0), policy)
    with pytest.raises(SinkError, match="may have succeeded") as failed:
        sink.handle_incident(incident(IncidentAction.OPEN))
    assert failed.value.retryable  # dead-lettered as retryable; a replay later finds the request
    label = correlation_label("itsmp-lag")
    assert requests_made(url, label) == 1
    # Redelivered while the index still lags: still no second request.
    with pytest.raises(SinkError, match="may have succeeded"):
        sink.handle_incident(incident(IncidentAction.OPEN))
    assert requests_made(url, label) == 1
    # Once the index caught up, the OPEN finds the request the lost answer created.
    clock.now += 31
    found = sink.handle_incident(incident(IncidentAction.OPEN))
    assert (found.outcome, found.itsm_number) == (SinkOutcome.UPDATED, "SD-1")
    assert requests_made(url, label) == 1


def test_a_create_that_surely_failed_is_repeated_once_the_lag_has_passed(cloud: tuple[str, Clock]) -> None:
    url, _ = cloud
    httpx.post(f"{url}/__faults", json={"status": 503, "method": "POST", "path": CREATE})  # refused, not done
    policy = RetryPolicy(budget_seconds=2.0, initial_seconds=0.05, max_seconds=0.2)
    sink = JiraSink(config(url, lag=0.3), policy)
    done = sink.handle_incident(incident(IncidentAction.OPEN, "itsmp-retry"))
    assert done.outcome is SinkOutcome.CREATED
    assert requests_made(url, correlation_label("itsmp-retry")) == 1


def test_updates_right_after_a_create_find_it_by_key_not_by_the_lagging_search(
    cloud: tuple[str, Clock],
) -> None:
    url, _ = cloud
    sink = JiraSink(config(url), RetryPolicy(budget_seconds=2, initial_seconds=0.01))
    opened = sink.handle_incident(incident(IncidentAction.OPEN, "itsmp-now"))
    again = sink.handle_incident(incident(IncidentAction.OPEN, "itsmp-now"))
    resolved = sink.handle_incident(incident(IncidentAction.RESOLVE, "itsmp-now"))
    assert (opened.outcome, again.outcome, resolved.outcome) == (
        SinkOutcome.CREATED, SinkOutcome.UPDATED, SinkOutcome.RESOLVED,
    )  # fmt: skip
    assert requests_made(url, correlation_label("itsmp-now")) == 1


def test_a_restarted_sink_does_not_create_again_what_a_dead_one_may_have_created(
    cloud: tuple[str, Clock],
) -> None:
    # The first sink records its create before sending it (on itsm.results, here the KnownIds that
    # every sink process rebuilds from it), the answer is lost, and the process dies. The next one
    # sees the pending create and looks, while Jira's search still lags, instead of creating.
    from connectors.sinks.known import KnownIds

    url, clock = cloud
    results = KnownIds("jira")
    httpx.post(f"{url}/__faults", json={"status": 504, "lost": True, "method": "POST", "path": CREATE})
    policy = RetryPolicy(budget_seconds=0.3, initial_seconds=0.05, max_seconds=0.1)
    dead = JiraSink(config(url), policy, known=results)
    sent: list[str] = []

    def intent(cmd: IncidentCommand) -> None:
        sent.append(cmd.correlation_id)
        results.learn(
            SinkResult(
                command_id=cmd.command_id, correlation_id=cmd.correlation_id, target="jira",
                record_type=RecordType.INCIDENT, outcome=SinkOutcome.PENDING, attempts=0,
                completed_at=datetime.now(UTC),
            )
        )  # fmt: skip

    dead.intent = intent  # what SinkRunner does
    with pytest.raises(SinkError, match="may have succeeded"):
        dead.handle_incident(incident(IncidentAction.OPEN, "itsmp-crash"))
    assert sent == ["itsmp-crash"]
    restarted = JiraSink(config(url), policy, known=results)  # no memory of its own
    with pytest.raises(SinkError, match="may have succeeded"):
        restarted.handle_incident(incident(IncidentAction.OPEN, "itsmp-crash"))
    label = correlation_label("itsmp-crash")
    assert requests_made(url, label) == 1
    clock.now += 31
    found = restarted.handle_incident(incident(IncidentAction.OPEN, "itsmp-crash"))
    assert (found.outcome, found.itsm_number, requests_made(url, label)) == (SinkOutcome.UPDATED, "SD-1", 1)
    results.learn(found)
    assert results.pending_since(RecordType.INCIDENT, "itsmp-crash") is None  # the result supersedes it
