"""Deployment linking to changes, the commands it gives, and the analytics over its outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from streams.core.models import AuditOutcome, ChangeAction, ChangeType, CloseCode, DeploymentEvent
from streams.stages.changes.analytics import render, summarize
from streams.stages.changes.gate import ChangeState, ChangeView
from streams.stages.changes.linking import DeployLinker

NOW = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
H = timedelta(hours=1)
STAGE = DeployLinker(frozenset({"production"}))


def change(
    cid: str,
    state: str = "approved",
    service: str | None = "checkout",
    start: timedelta = -H,
    end: timedelta = H,
    cis: tuple[str, ...] = (),
    corr: str | None = None,
) -> ChangeView:
    return ChangeView(
        cid, ChangeType.NORMAL, ChangeState(state), service, cis, NOW + start, NOW + end, f"sys-{cid}", corr
    )


def deploy(phase: str = "SUCCEEDED", **kw: Any) -> DeploymentEvent:
    return DeploymentEvent.model_validate(
        {
            "event_id": f"ev-{phase}",
            "deployment_id": "d-1",
            "phase": phase,
            "service": "checkout",
            "environment": "production",
            "commit_ids": ["abc123"],
            "build_number": "42",
            "pipeline": "gh-actions",
            "duration_ms": 90_000,
            "occurred_at": NOW,
            **kw,
        }
    )


@pytest.mark.parametrize(
    ("name", "event", "changes", "how", "linked"),
    [
        (
            "explicit number",
            deploy(change_id="CHG1"),
            [change("CHG1", state="requested")],
            "explicit",
            "CHG1",
        ),
        (
            "explicit correlation id",
            deploy(change_id="gate-x"),
            [change("CHG7", corr="gate-x")],
            "explicit",
            "CHG7",
        ),
        ("explicit unknown", deploy(change_id="CHG9"), [change("CHG1")], "none", None),
        ("window covers", deploy(), [change("CHG2"), change("CHG1", service="other")], "window", "CHG2"),
        ("lowest id of several", deploy(), [change("CHG3"), change("CHG2")], "window", "CHG2"),
        (
            "by shared CI",
            deploy(ci_ids=["web-1"]),
            [change("CHG4", service=None, cis=("web-1",))],
            "window",
            "CHG4",
        ),
        ("not approved", deploy(), [change("CHG1", state="requested")], "none", None),
        ("window over", deploy(), [change("CHG1", end=-2 * H, start=-3 * H)], "none", None),
        # Started 90 s before it finished: a window that closed in between still covers it.
        ("start counts", deploy(), [change("CHG5", end=timedelta(seconds=-30))], "window", "CHG5"),
        ("staging needs none", deploy(environment="staging"), [], "not_required", None),
        (
            "staging is not in a production window",
            deploy(environment="staging"),
            [change("CHG2")],
            "not_required",
            None,
        ),
        (
            "staging may name its change",
            deploy(environment="staging", change_id="CHG2"),
            [change("CHG2")],
            "explicit",
            "CHG2",
        ),
    ],
)
def test_linking(
    name: str, event: DeploymentEvent, changes: list[ChangeView], how: str, linked: str | None
) -> None:
    result = STAGE.link(event, changes, NOW)
    assert result.how == how, result.reason
    assert (result.change.change_id if result.change else None) == linked
    if linked is None:
        assert result.command is None
        if how == "none":
            assert result.audit is not None and result.audit.outcome is AuditOutcome.FLAGGED
            assert result.audit.action == "deploy.unlinked"
        else:
            assert result.audit is None


@pytest.mark.parametrize(
    ("phase", "action", "close_code", "text"),
    [
        ("STARTED", ChangeAction.UPDATE, None, "started"),
        ("SUCCEEDED", ChangeAction.CLOSE, CloseCode.SUCCESSFUL, "succeeded after 90.0s"),
        ("FAILED", ChangeAction.CLOSE, CloseCode.UNSUCCESSFUL, "failed: tests red"),
        ("ROLLED_BACK", ChangeAction.CLOSE, CloseCode.UNSUCCESSFUL, "rolled back: tests red"),
    ],
)
def test_the_change_is_enriched_and_closed_from_the_outcome(
    phase: str, action: ChangeAction, close_code: CloseCode | None, text: str
) -> None:
    result = STAGE.link(deploy(phase, change_id="CHG1", failure_reason="tests red"), [change("CHG1")], NOW)
    cmd = result.command
    assert cmd is not None and cmd.action is action and cmd.close_code is close_code
    assert text in cmd.description and "build 42" in cmd.description
    assert cmd.commit_ids == ["abc123"] and cmd.build_number == "42" and cmd.deploy_duration_ms == 90_000
    assert cmd.itsm_ref == "sys-CHG1" and cmd.correlation_id == "change-CHG1"
    assert (result.audit is not None) is (phase != "STARTED")


def test_a_change_the_pipeline_created_keeps_its_correlation_id() -> None:
    result = STAGE.link(deploy(change_id="CHG7"), [change("CHG7", corr="gate-x")], NOW)
    assert result.command is not None and result.command.correlation_id == "gate-x"


def _outcomes() -> list[Any]:
    events = [
        deploy("SUCCEEDED", event_id="a", deployment_id="d1", change_id="CHG1"),
        deploy("SUCCEEDED", event_id="b", deployment_id="d2", change_id="CHG1", duration_ms=30_000),
        deploy("FAILED", event_id="c", deployment_id="d3", change_id="CHG1", failure_reason="tests red"),
        # d3 reported again (rolled back): counts once, as its last outcome.
        deploy(
            "ROLLED_BACK", event_id="c2", deployment_id="d3", change_id="CHG1", failure_reason="tests red"
        ),
        deploy("SUCCEEDED", event_id="e", deployment_id="d5", service="search", change_id="CHG1"),
        deploy("SUCCEEDED", event_id="f", deployment_id="d6", occurred_at=NOW + 7 * 24 * H, change_id="CHG1"),
        deploy("STARTED", event_id="g", deployment_id="d7"),
        deploy("SUCCEEDED", event_id="g2", deployment_id="d7"),
    ]
    out = []
    for ev in events:
        link = STAGE.link(ev, [change("CHG1", start=-H, end=10 * 24 * H)] if ev.change_id else [], NOW)
        if link.audit is not None:
            out.append(link.audit)
    return out


def test_analytics_per_service_and_week() -> None:
    rows = summarize(_outcomes(), "week")
    by = {(r.service, r.period): r for r in rows}
    week = by[("checkout", "2026-11-23")]
    assert (week.deploys, week.succeeded, week.failed, week.unlinked) == (3, 2, 1, 1)
    assert week.success_rate == pytest.approx(2 / 3)
    assert week.mean_duration_s == pytest.approx((90 + 30 + 90) / 3)
    assert dict(week.causes) == {"rolled_back: tests red": 1}
    assert by[("checkout", "2026-11-30")].deploys == 1 and by[("search", "2026-11-23")].succeeded == 1
    text = render(rows)
    assert "checkout" in text and "67%" in text and "rolled_back: tests red (1)" in text


def test_analytics_periods_follow_the_zone() -> None:
    late = [a for a in _outcomes() if a.details["deployment_id"] == "d1"]
    assert summarize(late, "day")[0].period == "2026-11-27"
    assert summarize(late, "month")[0].period == "2026-11-01"
    assert summarize(late, "day", ZoneInfo("Pacific/Kiritimati"))[0].period == "2026-11-28"
    with pytest.raises(ValueError, match="period must be one of"):
        summarize(late, "year")
