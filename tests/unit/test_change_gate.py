"""The change gate's decisions, table-driven, on an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streams.core.models import AuditOutcome, ChangeType, MaintenanceWindow
from streams.stages.changes.gate import ChangeGate, ChangeState, ChangeView, GatePolicy, GateRequest
from streams.stages.cmdb import CMDBIndex
from streams.stages.windows import WindowCalendar

NOW = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
H = timedelta(hours=1)


def change(
    cid: str,
    state: str = "approved",
    kind: str = "NORMAL",
    service: str | None = "checkout",
    cis: tuple[str, ...] = ("web-1",),
    start: timedelta = -H,
    end: timedelta = H,
) -> ChangeView:
    return ChangeView(cid, ChangeType(kind), ChangeState(state), service, cis, NOW + start, NOW + end)


class Windows:
    def __init__(self, *ws: MaintenanceWindow) -> None:
        self.ws = list(ws)

    def windows(self) -> list[MaintenanceWindow]:
        return self.ws


def freeze(scope: str = "SERVICE", target: str = "checkout", **kw: object) -> MaintenanceWindow:
    return MaintenanceWindow.model_validate(
        {
            "window_id": "fr-1",
            "kind": "FREEZE",
            "scope": scope,
            "target": target,
            "starts_at": NOW - H,
            "ends_at": NOW + 2 * H,
            "reason": "Black Friday",
            "updated_at": NOW,
            **kw,
        }
    )


def gate(*windows: MaintenanceWindow) -> ChangeGate:
    cmdb = CMDBIndex()
    cal = WindowCalendar(Windows(*windows), cmdb, frozenset({"DEPENDS_ON"}), 3)
    return ChangeGate(GatePolicy(bypass_callers=frozenset({"release-bot"})), cal, cmdb)


def req(**kw: object) -> GateRequest:
    base: dict[str, object] = {"service": "checkout", "environment": "production", "caller": "ci-pipeline"}
    base.update(kw)
    return GateRequest(**base)  # type: ignore[arg-type]


CASES = [
    # (name, windows, changes, request, allowed, reason fragment)
    ("approved change covers now", [], [change("CHG1")], req(), True, "approved change CHG1 covers checkout"),
    (
        "named approved change",
        [],
        [change("CHG1"), change("CHG2")],
        req(change_id="CHG2"),
        True,
        "CHG2 covers",
    ),
    ("no change at all", [], [], req(), False, "no approved change covers checkout"),
    (
        "change only for another service",
        [],
        [change("CHG1", service="billing", cis=())],
        req(),
        False,
        "no approved change",
    ),
    (
        "change not approved yet",
        [],
        [change("CHG1", state="requested")],
        req(change_id="CHG1"),
        False,
        "is not approved (state requested)",
    ),
    (
        "change window already over",
        [],
        [change("CHG1", start=-3 * H, end=-H)],
        req(change_id="CHG1"),
        False,
        "does not cover",
    ),
    (
        "change window not yet open",
        [],
        [change("CHG1", start=H, end=2 * H)],
        req(),
        False,
        "no approved change",
    ),
    ("unknown change id", [], [change("CHG1")], req(change_id="CHG9"), False, "change CHG9 is unknown"),
    (
        "standard change is pre-approved",
        [],
        [change("STD1", state="requested", kind="STANDARD")],
        req(),
        True,
        "approved change STD1",
    ),
    (
        "cancelled standard change",
        [],
        [change("STD1", state="cancelled", kind="STANDARD")],
        req(),
        False,
        "no approved change",
    ),
    (
        "freeze on the service",
        [freeze()],
        [change("CHG1")],
        req(),
        False,
        "freeze window fr-1 (Black Friday)",
    ),
    ("global freeze", [freeze("GLOBAL", "")], [change("CHG1")], req(), False, "freeze window fr-1"),
    ("freeze on another service", [freeze(target="billing")], [change("CHG1")], req(), True, "covers"),
    ("freeze over", [freeze(ends_at=NOW - timedelta(minutes=1))], [change("CHG1")], req(), True, "covers"),
    (
        "conflicting change on the same CI",
        [],
        [change("CHG1"), change("CHG2", state="implement", service="search")],
        req(ci_ids=("web-1",)),
        False,
        "conflicts with change CHG2 implementing on web-1",
    ),
    (
        "other change on another CI",
        [],
        [change("CHG1"), change("CHG2", state="implement", cis=("db-9",))],
        req(ci_ids=("web-1",)),
        True,
        "covers",
    ),
    (
        "staging needs no change",
        [freeze()],
        [],
        req(environment="staging"),
        True,
        "environment 'staging' needs no change",
    ),
]


@pytest.mark.parametrize(
    ("name", "windows", "changes", "request_", "allowed", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_gate_decisions(
    name: str,
    windows: list[MaintenanceWindow],
    changes: list[ChangeView],
    request_: GateRequest,
    allowed: bool,
    reason: str,
) -> None:
    d = gate(*windows).decide(request_, changes, NOW)
    assert d.allowed is allowed, d.reasons
    assert any(reason in r for r in d.reasons), d.reasons
    assert d.audit is not None and d.audit.outcome is (
        AuditOutcome.ALLOWED if allowed else AuditOutcome.DENIED
    )
    assert d.emergency is False and d.emergency_change is None


def test_an_emergency_bypass_overrides_a_freeze_and_records_an_emergency_change() -> None:
    d = gate(freeze()).decide(
        req(
            caller="release-bot",
            bypass=True,
            justification="payment outage hotfix",
            commit="a1b2c3",
            ci_ids=("web-1",),
        ),
        [],
        NOW,
    )
    assert d.allowed and d.emergency
    assert any("bypassed: freeze window fr-1" in r for r in d.reasons)
    assert (
        d.audit is not None and d.audit.outcome is AuditOutcome.BYPASSED and d.audit.action == "gate.bypass"
    )
    cc = d.emergency_change
    assert (
        cc is not None
        and cc.change_type is ChangeType.EMERGENCY
        and cc.justification == "payment outage hotfix"
    )
    assert cc.requested_by == "release-bot" and cc.commit_ids == ["a1b2c3"] and cc.issued_at == NOW


@pytest.mark.parametrize(
    ("caller", "justification", "why"),
    [
        ("ci-pipeline", "hotfix", "ci-pipeline may not bypass the gate"),
        ("release-bot", "  ", "an emergency bypass needs a justification"),
    ],
)
def test_a_bypass_without_rights_or_justification_is_denied_and_audited(
    caller: str, justification: str, why: str
) -> None:
    d = gate(freeze()).decide(req(caller=caller, bypass=True, justification=justification), [], NOW)
    assert not d.allowed and not d.emergency and why in d.reasons
    assert d.audit is not None and d.audit.outcome is AuditOutcome.DENIED and d.emergency_change is None


def test_the_same_request_gives_the_same_decision_and_audit_id() -> None:
    g = gate()
    a = g.decide(req(), [change("CHG1")], NOW)
    b = g.decide(req(), [change("CHG1")], NOW)
    assert (a.allowed, a.reasons, a.audit.event_id) == (b.allowed, b.reasons, b.audit.event_id)  # type: ignore[union-attr]
