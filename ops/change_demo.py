"""The demo's change part: a deployment pipeline against the change gate, start to finish, on the
demo's stack (broker, worker, change sink, change sync, gate, development ITSM)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Producer

from connectors.gate.client import GateClient
from connectors.sources.freeze.mapping import freeze_windows
from connectors.sources.freeze.source import plan
from ops.stack import Stack
from streams.core.kafka import producer_config, publish_batch
from streams.core.messages import encoded
from streams.core.models import ConfigurationItem, DeploymentEvent, MaintenanceWindow
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.core.topics import CMDB_CI_UPDATES, DEPLOY_EVENTS, MAINTENANCE_WINDOWS

SERVICE, ENV, COMMIT, BUILD = "checkout", "production", "4f2a9c1", "421"
CHECK = {"service": SERVICE, "environment": ENV, "commit": COMMIT, "ci_ids": ["web-1"]}


def _until(what: Callable[[], Any], timeout: float, stack: Stack) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        stack.check_alive()
        time.sleep(0.5)


def _freeze(now: datetime, active: bool) -> list[MaintenanceWindow]:
    event = (
        "BEGIN:VEVENT\nUID:demo-peak\nSUMMARY:Peak season freeze\n"
        f"DTSTART:{(now - timedelta(hours=1)):%Y%m%dT%H%M%SZ}\n"
        f"DTEND:{(now + timedelta(hours=3)):%Y%m%dT%H%M%SZ}\n"
        f"X-ITSM-SCOPE:ENVIRONMENT:{ENV}\nEND:VEVENT\n"
    )
    return freeze_windows(f"BEGIN:VCALENDAR\n{event if active else ''}END:VCALENDAR\n", "demo-calendar", now)


def _asking(gate: GateClient, wanted: Callable[[Any], bool]) -> Callable[[], Any]:
    """A probe for _until: the gate's answer once it is the wanted one (the gate's views follow
    the topics, so a just-published window takes a moment to count)."""

    def probe() -> Any:
        answer = gate.check(**CHECK)
        return answer if wanted(answer) else None

    return probe


def _freeze_in(answer: Any) -> bool:
    return any("freeze window" in r for r in answer.reasons)


def run_change_demo(stack: Stack, settings: Settings, say: Callable[[str], None]) -> bool:
    """Denied in a freeze, denied without a change, a change requested and approved, allowed, the
    deploy reported, and the change closed with what was deployed. True if every step held."""
    serde, producer, now = AvroSerde(), Producer(producer_config(settings)), datetime.now(UTC)
    t = settings.topic

    def publish(topic: str, records: list[tuple[str, Any]]) -> None:
        publish_batch(producer, [encoded(serde, t(topic), key, r) for key, r in records])

    web = ConfigurationItem(
        ci_id="web-1",
        name="web-1",
        ci_class="server",
        service=SERVICE,
        owner_group="team-web",
        source_system="servicenow-cmdb",
        updated_at=now,
    )
    publish(CMDB_CI_UPDATES, [("web-1", web)])
    frozen = _freeze(now, True)
    publish(MAINTENANCE_WINDOWS, [(w.window_id, w) for w in frozen])
    ok = True
    gate = GateClient(stack.gate_url, stack.gate_token_file().read_text().strip(), True)
    itsm = stack.itsm()
    try:
        first = _until(_asking(gate, _freeze_in), 30, stack)
        ok &= bool(first) and first.exit_code == 1
        say(
            f"  deploy {SERVICE} -> {ENV} during the imported freeze: "
            f"{first.status if first else 'no answer'}"
        )
        for reason in first.reasons if first else []:
            say(f"      {reason}")
        lifted = plan(_freeze(now, False), frozen, "demo-calendar", now)
        publish(MAINTENANCE_WINDOWS, [(p.window.window_id, p.window) for p in lifted])
        second = _until(_asking(gate, lambda a: not _freeze_in(a)), 30, stack)
        ok &= bool(second) and second.exit_code == 1
        say(f"  after the freeze is lifted, without a change: {second.status if second else 'no answer'}")
        say(f"      {second.reasons[-1] if second else ''}")
        request = gate.submit(**CHECK, short_description=f"Deploy {SERVICE} {COMMIT}")
        rid = request.body["request_id"]
        rows = _until(
            lambda: itsm.get(
                "/api/now/table/change_request", params={"sysparm_query": f"correlation_id={rid}"}
            ).json()["result"],
            60,
            stack,
        )
        if not rows:
            say("  the requested change never reached the ITSM")
            return False
        number, sys_id = rows[0]["number"], rows[0]["sys_id"]
        say(
            f"  change requested through the gate: {number} (New); "
            "the demo plays the change manager and approves it"
        )
        itsm.patch(f"/api/now/table/change_request/{sys_id}", json={"state": "-2", "approval": "approved"})
        third = gate.wait(rid, 60, 0.5)
        ok &= third.exit_code == 0
        say(f"  deploy {SERVICE} -> {ENV} with the approved change: {third.status}")
        for phase, extra in (("STARTED", {}), ("SUCCEEDED", {"duration_ms": 93_000})):
            event = DeploymentEvent(
                event_id=f"demo-1-{phase}",
                deployment_id="demo-1",
                phase=phase,
                service=SERVICE,
                environment=ENV,
                ci_ids=["web-1"],
                commit_ids=[COMMIT],
                build_number=BUILD,
                pipeline="demo pipeline",
                change_id=number,
                occurred_at=datetime.now(UTC),
                **extra,
            )
            publish(DEPLOY_EVENTS, [("demo-1", event)])
        closed = _until(
            lambda: [
                r
                for r in itsm.get(f"/api/now/table/change_request/{sys_id}").json().values()
                if r.get("state") == "3"
            ],
            60,
            stack,
        )
        if not closed:
            say(f"  {number} was not closed")
            return False
        rec = closed[0]
        say(
            f"  deploy reported: {number} closed {rec['close_code']}, commits {rec['u_commit_ids']}, "
            f"build {rec['u_build_number']}, {int(rec['u_deploy_duration_ms']) / 1000:.0f}s"
        )
        ok &= (rec["close_code"], rec["u_commit_ids"], rec["u_build_number"]) == ("successful", COMMIT, BUILD)
        return ok
    finally:
        gate.close()
        itsm.close()
        producer.flush(5)
