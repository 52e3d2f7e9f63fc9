"""What a route sets reaches each ITSM when an incident opens: ServiceNow columns (over the CI
owner's group), the Jira service desk and request type (checked by the Jira emulator, which
refuses unknown ones as Jira does), RT's queue; RT finds an incident's ticket in any queue."""

from __future__ import annotations

from datetime import UTC, datetime

from connectors.emulators.jira import create_jira
from connectors.sinks.http import RetryPolicy
from connectors.sinks.jira.sink import JiraSink
from connectors.sinks.rt.mapping import ticket_query
from connectors.sinks.servicenow.mapping import open_fields
from streams.core.models import IncidentAction, IncidentCommand, SinkOutcome
from tests.servers import serve
from tests.unit.test_jira_contract import AUTH, config


def command(**kw: object) -> IncidentCommand:
    return IncidentCommand.model_validate(
        {
            "command_id": "c-1",
            "correlation_id": "itsmp-routed",
            "action": IncidentAction.OPEN,
            "short_description": "Disk full on db-1",
            "assignment_group": "DB Owners",
            "issued_at": datetime(2026, 12, 1, tzinfo=UTC),
            **kw,
        }
    )


def test_servicenow_gets_the_route_columns_over_the_ci_owner() -> None:
    routed = command(
        targets=["servicenow"],
        target_fields={"servicenow": {"assignment_group": "Payments Ops", "category": "software"}},
    )
    fields = open_fields(routed, "itsm-pipeline")
    assert (fields["assignment_group"], fields["category"]) == ("Payments Ops", "software")
    assert open_fields(command(), "itsm-pipeline")["assignment_group"] == "DB Owners"  # no route: the owner


def test_jira_creates_in_the_service_desk_and_request_type_the_route_names() -> None:
    app = create_jira(*AUTH, service_desks=frozenset({"1", "2"}), request_types=frozenset({"10", "11", "17"}))
    with serve(app) as url:
        sink = JiraSink(config(url, lag=0.0), RetryPolicy(budget_seconds=5, initial_seconds=0.01))
        fields = {"jira": {"service_desk": "2", "request_type": "17"}}
        routed = command(targets=["jira"], target_fields=fields)
        result = sink.handle_incident(routed)
        assert result.outcome is SinkOutcome.CREATED
        issue = sink.client.call("GET", f"/rest/servicedeskapi/request/{result.itsm_number}").json()
        assert (str(issue["serviceDeskId"]), str(issue["requestTypeId"])) == ("2", "17")
        plain = sink.handle_incident(command(correlation_id="itsmp-plain"))
        issue = sink.client.call("GET", f"/rest/servicedeskapi/request/{plain.itsm_number}").json()
        assert (str(issue["serviceDeskId"]), str(issue["requestTypeId"])) == ("1", "10")  # the configured


def test_rt_searches_one_queue_or_every_queue_it_may_see() -> None:
    assert ticket_query("Ops", "ITSM Correlation Id", "itsmp-1") == (
        "Queue='Ops' AND 'CF.{ITSM Correlation Id}'='itsmp-1'"
    )
    assert ticket_query(None, "ITSM Correlation Id", "itsmp-1") == "'CF.{ITSM Correlation Id}'='itsmp-1'"
