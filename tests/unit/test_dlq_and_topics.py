"""The dead-letter envelope and the topic declarations."""

from __future__ import annotations

from datetime import UTC, datetime

from streams.core.dlq import DeadLetter, ErrorClass, header_map
from streams.core.topics import (
    ALERTS_CI_INCIDENTS,
    CMDB_CI,
    CMDB_DRIFT,
    DLQ_REPLAYS,
    GATE_REQUESTS,
    ITSM_CHANGES,
    ITSM_INCIDENTS,
    MAINTENANCE_WINDOWS,
    RULES,
    TOPICS,
    declared,
)


def test_dead_letter_keeps_original_headers_and_adds_every_dlq_header() -> None:
    letter = DeadLetter(
        "alerts.raw",
        3,
        42,
        "alerts",
        ErrorClass.SCHEMA,
        "cannot decode",
        attempts=2,
        first_failed_at=datetime(2026, 11, 27, 8, 0, tzinfo=UTC),
    )
    headers = letter.headers([("traceparent", b"00-abc-def-01"), ("dlq.stage", b"older"), ("n", None)])
    assert headers[:2] == [("traceparent", b"00-abc-def-01"), ("n", b"")]
    assert header_map(headers) == {
        "traceparent": "00-abc-def-01",
        "n": "",
        "dlq.topic": "alerts.raw",
        "dlq.partition": "3",
        "dlq.offset": "42",
        "dlq.stage": "alerts",
        "dlq.error.class": "schema",
        "dlq.exception.message": "cannot decode",
        "dlq.attempts": "2",
        "dlq.first_failed_at": "2026-11-27T08:00:00.000+00:00",
    }


def test_a_long_reason_is_cut_not_lost() -> None:
    letter = DeadLetter("t", 0, 0, "s", ErrorClass.UNKNOWN, "x" * 5000)
    msg = header_map(letter.headers())["dlq.exception.message"]
    assert len(msg) == 1003 and msg.endswith("...")


def test_every_topic_is_declared_once_with_its_dlq_twin() -> None:
    specs = list(declared("p."))
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    for spec in TOPICS:
        assert ("p." + spec.name + ".dlq" in names) == spec.dlq
    for spec in specs:
        assert spec.name.startswith("p.")


def test_cmdb_and_maintenance_topics_are_compacted_and_others_are_not() -> None:
    compacted = {s.name for s in TOPICS if s.compacted}
    assert compacted == {
        CMDB_CI,
        CMDB_DRIFT,
        MAINTENANCE_WINDOWS,
        ALERTS_CI_INCIDENTS,
        DLQ_REPLAYS,
        ITSM_CHANGES,
        ITSM_INCIDENTS,
        GATE_REQUESTS,
        RULES,
    }
    for spec in declared():
        cfg = spec.configs()
        assert cfg["cleanup.policy"] == ("compact" if spec.name in compacted else "delete")
        assert cfg["retention.ms"] == ("-1" if spec.name in compacted else str(spec.retention_ms))


def test_topic_names_follow_the_convention() -> None:
    import re

    for spec in declared():
        assert re.fullmatch(r"[a-z]+(\.[a-z]+)+", spec.name), spec.name
