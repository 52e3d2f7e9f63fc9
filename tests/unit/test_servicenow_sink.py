"""ServiceNowSink and the development ITSM together: idempotent open, update, resolve; errors classified."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from connectors.devitsm.server import create_devitsm
from connectors.devitsm.store import Store
from connectors.sinks.http import RetryPolicy, SinkError
from connectors.sinks.servicenow.client import ServiceNowClient
from connectors.sinks.servicenow.columns import CUSTOM_COLUMNS
from connectors.sinks.servicenow.config import ServiceNowConfig
from connectors.sinks.servicenow.sink import ServiceNowSink
from streams.core.dlq import ErrorClass
from streams.core.models import ChangeCommand, IncidentAction, IncidentCommand, SinkOutcome
from tests.servers import serve

PASSWORD = "test-password-1"


@pytest.fixture
def itsm_store() -> Iterator[Store]:
    store = Store(":memory:")
    for column in CUSTOM_COLUMNS:  # provisioned, as `itsmctl itsm provision servicenow` does
        store.insert("sys_dictionary", column.entry())
    yield store
    store.close()


@pytest.fixture
def itsm_url(itsm_store: Store) -> Iterator[str]:
    with serve(create_devitsm(itsm_store, "pipeline", PASSWORD)) as url:
        yield url


def sink_for(url: str, password: str = PASSWORD) -> ServiceNowSink:
    config = ServiceNowConfig(url, "pipeline", SecretStr(password), True, 5.0)
    return ServiceNowSink(ServiceNowClient(config, RetryPolicy(budget_seconds=2, initial_seconds=0.01)))


def command(action: IncidentAction, cid: str = "itsmp-abc", n: int = 1, **kw: object) -> IncidentCommand:
    return IncidentCommand.model_validate(
        dict(
            command_id=f"cmd-{action}-{n}",
            correlation_id=cid,
            action=action,
            short_description="Disk full on db-1",
            description="97% used",
            impact=1,
            urgency=2,
            issued_at=datetime(2026, 11, 27, tzinfo=UTC),
            **kw,
        )
    )


def incidents(url: str, cid: str) -> list[dict[str, str]]:
    resp = httpx.get(
        f"{url}/api/now/table/incident",
        auth=("pipeline", PASSWORD),
        params={"sysparm_query": f"correlation_id={cid}"},
    )
    resp.raise_for_status()
    return list(resp.json()["result"])


def test_open_creates_an_incident_with_the_correlation_id(itsm_url: str) -> None:
    result = sink_for(itsm_url).handle(command(IncidentAction.OPEN))
    assert result.outcome is SinkOutcome.CREATED and result.itsm_number == "INC0010001"
    (rec,) = incidents(itsm_url, "itsmp-abc")
    assert rec["correlation_id"] == "itsmp-abc" and rec["state"] == "1"
    assert rec["short_description"] == "Disk full on db-1"
    assert (rec["impact"], rec["urgency"], rec["priority"]) == ("1", "2", "2")
    assert result.itsm_id == rec["sys_id"] and result.attempts == 3  # lookup, caller_id bound, create


def test_a_redelivered_open_never_creates_a_second_incident(itsm_url: str) -> None:
    sink = sink_for(itsm_url)
    first = sink.handle(command(IncidentAction.OPEN))
    again = sink.handle(command(IncidentAction.OPEN))
    assert (first.outcome, again.outcome) == (SinkOutcome.CREATED, SinkOutcome.UPDATED)
    assert len(incidents(itsm_url, "itsmp-abc")) == 1
    assert again.itsm_id == first.itsm_id


def test_resolve_resolves_and_a_second_resolve_is_a_noop(itsm_url: str) -> None:
    sink = sink_for(itsm_url)
    sink.handle(command(IncidentAction.OPEN))
    done = sink.handle(command(IncidentAction.RESOLVE, resolution_note="cleared"))
    again = sink.handle(command(IncidentAction.RESOLVE))
    (rec,) = incidents(itsm_url, "itsmp-abc")
    assert done.outcome is SinkOutcome.RESOLVED and again.outcome is SinkOutcome.NOOP
    assert (rec["state"], rec["close_notes"], rec["active"]) == ("6", "cleared", "false")
    assert rec["close_code"] and rec["resolved_at"]


def test_resolve_without_incident_is_a_noop_that_says_why(itsm_url: str) -> None:
    result = sink_for(itsm_url).handle(command(IncidentAction.RESOLVE, cid="itsmp-never-opened"))
    assert result.outcome is SinkOutcome.NOOP and "no incident" in result.message
    assert incidents(itsm_url, "itsmp-never-opened") == []


def test_open_after_resolve_reopens_the_same_incident(itsm_url: str) -> None:
    sink = sink_for(itsm_url)
    sink.handle(command(IncidentAction.OPEN))
    sink.handle(command(IncidentAction.RESOLVE))
    result = sink.handle(command(IncidentAction.OPEN, n=2))
    (rec,) = incidents(itsm_url, "itsmp-abc")
    assert result.outcome is SinkOutcome.UPDATED and result.message == "reopened"
    assert rec["state"] == "2" and "Reopened" in rec["work_notes"]


def test_wrong_credentials_are_a_permanent_auth_error(itsm_url: str) -> None:
    with pytest.raises(SinkError) as info:
        sink_for(itsm_url, password="wrong").handle(command(IncidentAction.OPEN))
    assert info.value.error_class is ErrorClass.AUTH and info.value.status == 401
    assert not info.value.retryable and info.value.attempts == 1
    assert "wrong" not in str(info.value)


def test_a_refused_field_is_a_permanent_validation_error_with_the_itsm_reason(itsm_url: str) -> None:
    client = sink_for(itsm_url).client
    with pytest.raises(SinkError) as info:
        client.create("incident", {"short_description": "x", "impact": "9"})
    assert info.value.error_class is ErrorClass.VALIDATION and info.value.status == 400
    assert "impact must be 1, 2 or 3" in str(info.value)


def test_an_unreachable_itsm_is_retried_then_reported_as_network() -> None:
    from ops.kafka.broker import free_port

    with pytest.raises(SinkError) as info:
        sink_for(f"http://127.0.0.1:{free_port()}").handle(command(IncidentAction.OPEN))
    assert info.value.error_class is ErrorClass.NETWORK and info.value.retryable
    assert info.value.attempts > 1


def test_a_correlation_id_with_a_query_operator_is_refused_not_injected(itsm_url: str) -> None:
    with pytest.raises(SinkError) as info:
        sink_for(itsm_url).handle(command(IncidentAction.OPEN, cid="itsmp-a^ORDERBYnumber"))
    assert info.value.error_class is ErrorClass.VALIDATION and info.value.attempts == 0
    assert "query operator" in str(info.value)


def test_an_update_writes_its_work_note_and_never_reopens(itsm_url: str) -> None:
    sink = sink_for(itsm_url)
    sink.handle(command(IncidentAction.OPEN))
    sink.handle(command(IncidentAction.UPDATE, work_note="Related alert AppErrors on app-1."))
    (rec,) = incidents(itsm_url, "itsmp-abc")
    assert rec["work_notes"].startswith("Related alert AppErrors on app-1.")
    sink.handle(command(IncidentAction.RESOLVE))
    result = sink.handle(command(IncidentAction.UPDATE, n=3, work_note="late related alert"))
    (rec,) = incidents(itsm_url, "itsmp-abc")
    assert result.outcome is SinkOutcome.UPDATED and rec["state"] == "6"


class LoseFirstCreateAnswer(httpx.BaseTransport):
    """Forwards every request to the real ITSM, but drops the answer to the first POST."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and not self.lost:
            response.read()
            self.lost += 1
            raise httpx.ReadError("connection reset after the server acted", request=request)
        return response


def test_a_create_whose_answer_was_lost_is_never_repeated_blindly(itsm_url: str) -> None:
    transport = LoseFirstCreateAnswer()
    config = ServiceNowConfig(itsm_url, "pipeline", SecretStr(PASSWORD), True, 5.0)
    sink = ServiceNowSink(
        ServiceNowClient(config, RetryPolicy(budget_seconds=5, initial_seconds=0.01), transport=transport)
    )
    result = sink.handle(command(IncidentAction.OPEN))
    assert transport.lost == 1
    assert len(incidents(itsm_url, "itsmp-abc")) == 1  # found on the second look, not created twice
    assert result.outcome is SinkOutcome.UPDATED


def change(action: str, cid: str = "chg-dep-1", **kw: object) -> ChangeCommand:
    return ChangeCommand.model_validate(
        dict(
            command_id=f"cc-{action}-{len(kw)}",
            correlation_id=cid,
            action=action,
            change_type="NORMAL",
            short_description="Deploy checkout 421",
            service="checkout",
            ci_ids=["ci-web-1"],
            planned_start=datetime(2026, 11, 27, 9, tzinfo=UTC),
            planned_end=datetime(2026, 11, 27, 10, tzinfo=UTC),
            issued_at=datetime(2026, 11, 27, tzinfo=UTC),
            **kw,
        )
    )


def changes(url: str, cid: str) -> list[dict[str, str]]:
    resp = httpx.get(
        f"{url}/api/now/table/change_request",
        auth=("pipeline", PASSWORD),
        # Reference fields as their values, not {"link", "value"} objects (the Table API's default).
        params={"sysparm_query": f"correlation_id={cid}", "sysparm_exclude_reference_link": "true"},
    )
    return list(resp.json()["result"])


def test_a_change_is_created_once_enriched_and_closed_with_its_outcome(
    itsm_url: str, itsm_store: Store
) -> None:
    ci = itsm_store.insert("cmdb_ci", {"name": "ci-web-1"})["sys_id"]
    sink = sink_for(itsm_url)
    created = sink.handle_change(change("CREATE"))
    again = sink.handle_change(change("CREATE"))
    assert (created.outcome, again.outcome) == (SinkOutcome.CREATED, SinkOutcome.NOOP)
    assert created.record_type.value == "CHANGE" and created.itsm_number == "CHG0030001"
    enriched = sink.handle_change(change("UPDATE", commit_ids=["a1b2c3", "d4e5f6"], build_number="421"))
    closed = sink.handle_change(
        change("CLOSE", close_code="SUCCESSFUL", deploy_duration_ms=93000, description="Deployed in 93 s.")
    )
    (rec,) = changes(itsm_url, "chg-dep-1")
    assert enriched.outcome is SinkOutcome.UPDATED and closed.outcome is SinkOutcome.RESOLVED
    assert (rec["type"], rec["state"], rec["close_code"], rec["close_notes"]) == (
        "normal",
        "3",
        "successful",
        "Deployed in 93 s.",
    )
    assert (rec["u_commit_ids"], rec["u_build_number"], rec["u_deploy_duration_ms"]) == (
        "a1b2c3,d4e5f6",
        "421",
        "93000",
    )
    assert (rec["start_date"], rec["end_date"], rec["cmdb_ci"]) == (
        "2026-11-27 09:00:00",
        "2026-11-27 10:00:00",
        ci,  # bound to the CI's sys_id
    )
    late = sink.handle_change(change("UPDATE", build_number="422"))
    assert late.outcome is SinkOutcome.NOOP and "already closed" in late.message


def test_closing_a_change_never_seen_creates_it_closed(itsm_url: str) -> None:
    result = sink_for(itsm_url).handle_change(change("CLOSE", cid="chg-late", close_code="UNSUCCESSFUL"))
    (rec,) = changes(itsm_url, "chg-late")
    assert result.outcome is SinkOutcome.RESOLVED and (rec["state"], rec["close_code"]) == (
        "3",
        "unsuccessful",
    )


def test_a_change_made_by_a_person_is_addressed_by_its_sys_id(itsm_url: str) -> None:
    made = httpx.post(
        f"{itsm_url}/api/now/table/change_request",
        auth=("pipeline", PASSWORD),
        json={"short_description": "Upgrade checkout", "type": "normal", "state": "-2"},
    ).json()["result"]
    sink = sink_for(itsm_url)
    closed = sink.handle_change(
        change("CLOSE", cid="change-" + made["number"], close_code="SUCCESSFUL", itsm_ref=made["sys_id"])
    )
    rec = httpx.get(
        f"{itsm_url}/api/now/table/change_request/{made['sys_id']}", auth=("pipeline", PASSWORD)
    ).json()["result"]
    assert closed.outcome is SinkOutcome.RESOLVED and closed.itsm_number == made["number"]
    assert (rec["state"], rec["close_code"], rec["correlation_id"]) == ("3", "successful", "")
    with pytest.raises(SinkError) as err:
        sink.handle_change(change("UPDATE", cid="change-x", itsm_ref="0" * 32))
    assert err.value.error_class is ErrorClass.VALIDATION and "has no change" in str(err.value)
    assert len(changes(itsm_url, "")) == 1  # nothing was created in its place


def lookups(via: str) -> float:
    from prometheus_client import REGISTRY

    return (
        REGISTRY.get_sample_value("itsm_pipeline_sink_lookups_total", {"target": "servicenow", "via": via})
        or 0.0
    )


def test_known_ids_from_results_find_records_by_id_and_fall_back_to_a_search(itsm_url: str) -> None:
    from connectors.sinks.known import KnownIds

    known = KnownIds("servicenow")
    sink = sink_for(itsm_url)
    sink.known = known
    created = sink.handle(command(IncidentAction.OPEN))
    known.learn(created)
    before_known, before_search = lookups("known"), lookups("search")
    sink.handle(command(IncidentAction.UPDATE, work_note="again"))
    assert (lookups("known"), lookups("search")) == (before_known + 1, before_search)
    # A stale hint (the record is gone, or the id is wrong) falls back to the search.
    stale = created.model_copy(update={"itsm_id": "0" * 32})
    known.learn(stale)
    assert sink.handle(command(IncidentAction.RESOLVE)).outcome is SinkOutcome.RESOLVED
    assert lookups("search") == before_search + 1
    # Results of other targets, or without an id, teach nothing.
    other = created.model_copy(update={"target": "jira", "correlation_id": "x"})
    known.learn(other)
    assert known.get(created.record_type, "x") is None


def binding(field: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "itsm_pipeline_reference_binding_total", {"field": field, "outcome": outcome}
        )
        or 0.0
    )


def test_reference_fields_are_bound_to_sys_ids_and_unknown_names_stay_in_the_description(
    itsm_url: str, itsm_store: Store
) -> None:
    ci = itsm_store.insert("cmdb_ci", {"name": "db-1"})["sys_id"]
    group = itsm_store.insert("sys_user_group", {"name": "dba"})["sys_id"]
    me = itsm_store.by_field("sys_user", "user_name", "pipeline")
    before = {
        k: binding(*k)
        for k in (("cmdb_ci", "bound"), ("business_service", "unresolved"), ("cmdb_ci", "cached"))
    }
    sink = sink_for(itsm_url)
    sink.handle(command(IncidentAction.OPEN, ci_id="db-1", service="billing", assignment_group="dba"))
    (rec,) = incidents(itsm_url, "itsmp-abc")
    assert (rec["cmdb_ci"]["value"], rec["assignment_group"]["value"], rec["caller_id"]["value"]) == (
        ci,
        group,
        me,
    )
    assert rec["business_service"] == ""  # no such service: left empty, never a dangling name
    assert (
        "business_service: billing (cmdb_ci_service where name=billing has no record)" in rec["description"]
    )
    assert binding("cmdb_ci", "bound") == before[("cmdb_ci", "bound")] + 1
    assert binding("business_service", "unresolved") == before[("business_service", "unresolved")] + 1
    # The next incident binds everything from the cache (the caller, the CI, and the unknown
    # service as a miss): only its own lookup and the create reach the instance.
    second = sink.handle(command(IncidentAction.OPEN, cid="itsmp-2", ci_id="db-1", service="billing"))
    assert second.outcome is SinkOutcome.CREATED and second.attempts == 2  # lookup + create
    assert binding("cmdb_ci", "cached") == before[("cmdb_ci", "cached")] + 1


def test_a_data_policy_refusal_is_a_validation_error_with_the_instance_message() -> None:
    store = Store(":memory:")
    app = create_devitsm(store, "pipeline", PASSWORD, mandatory={"incident": ("assignment_group",)})
    with serve(app) as url:
        with pytest.raises(SinkError) as err:
            sink_for(url).handle(command(IncidentAction.OPEN, assignment_group="nobody-team"))
    assert err.value.error_class is ErrorClass.VALIDATION and err.value.status == 403
    assert "Data Policy Exception: The following fields are mandatory: assignment_group" in str(err.value)
    store.close()


def test_without_an_owner_group_the_incident_goes_to_the_group_supporting_its_ci(
    itsm_url: str, itsm_store: Store
) -> None:
    support = itsm_store.insert("sys_user_group", {"name": "storage"})["sys_id"]
    dba = itsm_store.insert("sys_user_group", {"name": "dba"})["sys_id"]
    itsm_store.insert("cmdb_ci", {"name": "db-7", "support_group": support})
    sink = sink_for(itsm_url)
    sink.handle(command(IncidentAction.OPEN, cid="itsmp-a", ci_id="db-7"))
    sink.handle(command(IncidentAction.OPEN, cid="itsmp-b", ci_id="db-7", assignment_group="dba"))
    (a,), (b,) = incidents(itsm_url, "itsmp-a"), incidents(itsm_url, "itsmp-b")
    assert a["assignment_group"]["value"] == support  # the CMDB's support group
    assert b["assignment_group"]["value"] == dba  # the command's owner group wins


def test_an_acknowledgement_moves_a_new_incident_to_in_progress_never_one_a_person_moved(
    itsm_url: str,
) -> None:
    sink = sink_for(itsm_url)
    sink.handle(command(IncidentAction.OPEN, "itsmp-ack"))
    assert incidents(itsm_url, "itsmp-ack")[0]["state"] == "1"  # New
    done = sink.handle(command(IncidentAction.UPDATE, "itsmp-ack", 2, acknowledged=True, work_note="ack"))
    assert done.message == "acknowledged: in progress" and incidents(itsm_url, "itsmp-ack")[0]["state"] == "2"
    # A person put the other one On Hold: an acknowledgement notes it and leaves the state.
    sink.handle(command(IncidentAction.OPEN, "itsmp-held"))
    sys_id = incidents(itsm_url, "itsmp-held")[0]["sys_id"]
    httpx.patch(
        f"{itsm_url}/api/now/table/incident/{sys_id}", auth=("pipeline", PASSWORD), json={"state": "3"}
    ).raise_for_status()
    sink.handle(command(IncidentAction.UPDATE, "itsmp-held", 2, acknowledged=True, work_note="ack"))
    assert incidents(itsm_url, "itsmp-held")[0]["state"] == "3"


def test_the_probable_cause_and_route_fields_land_on_the_incident_bound_to_their_records(
    itsm_url: str, itsm_store: Store
) -> None:
    change = itsm_store.insert("change_request", {"short_description": "deploy checkout"})
    group = itsm_store.insert("sys_user_group", {"name": "Payments Ops"})
    fields = {
        "servicenow": {
            "caused_by": change["number"],
            "assignment_group": "Payments Ops",
            "category": "software",
        }
    }
    sink_for(itsm_url).handle(command(IncidentAction.OPEN, "itsmp-caused", target_fields=fields))
    (row,) = incidents(itsm_url, "itsmp-caused")
    # Reference fields hold sys_ids: the change found by its number, the group by its name.
    refs = (row["caused_by"]["value"], row["assignment_group"]["value"], row["category"])
    assert refs == (change["sys_id"], group["sys_id"], "software")
    # A change the instance does not know is not linked; the description says so.
    missing = {"servicenow": {"caused_by": "CHG0099999"}}
    sink_for(itsm_url).handle(command(IncidentAction.OPEN, "itsmp-nochange", target_fields=missing))
    (row,) = incidents(itsm_url, "itsmp-nochange")
    assert (
        row["caused_by"] == ""
        and "caused_by: CHG0099999 (change_request where number=CHG0099999" in row["description"]
    )
