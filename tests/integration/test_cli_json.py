"""`-o json` of every listing and reporting command parses and holds the same figures as its text."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from ops.cli import main
from streams.core.dlq import DeadLetter, ErrorClass
from streams.core.models import AuditEvent, AuditOutcome
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.kafka_util import produce

pytestmark = pytest.mark.integration
SERDE = AvroSerde()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out


def text_and_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, object]:
    code, text = run(capsys, *argv)
    json_code, raw = run(capsys, *argv, "-o", "json")
    assert code == json_code == 0, (text, raw)
    return text, json.loads(raw)  # one document


@pytest.fixture
def cli(kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test's broker and topic prefix, where itsmctl (run in this process) finds them."""
    monkeypatch.setenv("ITSM_KAFKA_BOOTSTRAP", kafka_settings.kafka_bootstrap)
    monkeypatch.setenv("ITSM_TOPIC_PREFIX", kafka_settings.topic_prefix)
    return kafka_settings


def letters(topic: str) -> list[tuple[bytes | None, bytes | None, list]]:  # type: ignore[type-arg]
    now = datetime.now(UTC)
    out = []
    for i, (cls, stage) in enumerate(
        [(ErrorClass.VALIDATION, "sink.servicenow")] * 3 + [(ErrorClass.NETWORK, "sink.jira")] * 2
    ):
        letter = DeadLetter(topic, 0, i, stage, cls, f"reason {i}", 1, now - timedelta(minutes=5 * i))
        out.append((f"k{i}".encode(), b"v" * (i + 1), letter.headers([])))
    return out


def test_listing_commands_give_the_same_figures_as_json(
    cli: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    s = cli
    commands = s.topic("itsm.incident.commands")
    produce(s.kafka_bootstrap, commands + ".dlq", letters(commands), partition=0)

    text, doc = text_and_json(capsys, "topics", "list")
    assert isinstance(doc, list) and len(doc) == len(text.splitlines()) > 10
    assert {d["state"] for d in doc} == {"ok"} and all(f"{d['topic']} " in text for d in doc)

    text, doc = text_and_json(capsys, "dlq", "list")
    assert isinstance(doc, list)
    counts = {d["topic"]: d["records"] for d in doc}
    assert counts[commands + ".dlq"] == 5 and sum(counts.values()) == 5
    assert f"{commands + '.dlq':<48} {5:>8} record(s)" in text

    text, doc = text_and_json(capsys, "dlq", "stats", "itsm.incident.commands.dlq", "--bucket", "day")
    assert isinstance(doc, dict)
    assert doc["records"] == 5 and "5 dead letter(s)" in text
    assert doc["by_error_class"] == {"network": 2, "validation": 3}
    assert doc["by_stage"] == {"sink.jira": 2, "sink.servicenow": 3}
    for name, n in (*doc["by_error_class"].items(), *doc["by_stage"].items(), *doc["by_day"].items()):
        assert f"    {name:<28} {n:>8}" in text

    # --since takes an age: the letters failed 0, 5, 10, 15 and 20 minutes ago.
    text, doc = text_and_json(capsys, "dlq", "show", "itsm.incident.commands.dlq", "--since", "12m")
    assert isinstance(doc, list)
    assert [d["key"] for d in doc] == ["k0", "k1", "k2"] and text.count("class=validation") == 3
    assert [d["bytes"] for d in doc] == [1, 2, 3] and all(f"bytes={d['bytes']}" in text for d in doc)
    assert doc[2]["reason"] == "reason 2" and doc[2]["stage"] == "sink.servicenow"

    text, doc = text_and_json(
        capsys, "dlq", "replay", "itsm.incident.commands.dlq", "--error-class", "network", "--dry-run"
    )
    assert isinstance(doc, dict)
    assert (doc["selected"], doc["would_replay"], doc["replayed"]) == (2, 2, 0)
    assert "would replay 2 of 2 selected dead letter(s)" in text


def test_the_change_report_gives_the_same_figures_as_json(
    cli: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    s = cli
    now = datetime.now(UTC)
    topic = s.topic("audit.events")

    def outcome(dep: str, phase: str, reason: str = "") -> tuple[bytes, bytes, list]:  # type: ignore[type-arg]
        event = AuditEvent(
            event_id=f"deploy-{dep}-{phase}",
            occurred_at=now,
            actor="ci",
            action="deploy.outcome",
            subject_type="deployment",
            subject_id=f"checkout@production/{dep}",
            outcome=AuditOutcome.DONE,
            details={"service": "checkout", "deployment_id": dep, "phase": phase, "duration_ms": "60000",
                     "failure_reason": reason, "deployed_at": now.isoformat()},
        )  # fmt: skip
        return event.event_id.encode(), SERDE.encode(event), []

    produce(s.kafka_bootstrap, topic, [outcome("d1", "SUCCEEDED"), outcome("d2", "FAILED", "smoke red")])
    text, doc = text_and_json(capsys, "changes", "report", "--period", "day", "--since", "2h")
    assert isinstance(doc, dict) and len(doc["rows"]) == 1
    row = doc["rows"][0]
    assert (row["service"], row["deploys"], row["succeeded"], row["failed"]) == ("checkout", 2, 1, 1)
    assert row["success_rate"] == 0.5 and row["mean_duration_s"] == 60.0
    assert row["causes"] == {"failed: smoke red": 1}
    line = next(x for x in text.splitlines() if x.startswith("checkout"))
    assert line.split()[2:7] == ["2", "1", "1", "50%", "60.0s"] and "failed: smoke red (1)" in line
