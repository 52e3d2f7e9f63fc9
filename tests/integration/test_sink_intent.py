"""The Jira sink records each create on itsm.results before sending it (real broker), so a sink
process started after a crash knows a request may exist and does not create it again."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr

from connectors.emulators.jira import create_jira
from connectors.sinks.http import RetryPolicy, SinkError
from connectors.sinks.jira.config import JiraConfig
from connectors.sinks.jira.sink import JiraSink
from connectors.sinks.known import KnownIds
from connectors.sinks.runner import SinkRunner
from streams.core.models import IncidentAction, IncidentCommand, RecordType, SinkOutcome, SinkResult
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.kafka_util import consume
from tests.servers import serve

pytestmark = pytest.mark.integration
AUTH = ("bot@example.com", "api-token")


def test_a_create_intent_is_on_itsm_results_before_the_request(kafka_settings: Settings) -> None:
    serde = AvroSerde()
    with serve(create_jira(*AUTH, index_delay=30.0)) as url:
        config = JiraConfig(
            url, AUTH[0], SecretStr(AUTH[1]), "1", "10", "11", "Resolve this issue", "Reopen issue", True, 5.0
        )
        sink = JiraSink(config, RetryPolicy(budget_seconds=2.0, initial_seconds=0.05, max_seconds=0.1))
        runner = SinkRunner(kafka_settings, serde, sink, RecordType.INCIDENT, KnownIds("jira"))
        assert sink.intent == runner._intent  # wired by the runner
        httpx.post(
            f"{url}/__faults",
            json={"status": 504, "lost": True, "method": "POST", "path": "/rest/servicedeskapi/request"},
        )
        cmd = IncidentCommand(
            command_id="c-1",
            correlation_id="itsmp-intent",
            action=IncidentAction.OPEN,
            short_description="Disk full",
            issued_at=datetime.now(UTC),
        )
        with pytest.raises(SinkError, match="may have succeeded"):
            sink.handle_incident(cmd)
        runner.consumer.close()
        (msg,) = consume(kafka_settings.kafka_bootstrap, kafka_settings.topic("itsm.results"), 1, timeout=20)
        marker = serde.decode(msg.value(), SinkResult)
        assert (msg.key(), marker.outcome, marker.target) == (b"itsmp-intent", SinkOutcome.PENDING, "jira")
        # A sink process started now rebuilds its KnownIds from itsm.results and sees the marker.
        fresh = KnownIds("jira")
        fresh.apply(msg.key(), msg.value())
        assert fresh.pending_since(RecordType.INCIDENT, "itsmp-intent") == marker.completed_at
