"""The change gate's HTTP API served in-process, recording on the real broker: authentication,
validation, decisions with their audit records, emergency bypass, submit and poll, token
rotation, and a dead view answering 503."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors import auth
from connectors.auth import Guard, TokensFile
from connectors.gate.client import GateClient, GateUnavailable
from connectors.gate.server import GATE_PRODUCER, create_gate
from streams.core.kafka import AckedProducer
from streams.core.models import (
    AuditEvent,
    AuditOutcome,
    ChangeCommand,
    ChangeRecord,
    ChangeType,
    GateRequest,
    MaintenanceWindow,
)
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.processors.indexes import ChangeIndex, CMDBTopicIndex, GateRequestIndex, WindowIndex
from streams.stages.changes.gate import ChangeGate, GatePolicy
from streams.stages.windows import WindowCalendar
from tests.kafka_util import consume
from tests.servers import serve

pytestmark = pytest.mark.integration
SERDE = AvroSerde()


class Health:
    def __init__(self) -> None:
        self.failure: str | None = None

    def check(self) -> None:
        if self.failure:
            raise RuntimeError(self.failure)


@dataclass
class Gate:
    url: str
    tokens: dict[str, str]
    changes: ChangeIndex
    windows: WindowIndex
    callers_file: Path
    health: Health
    settings: Settings

    def client(self, caller: str = "ci") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[caller]}"})


@pytest.fixture
def gate(kafka_settings: Settings, tmp_path: Path) -> Iterator[Gate]:
    callers_file = tmp_path / "callers.toml"
    grants = {
        "ci": ["gate:check"],
        "oncall": ["gate:check", "gate:bypass"],
        # Least privilege: two services' deploys, a bypass for one of them only.
        "payments-bot": ["gate:check:payments/*", "gate:check:billing/*", "gate:bypass:payments/*"],
    }
    tokens = {name: auth.issue(callers_file, name, scopes)[0] for name, scopes in grants.items()}
    callers = Guard("gate", TokensFile(callers_file))
    cmdb, windows = CMDBTopicIndex(SERDE, "c"), WindowIndex(SERDE, "w")
    changes, requests = ChangeIndex(SERDE, "x"), GateRequestIndex(SERDE, "r")
    gate = ChangeGate(GatePolicy(), WindowCalendar(windows, cmdb, frozenset({"DEPENDS_ON"}), 3), cmdb)
    producer = AckedProducer(kafka_settings, **GATE_PRODUCER)
    health = Health()
    app = create_gate(kafka_settings, SERDE, producer, gate, changes, requests, callers, [health])
    with serve(app) as url:
        yield Gate(url, tokens, changes, windows, callers_file, health, kafka_settings)
    producer.close()


def change(cid: str, status: str = "SCHEDULED", corr: str | None = None, **kw: Any) -> ChangeRecord:
    now = datetime.now(UTC)
    return ChangeRecord.model_validate(
        {
            "change_id": cid,
            "itsm_id": f"sys-{cid}",
            "target": "servicenow",
            "correlation_id": corr,
            "change_type": "NORMAL",
            "status": status,
            "service": "checkout",
            "planned_start": now - timedelta(minutes=5),
            "planned_end": now + timedelta(hours=1),
            "updated_at": now,
            **kw,
        }
    )


CHECK = {"service": "checkout", "environment": "production", "commit": "abc123"}


def test_callers_must_authenticate_and_send_valid_json(gate: Gate) -> None:
    from prometheus_client import REGISTRY

    def refused() -> float:
        return sum(
            REGISTRY.get_sample_value("itsm_pipeline_auth_failures_total", {"component": "gate", "reason": r})
            or 0.0
            for r in ("missing_token", "unknown_token")
        )

    before = refused()
    missing = httpx.post(f"{gate.url}/v1/gate/check", json=CHECK)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    bad = httpx.post(f"{gate.url}/v1/gate/check", json=CHECK, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert missing.json() == bad.json() == {"error": "unauthorized"}  # nothing that helps a guess
    assert refused() == before + 2  # counted (and logged without the token), ready for an alert
    with gate.client() as c:
        assert c.post("/v1/gate/check", content=b"service=x").status_code == 415
        invalid = c.post("/v1/gate/check", json={"service": "", "environment": "production", "extra": 1})
        assert invalid.status_code == 400
        assert {p.split(":")[0] for p in invalid.json()["problems"]} == {"service", "extra"}


def test_decisions_are_answered_with_reasons_and_recorded_in_audit_events(gate: Gate) -> None:
    with gate.client() as c:
        denied = c.post("/v1/gate/check", json=CHECK).json()
        gate.changes.put(change("CHG0030007"))
        allowed = c.post("/v1/gate/check", json=CHECK).json()
        staging = c.post("/v1/gate/check", json={**CHECK, "environment": "staging"}).json()
    assert (denied["decision"], allowed["decision"], staging["decision"]) == ("deny", "allow", "allow")
    assert "no approved change covers checkout in production" in denied["reasons"][0]
    assert (
        allowed["change_id"] == "CHG0030007"
        and "approved change CHG0030007 covers checkout now" in allowed["reasons"]
    )
    audits = [
        SERDE.decode(m.value(), AuditEvent)
        for m in consume(gate.settings.kafka_bootstrap, gate.settings.topic("audit.events"), 3, 30)
    ]
    assert [a.outcome for a in audits] == [AuditOutcome.DENIED, AuditOutcome.ALLOWED, AuditOutcome.ALLOWED]
    assert {a.event_id for a in audits} == {denied["audit_id"], allowed["audit_id"], staging["audit_id"]}
    assert audits[1].actor == "ci" and audits[1].details["commit"] == "abc123"


def test_a_freeze_denies_and_only_a_bypass_caller_with_a_justification_may_override_it(gate: Gate) -> None:
    now = datetime.now(UTC)
    gate.changes.put(change("CHG0030007"))
    gate.windows.put(
        MaintenanceWindow(
            window_id="fr-1",
            kind="FREEZE",
            scope="ENVIRONMENT",
            target="production",
            starts_at=now - timedelta(hours=1),
            ends_at=now + timedelta(hours=1),
            reason="peak",
            updated_at=now,
        )
    )
    bypass = {**CHECK, "bypass": True, "justification": "payment outage"}
    with gate.client() as c:
        frozen = c.post("/v1/gate/check", json=CHECK).json()
        refused = c.post("/v1/gate/check", json=bypass).json()
    with gate.client("oncall") as c:
        unjustified = c.post("/v1/gate/check", json={**bypass, "justification": " "}).json()
        emergency = c.post("/v1/gate/check", json=bypass).json()
    assert "freeze window fr-1 (peak)" in frozen["reasons"][-1] and frozen["decision"] == "deny"
    assert refused["decision"] == "deny" and "ci may not bypass the gate" in refused["reasons"]
    assert (
        unjustified["decision"] == "deny"
        and "an emergency bypass needs a justification" in unjustified["reasons"]
    )
    assert emergency["decision"] == "allow" and emergency["emergency"] is True
    (msg,) = consume(gate.settings.kafka_bootstrap, gate.settings.topic("change.requests"), 1, 30)
    cmd = SERDE.decode(msg.value(), ChangeCommand)
    assert cmd.correlation_id == emergency["emergency_change"] and cmd.change_type is ChangeType.EMERGENCY
    assert cmd.justification == "payment outage" and cmd.requested_by == "oncall"
    audits = [
        SERDE.decode(m.value(), AuditEvent)
        for m in consume(gate.settings.kafka_bootstrap, gate.settings.topic("audit.events"), 4, 30)
    ]
    assert audits[-1].outcome is AuditOutcome.BYPASSED and audits[-1].action == "gate.bypass"


def test_a_caller_may_only_do_what_its_scopes_name(gate: Gate) -> None:
    """gate:check and gate:bypass per service/environment: outside them 403, logged and counted;
    a bypass outside gate:bypass is a denial on the audit trail, not a refusal."""
    from prometheus_client import REGISTRY

    def refused() -> float:
        labels = {"component": "gate", "reason": "missing_scope"}
        return REGISTRY.get_sample_value("itsm_pipeline_auth_failures_total", labels) or 0.0

    before = refused()
    payments = {"service": "payments", "environment": "staging"}
    with gate.client("payments-bot") as c:
        other = c.post("/v1/gate/check", json=CHECK)  # checkout: not its service
        assert other.status_code == 403 and other.json() == {"error": "forbidden"}
        assert c.post("/v1/gate/requests", json=CHECK).status_code == 403
        assert c.post("/v1/gate/check", json=payments).json()["decision"] == "allow"
        bypass = {"environment": "production", "bypass": True, "justification": "outage"}
        not_here = c.post("/v1/gate/check", json={**bypass, "service": "billing"}).json()
        emergency = c.post("/v1/gate/check", json={**bypass, "service": "payments"}).json()
    assert refused() == before + 2
    assert not_here["decision"] == "deny" and "payments-bot may not bypass the gate" in not_here["reasons"]
    assert emergency["decision"] == "allow" and emergency["emergency"] is True
    with gate.client("ci") as c:  # the unqualified scope: every service and environment
        assert c.post("/v1/gate/check", json=payments).status_code == 200


def test_submit_then_poll_follows_the_change_through_approval(gate: Gate) -> None:
    with gate.client() as c:
        submit = {
            **CHECK,
            "short_description": "Deploy checkout abc123",
            "planned_start": "2027-01-05T09:00:00+01:00",
        }
        pending = c.post("/v1/gate/requests", json=submit)
        assert pending.status_code == 202
        rid = pending.json()["request_id"]
        assert c.get(f"/v1/gate/requests/{rid}").json()["status"] == "pending"
        gate.changes.put(change("CHG0030009", status="REQUESTED", corr=rid))
        waiting = c.get(f"/v1/gate/requests/{rid}").json()
        assert waiting["status"] == "pending" and "not approved (state requested)" in " ".join(
            waiting["reasons"]
        )
        gate.changes.put(change("CHG0030009", status="SCHEDULED", corr=rid, approval="approved"))
        allowed = c.get(f"/v1/gate/requests/{rid}").json()
        assert allowed["status"] == "allowed" and allowed["change_id"] == "CHG0030009"
        gate.changes.put(change("CHG0030009", status="CANCELLED", corr=rid))
        assert c.get(f"/v1/gate/requests/{rid}").json()["status"] == "denied"
    with gate.client("oncall") as other:
        assert other.get(f"/v1/gate/requests/{rid}").status_code == 404  # not theirs
    boot, t = gate.settings.kafka_bootstrap, gate.settings.topic
    (req,) = [SERDE.decode(m.value(), GateRequest) for m in consume(boot, t("gate.requests"), 1, 30)]
    (cmd,) = [SERDE.decode(m.value(), ChangeCommand) for m in consume(boot, t("change.requests"), 1, 30)]
    assert req.request_id == rid == cmd.correlation_id and req.caller == "ci"
    assert cmd.change_type is ChangeType.NORMAL and cmd.short_description == "Deploy checkout abc123"
    assert (
        cmd.planned_start is not None and cmd.planned_end is not None and cmd.planned_end > cmd.planned_start
    )
    # The window as the pipeline asked for it: 09:00 at +01:00 is 08:00 UTC, the offset kept.
    assert cmd.planned_start.hour == 8 and cmd.source_zone == "+01:00"


def test_a_rejected_approval_denies_the_request(gate: Gate) -> None:
    with gate.client() as c:
        rid = c.post("/v1/gate/requests", json=CHECK).json()["request_id"]
        gate.changes.put(change("CHG0030010", status="SCHEDULED", corr=rid, approval="rejected"))
        denied = c.get(f"/v1/gate/requests/{rid}").json()
    assert denied["status"] == "denied" and denied["reasons"] == ["change CHG0030010 was rejected"]


def test_a_token_is_rotated_without_downtime(gate: Gate) -> None:
    old = gate.tokens["ci"]
    new, _ = auth.rotate(gate.callers_file, "ci")
    for token in (old, new):
        resp = httpx.post(
            f"{gate.url}/v1/gate/check", json=CHECK, headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status_code == 200
    auth.revoke(gate.callers_file, "ci", old_only=True)
    assert (
        httpx.post(
            f"{gate.url}/v1/gate/check", json=CHECK, headers={"Authorization": f"Bearer {old}"}
        ).status_code
        == 401
    )
    gate.callers_file.write_text("this is [ not toml")  # a broken edit keeps the last good file
    assert (
        httpx.post(
            f"{gate.url}/v1/gate/check", json=CHECK, headers={"Authorization": f"Bearer {new}"}
        ).status_code
        == 200
    )
    assert "not valid TOML" in httpx.get(f"{gate.url}/healthz").json()["callers_file_error"]


def test_a_dead_view_answers_503_and_the_client_reports_it(gate: Gate) -> None:
    with gate.client() as c:
        assert c.get("/readyz").json() == {"ready": True, "checks": {"view_0": "ok"}}
    gate.health.failure = "view of cmdb.ci failed: broker gone"
    with gate.client() as c:
        assert c.post("/v1/gate/check", json=CHECK).status_code == 503
        assert c.get("/healthz").status_code == 503
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"view_0": "view of cmdb.ci failed: broker gone"}
    client = GateClient(gate.url, gate.tokens["ci"], True)
    with pytest.raises(GateUnavailable, match="503"):
        client.check(**CHECK)
    with pytest.raises(GateUnavailable, match="cannot reach the gate"):
        GateClient("http://127.0.0.1:9", "x", True, timeout=2).check(**CHECK)


def test_itsmctl_gate_check_waits_for_a_named_change_to_be_approved(gate: Gate, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    token = tmp_path / "token"
    token.write_text(gate.tokens["ci"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_")}
    env.update(ITSM_GATE_URL=gate.url, ITSM_GATE_TOKEN_FILE=str(token))
    gate.changes.put(change("CHG0030011", status="REQUESTED"))
    # Approved once the command said it waits (not after a fixed delay: a loaded machine can take
    # longer than that to start the command, which then sees the change approved at once).
    waiting = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "gate", "check", "--service", "checkout", "--env", "production",
         "--change", "CHG0030011", "--wait", "--interval", "0.5", "--timeout", "30"],
        env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert waiting.stdout is not None
        first = ""
        while "is not approved (state requested)" not in first:  # it polled and was refused
            line = waiting.stdout.readline()
            assert line, first  # the command ended before it said so
            first += line
        gate.changes.put(change("CHG0030011", status="SCHEDULED"))
        rest, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    out = first + rest
    assert waiting.returncode == 0, out + err
    assert "deny for now" in out
    assert "gate: checkout -> production: allow (change CHG0030011)" in out
    assert gate.tokens["ci"] not in out + err
    timeout = subprocess.run(
        [sys.executable, "-m", "ops.cli", "gate", "check", "--service", "search", "--env", "production",
         "--change", "CHG0030099", "--wait", "--interval", "0.5", "--timeout", "2"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert timeout.returncode == 1 and "change CHG0030099 is unknown" in timeout.stdout
