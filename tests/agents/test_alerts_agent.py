"""The alerts agent: good records become incident commands, bad ones dead letters with reasons."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from streams.agents.alerts import AlertProcessor, alert_pipeline
from streams.app import create_app
from streams.core.dlq import Headers, header_map
from streams.core.models import IncidentAction, IncidentCommand
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.examples import alert, raw_alert_bytes

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
SETTINGS = Settings(topic_prefix="x.")
SERDE = AvroSerde()


class Collector:
    """An Emitter that keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, Headers]] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> Any:
        self.sent.append((topic, key, value, headers))


def processor(out: Collector) -> AlertProcessor:
    return AlertProcessor(SETTINGS, SERDE, out, alert_pipeline(), clock=lambda: NOW)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_good_alert_becomes_one_command_keyed_by_correlation_id() -> None:
    out = Collector()
    trace = ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    outcome = run(
        processor(out).handle(b"fp1", SERDE.encode(alert("fp1")), [trace, ("x", b"y")], "x.alerts.raw", 0, 5)
    )
    assert outcome == "emitted"
    ((topic, key, value, headers),) = out.sent
    assert topic == "x.itsm.incident.commands" and key == b"itsmp-fp1"
    cmd = SERDE.decode(value, IncidentCommand)
    assert cmd.action is IncidentAction.OPEN and cmd.issued_at == NOW
    assert headers == [trace]  # trace context goes on; other headers stay with the input


@pytest.mark.parametrize(
    ("value", "error_class", "reason"),
    [
        (b"garbage", "schema", "unknown framing"),
        (None, "schema", "unknown framing"),
        (b"\xc3\x01" + b"\x01" * 8 + b"\x00", "schema", "unknown schema fingerprint"),
    ],
    ids=["garbage", "tombstone", "foreign-schema"],
)
def test_undecodable_records_are_dead_lettered_with_their_bytes_and_reason(
    value: bytes | None, error_class: str, reason: str
) -> None:
    out = Collector()
    outcome = run(processor(out).handle(b"k", value, [("origin", b"test")], "x.alerts.raw", 2, 41))
    assert outcome == "dead_lettered"
    ((topic, key, dead_value, headers),) = out.sent
    assert topic == "x.alerts.raw.dlq" and key == b"k" and dead_value == (value or b"")
    h = header_map(headers)
    assert h["origin"] == "test"
    assert (h["dlq.topic"], h["dlq.partition"], h["dlq.offset"], h["dlq.stage"]) == (
        "x.alerts.raw",
        "2",
        "41",
        "alerts",
    )
    assert h["dlq.error.class"] == error_class and reason in h["dlq.exception.message"]
    assert h["dlq.attempts"] == "1" and h["dlq.first_failed_at"].startswith("2026-11-27T09:00:00")


def test_a_decodable_but_invalid_record_is_dead_lettered_as_validation() -> None:
    out = Collector()
    outcome = run(processor(out).handle(None, raw_alert_bytes(name=""), [], "x.alerts.raw", 0, 1))
    assert outcome == "dead_lettered"
    h = header_map(out.sent[0][3])
    assert h["dlq.error.class"] == "validation" and "name" in h["dlq.exception.message"]


def test_the_faust_agent_runs_the_processor_in_test_context() -> None:
    out = Collector()
    app = create_app(SETTINGS, SERDE, emit=out)
    agent = app.agents["alerts"]

    async def drive() -> None:
        async with agent.test_context() as ctx:
            await ctx.put(key=b"fp9", value=SERDE.encode(alert("fp9")))
            await ctx.put(key=b"bad", value=b"not avro")
            await ctx.put(key=b"fp9", value=SERDE.encode(alert("fp9", status="RESOLVED", ends_at=NOW)))

    run(drive())
    topics = [t for t, *_ in out.sent]
    assert topics == ["x.itsm.incident.commands", "x.alerts.raw.dlq", "x.itsm.incident.commands"]
    actions = [SERDE.decode(v, IncidentCommand).action for t, _, v, _ in out.sent if t.endswith("commands")]
    assert actions == [IncidentAction.OPEN, IncidentAction.RESOLVE]
