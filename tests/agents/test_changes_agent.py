"""The change agents' processor without a broker: CI update validation, parking, deploy linking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from streams.agents.app import create_app
from streams.core.dlq import Headers
from streams.core.messages import Consumed
from streams.core.models import (
    AuditEvent,
    AuditOutcome,
    ChangeCommand,
    ChangeRecord,
    ChangeType,
    ConfigurationItem,
    DeploymentEvent,
)
from streams.core.rules import load_rules
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.processors.changes import ChangeProcessor
from streams.processors.indexes import ChangeIndex, CIIncidentIndex, WindowIndex
from streams.stages.cmdb import CMDBIndex
from tests.agents.common import Clock, Collector, run

NOW = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
SETTINGS = Settings(topic_prefix="x.")
SERDE = AvroSerde()


def ci(ci_id: str = "web-1", **kw: Any) -> ConfigurationItem:
    return ConfigurationItem.model_validate(
        {
            "ci_id": ci_id,
            "name": ci_id,
            "ci_class": "server",
            "service": "checkout",
            "owner_group": "team-web",
            "source_system": "servicenow-cmdb",
            "updated_at": NOW,
            **kw,
        }
    )


def deploy(phase: str = "SUCCEEDED", **kw: Any) -> DeploymentEvent:
    return DeploymentEvent.model_validate(
        {
            "event_id": f"e-{phase}",
            "deployment_id": "d-1",
            "phase": phase,
            "service": "checkout",
            "environment": "production",
            "ci_ids": ["web-1"],
            "commit_ids": ["abc"],
            "build_number": "7",
            "duration_ms": 60_000,
            "occurred_at": NOW,
            **kw,
        }
    )


def request(ci_id: str) -> ChangeCommand:
    return ChangeCommand.model_validate(
        {
            "command_id": "c1",
            "correlation_id": "c1",
            "action": "CREATE",
            "change_type": "NORMAL",
            "short_description": "x",
            "ci_ids": [ci_id],
            "issued_at": NOW,
        }
    )


def approved_change() -> ChangeIndex:
    view = ChangeIndex(SERDE, "x.itsm.changes")
    view.put(
        ChangeRecord.model_validate(
            {
                "change_id": "CHG0030001",
                "itsm_id": "sys1",
                "target": "servicenow",
                "change_type": "NORMAL",
                "status": "SCHEDULED",
                "service": "checkout",
                "planned_start": NOW - timedelta(hours=1),
                "planned_end": NOW + timedelta(hours=1),
                "updated_at": NOW,
            }
        )
    )
    return view


def processor(out: Collector, clock: Clock, changes: ChangeIndex | None = None) -> ChangeProcessor:
    return ChangeProcessor(
        SETTINGS,
        SERDE,
        out,
        load_rules(),
        {},
        CMDBIndex(),
        changes or approved_change(),
        frozenset({"production"}),
        clock,
    )


def headers(h: Headers) -> dict[str, str]:
    return {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in h}


def test_accepted_updates_reach_cmdb_and_significant_ones_become_change_requests() -> None:
    out, clock = Collector(), Clock(NOW)
    p = processor(out, clock)
    assert (
        run(p.handle_ci_update(Consumed(b"web-1", SERDE.encode(ci()), [], "x.cmdb.ci.updates", 0, 1)))
        == "accepted"
    )
    moved = ci(service="payments", source_system="terraform", updated_at=NOW + timedelta(minutes=1))
    assert (
        run(p.handle_ci_update(Consumed(b"web-1", SERDE.encode(moved), [], "x.cmdb.ci.updates", 0, 2)))
        == "accepted_with_change"
    )
    assert [SERDE.decode(v or b"", ConfigurationItem).service for _, _, v, _ in out.on("cmdb.ci")] == [
        "checkout",
        "payments",
    ]
    ((_, key, value, _),) = out.on("itsm.change.commands")
    cmd = SERDE.decode(value or b"", ChangeCommand)
    assert key == cmd.correlation_id.encode() and cmd.change_type.value == "NORMAL"
    assert "service: checkout -> payments" in cmd.description


def test_an_unauthorized_update_is_dead_lettered_and_audited_and_the_cmdb_keeps_the_old_value() -> None:
    out, clock = Collector(), Clock(NOW)
    p = processor(out, clock)
    run(p.handle_ci_update(Consumed(b"web-1", SERDE.encode(ci()), [], "x.cmdb.ci.updates", 0, 1)))
    bad = ci(owner_group="someone-else", source_system="discovery", updated_at=NOW + timedelta(minutes=1))
    assert (
        run(
            p.handle_ci_update(
                Consumed(b"web-1", SERDE.encode(bad), [("traceparent", b"00-x")], "x.cmdb.ci.updates", 2, 9)
            )
        )
        == "rejected"
    )
    ((_, _, value, _),) = out.on("audit.events")
    audit = SERDE.decode(value or b"", AuditEvent)
    assert audit.outcome is AuditOutcome.REJECTED and audit.actor == "discovery"
    assert "may not change owner_group" in audit.reason
    ((_, key, raw, hdrs),) = out.on("cmdb.ci.updates.dlq")
    h = headers(hdrs)
    assert key == b"web-1" and raw == SERDE.encode(bad)
    assert h["dlq.error.class"] == "auth" and h["dlq.offset"] == "9" and h["dlq.stage"] == "changes.ci_update"
    assert len(out.on("cmdb.ci")) == 1 and p.cmdb.get("web-1").owner_group == "team-web"  # type: ignore[union-attr]


def test_undecodable_inputs_are_dead_lettered_with_their_class() -> None:
    out, clock = Collector(), Clock(NOW)
    p = processor(out, clock)
    assert run(p.handle_ci_update(Consumed(b"k", b"junk", [], "x.cmdb.ci.updates", 0, 1))) == "dead_lettered"
    assert run(p.handle(Consumed(b"k", b"junk", [], "x.deploy.events", 0, 2))) == "dead_lettered"
    assert [headers(h)["dlq.error.class"] for *_, h in out.sent] == ["schema", "schema"]


def test_a_deploy_naming_a_missing_ci_is_parked_until_the_ci_arrives() -> None:
    out, clock = Collector(), Clock(NOW)
    p = processor(out, clock)
    trace = [("traceparent", b"00-abc-def-01"), ("empty", None)]
    assert run(p.handle(Consumed(b"d-1", SERDE.encode(deploy()), trace, "x.deploy.events", 1, 5))) == "parked"
    assert out.sent == [] and len(p.parked) == 1
    clock.now += timedelta(seconds=30)
    assert run(p.tick(1)) == 1 and out.sent == []
    assert run(p.tick(0)) == 0  # another partition's tick leaves it alone
    p.cmdb.upsert(ci())
    assert run(p.tick(1)) == 0 and p.parked == {}
    ((_, _, value, sent_headers),) = out.on("itsm.change.commands")
    assert sent_headers == [("traceparent", b"00-abc-def-01")]  # the trace survived the parking
    cmd = SERDE.decode(value or b"", ChangeCommand)
    assert cmd.close_code is not None and cmd.close_code.value == "SUCCESSFUL" and cmd.itsm_ref == "sys1"
    assert len(out.on("audit.events")) == 1


def test_a_parked_record_is_dead_lettered_after_the_timeout_with_the_reason() -> None:
    out, clock = Collector(), Clock(NOW)
    p = processor(out, clock)
    assert (
        run(p.handle(Consumed(b"c1", SERDE.encode(request("db-9")), [], "x.change.requests", 2, 3)))
        == "parked"
    )
    clock.now += timedelta(seconds=load_rules().changes.park_timeout + 1)
    assert run(p.tick(2)) == 0 and p.parked == {}
    ((_, key, value, hdrs),) = out.sent
    h = headers(hdrs)
    assert key == b"c1" and value == SERDE.encode(request("db-9")) and h["dlq.offset"] == "3"
    assert "db-9 not in the CMDB" in h["dlq.exception.message"] and h["dlq.error.class"] == "validation"


def test_a_production_deploy_that_links_to_no_change_is_flagged() -> None:
    out, clock = Collector(), Clock(NOW)
    p = processor(out, clock, ChangeIndex(SERDE, "x.itsm.changes"))
    p.cmdb.upsert(ci())
    assert run(p.handle(Consumed(b"d-1", SERDE.encode(deploy()), [], "x.deploy.events", 0, 1))) == "unlinked"
    ((_, _, value, _),) = out.sent
    audit = SERDE.decode(value or b"", AuditEvent)
    assert audit.outcome is AuditOutcome.FLAGGED and audit.action == "deploy.unlinked"
    assert run(
        p.handle(Consumed(b"d-2", SERDE.encode(deploy(environment="staging")), [], "x.deploy.events", 0, 2))
    ) == ("not_required")
    assert len(out.sent) == 1


def test_the_faust_agents_run_in_test_context() -> None:
    out = Collector()
    cmdb = CMDBIndex()
    app = create_app(
        SETTINGS,
        SERDE,
        load_rules(),
        cmdb=cmdb,
        incidents=CIIncidentIndex(),
        windows=WindowIndex(SERDE, "w"),
        changes=approved_change(),
        emit=out,
        table={},
        parked={},
    )

    async def drive() -> None:
        async with app.agents["ci-updates"].test_context() as ctx:
            await ctx.put(key=b"web-1", value=SERDE.encode(ci()))
        async with app.agents["changes"].test_context() as ctx:
            # The test channel stands for change.requests: a request naming a known CI goes on.
            await ctx.put(key=b"c1", value=SERDE.encode(request("web-1")))

    run(drive())
    assert [t for t, *_ in out.sent] == ["x.cmdb.ci", "x.itsm.change.commands"]


def test_an_emergency_request_without_justification_is_dead_lettered() -> None:
    out, clock = Collector(), Clock(NOW)
    p = processor(out, clock)
    p.cmdb.upsert(ci())
    bad = request("web-1").model_copy(update={"change_type": ChangeType.EMERGENCY})
    assert run(p.handle(Consumed(b"c1", SERDE.encode(bad), [], "x.change.requests", 0, 4))) == "dead_lettered"
    ((topic, _, _, hdrs),) = out.sent
    assert (
        topic == "x.change.requests.dlq" and "needs a justification" in headers(hdrs)["dlq.exception.message"]
    )
    ok = request("web-1").model_copy(update={"change_type": ChangeType.EMERGENCY, "justification": "outage"})
    assert run(p.handle(Consumed(b"c1", SERDE.encode(ok), [], "x.change.requests", 0, 5))) == "forwarded"


def test_a_deployment_with_an_absurd_duration_is_dead_lettered_not_a_crash() -> None:
    out, clock = Collector(), Clock(NOW)
    p = processor(out, clock)
    p.cmdb.upsert(ci())
    absurd = deploy().model_copy(update={"duration_ms": 2**62})  # unvalidated, as a foreign producer
    assert (
        run(p.handle(Consumed(b"d-1", SERDE.encode(absurd), [], "x.deploy.events", 0, 9))) == "dead_lettered"
    )
    ((topic, _, _, hdrs),) = out.sent
    assert topic == "x.deploy.events.dlq" and headers(hdrs)["dlq.error.class"] == "validation"


def test_a_ci_whose_relationship_target_is_missing_waits_for_it_in_order_and_times_out_without_it() -> None:
    """A batch import whose relationships arrive first: app-1 RUNS_ON web-9, which comes later; a
    second update of app-1 waits behind the first; a CI pointing at a CI that never comes is
    dead-lettered after park_timeout with the missing id as the reason."""
    out, clock = Collector(), Clock(NOW)
    p = processor(out, clock)
    topic = "x.cmdb.ci.updates"
    edge = [{"type": "RUNS_ON", "target_ci_id": "web-9"}]
    app1 = ci("app-1", relationships=edge)
    app1_later = ci("app-1", relationships=edge, hostname="app-1.new", updated_at=NOW + timedelta(seconds=1))
    lost = ci("app-2", relationships=[{"type": "DEPENDS_ON", "target_ci_id": "never"}])
    assert run(p.handle_ci_update(Consumed(b"app-1", SERDE.encode(app1), [], topic, 0, 1))) == "parked"
    assert run(p.handle_ci_update(Consumed(b"app-1", SERDE.encode(app1_later), [], topic, 0, 2))) == "parked"
    assert run(p.handle_ci_update(Consumed(b"app-2", SERDE.encode(lost), [], topic, 0, 3))) == "parked"
    assert out.sent == [] and run(p.tick(0)) == 3
    assert (
        run(p.handle_ci_update(Consumed(b"web-9", SERDE.encode(ci("web-9")), [], topic, 0, 4))) == "accepted"
    )
    assert run(p.tick(0)) == 1  # app-1's two updates went on, in order; app-2 still waits
    written = [SERDE.decode(v, ConfigurationItem) for t, _, v, _ in out.sent if t == "x.cmdb.ci"]
    assert [(c.ci_id, c.hostname) for c in written] == [
        ("web-9", None),
        ("app-1", None),
        ("app-1", "app-1.new"),
    ]
    clock.now = NOW + timedelta(seconds=601)
    assert run(p.tick(0)) == 0
    (dead,) = [h for t, _, _, h in out.sent if t == "x.cmdb.ci.updates.dlq"]
    reason = headers(dead)["dlq.exception.message"]
    assert "relationship target(s) never not in the CMDB" in reason and "referential integrity" in reason
    assert p.parked == {}
