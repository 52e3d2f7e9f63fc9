"""Property-based fuzzing of the Avro decoder, every source mapping and every sink mapping: each
either gives a valid result or raises its one documented error, whatever the input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connectors.registry import webhook_sources
from connectors.sinks.jira import mapping as jira
from connectors.sinks.rt import mapping as rt
from connectors.sinks.servicenow import mapping as servicenow
from connectors.sinks.webhook import mapping as webhook
from connectors.sources.alertmanager.mapping import PayloadError
from streams.core import models as m
from streams.core.serde import AvroSerde, SerdeError
from streams.core.settings import Settings
from tests.examples import EXAMPLES
from tests.fuzz.strategies import JSON, TEXT, mutated

pytestmark = pytest.mark.fuzz
SERDE = AvroSerde()
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SOURCES = webhook_sources(Settings())
MANY = settings(max_examples=300, deadline=None)


@MANY
@given(model=st.sampled_from(sorted(EXAMPLES, key=lambda t: t.__name__)), data=st.data())
def test_the_avro_decoder_raises_only_serde_errors(model: type[m.Record], data: st.DataObject) -> None:
    valid = bytearray(SERDE.encode(EXAMPLES[model]))
    strategy = st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(
            lambda b: b"\xc3\x01" + bytes(valid[2:10]) + b
        ),  # known schema, junk body
        st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)).map(
            lambda f: bytes(valid[: f[0]]) + bytes([f[1]]) + bytes(valid[f[0] + 1 :])
        ),
        st.integers(0, len(valid)).map(lambda n: bytes(valid[:n])),
    )
    raw = data.draw(strategy)
    try:
        record = SERDE.decode(raw, model)
    except SerdeError:
        return
    assert isinstance(record, model)
    assert SERDE.decode(SERDE.encode(record), model) == record  # what decodes, re-encodes exactly


@MANY
@given(source=st.sampled_from(sorted(SOURCES)), data=st.data())
def test_source_mappings_give_encodable_alerts_or_a_payload_error(source: str, data: st.DataObject) -> None:
    payload = data.draw(st.one_of(mutated(source), JSON))
    try:
        alerts = SOURCES[source].to_alerts(payload, NOW)
    except (PayloadError, ValidationError):
        return
    for alert in alerts:
        assert isinstance(alert, m.Alert) and len(alert.fingerprint) <= m.MAX_FINGERPRINT
        SERDE.encode(alert)  # every alert a mapping returns can travel


def commands() -> st.SearchStrategy[m.IncidentCommand]:
    return st.builds(
        m.IncidentCommand,
        command_id=st.text(min_size=1, max_size=20),
        correlation_id=st.text(min_size=1, max_size=100),
        action=st.sampled_from(m.IncidentAction),
        short_description=st.one_of(st.text(min_size=1, max_size=200), st.just("x" * 5000)),
        description=TEXT,
        impact=st.one_of(st.none(), st.integers(1, 3)),
        urgency=st.one_of(st.none(), st.integers(1, 3)),
        ci_id=st.one_of(st.none(), TEXT),
        labels=st.dictionaries(TEXT, TEXT, max_size=3),
        work_note=st.one_of(st.none(), TEXT),
        resolution_note=st.one_of(st.none(), TEXT),
        issued_at=st.datetimes(timezones=st.just(UTC)),
    )


def changes() -> st.SearchStrategy[m.ChangeCommand]:
    base = EXAMPLES[m.ChangeCommand]
    return st.builds(
        lambda cid, desc, start, close: base.model_copy(
            update={
                "correlation_id": cid,
                "short_description": desc,
                "planned_start": start,
                "close_code": close,
            }
        ),
        st.text(min_size=1, max_size=100),
        st.text(min_size=1, max_size=300),
        st.one_of(st.none(), st.datetimes(timezones=st.just(UTC))),
        st.one_of(st.none(), st.sampled_from(m.CloseCode)),
    )


def _sendable(body: Any) -> None:
    """What an HTTP client would send: JSON text, UTF-8 (lone surrogates are a ValueError)."""
    json.dumps(body, ensure_ascii=False).encode("utf-8")


@MANY
@given(cmd=commands())
def test_incident_sink_mappings_give_sendable_bodies_or_a_value_error(cmd: m.IncidentCommand) -> None:
    # The sink runner dead-letters a ValueError (or UnicodeError) of one command and goes on.
    try:
        for body in (
            servicenow.open_fields(cmd, "pipeline"),
            servicenow.update_fields(cmd, reopen=False),
            servicenow.resolve_fields(cmd),
            servicenow.lookup_query(cmd.correlation_id),
            jira.request_fields(cmd),
            rt.ticket_body("General", cmd, "CorrelationId", "CI"),
        ):
            _sendable(body)
        webhook.body(cmd)
        rt.ticket_query("General", "CorrelationId", cmd.correlation_id)
    except (ValueError, UnicodeError):
        return


@MANY
@given(cmd=changes())
def test_change_sink_mappings_give_sendable_bodies_or_a_value_error(cmd: m.ChangeCommand) -> None:
    try:
        for body in (
            servicenow.change_create_fields(cmd),
            servicenow.change_update_fields(cmd),
            servicenow.change_close_fields(cmd),
            jira.request_fields(cmd),
            rt.ticket_body("Changes", cmd, "CorrelationId", "CI"),
        ):
            _sendable(body)
        jira.change_comment(cmd)
        rt.change_note(cmd)
        rt.close_status(cmd)
        webhook.body(cmd)
    except (ValueError, UnicodeError):
        return
