"""AlertToIncidentStage: one command per alert fingerprint, deterministic, clock injected."""

from __future__ import annotations

from datetime import UTC, datetime

from streams.core.models import AlertStatus, IncidentAction
from streams.stages.base import Ctx, Pipeline
from streams.stages.incident import AlertToIncidentStage, correlation_id
from tests.examples import alert

NOW = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)


def test_firing_alert_opens_the_incident_of_its_fingerprint() -> None:
    cmd = AlertToIncidentStage()(alert("fp1"), Ctx(now=NOW))
    assert cmd.action is IncidentAction.OPEN
    assert cmd.correlation_id == correlation_id("fp1") == "itsmp-fp1"
    assert cmd.short_description == "[warning] CPU above 90% on web-1:9100"
    assert cmd.alert_fingerprints == ["fp1"]
    assert cmd.issued_at == NOW
    assert "instance=web-1:9100" in cmd.description


def test_resolved_alert_resolves_with_a_note() -> None:
    cmd = AlertToIncidentStage()(alert("fp1", AlertStatus.RESOLVED, ends_at=NOW), Ctx(now=NOW))
    assert cmd.action is IncidentAction.RESOLVE
    assert cmd.resolution_note and "resolved at source" in cmd.resolution_note


def test_the_same_alert_always_gives_the_same_command_id() -> None:
    stage = AlertToIncidentStage()
    a = stage(alert("fp1"), Ctx(now=NOW))
    b = stage(alert("fp1"), Ctx(now=NOW))
    c = stage(alert("fp2"), Ctx(now=NOW))
    assert a.command_id == b.command_id != c.command_id


def test_the_pipeline_runs_its_stages_in_order() -> None:
    seen: list[str] = []

    class Tag:
        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self, record: object, ctx: Ctx) -> object:
            seen.append(self.name)
            return record

    Pipeline("p", [Tag("a"), Tag("b"), Tag("c")]).run("x", Ctx(now=NOW))
    assert seen == ["a", "b", "c"]


def test_the_host_is_not_repeated_when_the_summary_names_it() -> None:
    cmd = AlertToIncidentStage()(alert("fp1", summary="CPU above 90% on web-1"), Ctx(now=NOW))
    assert cmd.short_description == "[warning] CPU above 90% on web-1"
