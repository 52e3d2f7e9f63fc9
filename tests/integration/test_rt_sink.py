"""The RT sink against a real Request Tracker 5: the same sink code the pipeline runs, on a real ITSM."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from connectors.sinks.http import RetryPolicy, SinkError
from connectors.sinks.rt.config import RTConfig
from connectors.sinks.rt.sink import RTSink
from ops.kafka import Broker
from ops.stack import Stack
from streams.core.dlq import ErrorClass
from streams.core.models import ChangeCommand, IncidentAction, IncidentCommand, SinkOutcome
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.kafka_util import kafka_env, produce
from tests.rt import ROOT_PASSWORD, RealRT

pytestmark = pytest.mark.integration
SERDE = AvroSerde()


def sink(rt: RealRT, queue: str | None = None) -> RTSink:
    cfg = RTConfig(
        f"{rt.url}/REST/2.0",
        rt.user,
        SecretStr(rt.password),
        queue or rt.queue,
        queue or rt.queue,
        "ITSM Correlation Id",
        "ITSM CI",
        True,
        10.0,
    )
    return RTSink(cfg, RetryPolicy(budget_seconds=10, initial_seconds=0.05))


def tickets(rt: RealRT, cid: str) -> list[dict[str, Any]]:
    q = f"Queue='{rt.queue}' AND 'CF.{{ITSM Correlation Id}}'='{cid}'"
    r = httpx.get(
        f"{rt.url}/REST/2.0/tickets",
        params={"query": q, "fields": "Status,Subject"},
        auth=("root", ROOT_PASSWORD),
        timeout=10,
    )
    return list(r.json()["items"])


def ticket(rt: RealRT, tid: str) -> dict[str, Any]:
    return dict(httpx.get(f"{rt.url}/REST/2.0/ticket/{tid}", auth=("root", ROOT_PASSWORD), timeout=10).json())


def incident(action: IncidentAction, cid: str, **kw: object) -> IncidentCommand:
    return IncidentCommand.model_validate(
        dict(
            command_id=f"c-{action}",
            correlation_id=cid,
            action=action,
            short_description="Disk full on db-1",
            description="97% used",
            ci_id="db-1",
            issued_at=datetime.now(UTC),
            **kw,
        )
    )


def test_incidents_in_a_real_rt_open_once_resolve_and_reopen(real_rt: RealRT) -> None:
    s = sink(real_rt)
    cid = f"itsmp-{time.monotonic_ns()}"
    first = s.handle_incident(incident(IncidentAction.OPEN, cid))
    again = s.handle_incident(incident(IncidentAction.OPEN, cid))
    assert (first.outcome, again.outcome) == (SinkOutcome.CREATED, SinkOutcome.UPDATED)
    (t,) = tickets(real_rt, cid)
    assert t["id"] == first.itsm_id and t["Subject"] == "Disk full on db-1"
    full = ticket(real_rt, t["id"])
    fields = {c["name"]: c["values"] for c in full["CustomFields"]}
    assert fields == {"ITSM Correlation Id": [cid], "ITSM CI": ["db-1"]}
    assert (
        s.handle_incident(incident(IncidentAction.RESOLVE, cid, resolution_note="cleared")).outcome
        is SinkOutcome.RESOLVED
    )
    assert ticket(real_rt, t["id"])["Status"] == "resolved"
    assert s.handle_incident(incident(IncidentAction.RESOLVE, cid)).outcome is SinkOutcome.NOOP
    assert s.handle_incident(incident(IncidentAction.OPEN, cid)).message == "reopened"
    assert ticket(real_rt, t["id"])["Status"] == "open"
    assert len(tickets(real_rt, cid)) == 1


def test_changes_in_a_real_rt_close_resolved_or_rejected(real_rt: RealRT) -> None:
    s = sink(real_rt)

    def cc(cid: str, action: str, **kw: object) -> ChangeCommand:
        return ChangeCommand.model_validate(
            dict(
                command_id=f"cc-{action}",
                correlation_id=cid,
                action=action,
                change_type="NORMAL",
                short_description="Deploy 421",
                issued_at=datetime.now(UTC),
                **kw,
            )
        )

    ok, bad = f"chg-ok-{time.monotonic_ns()}", f"chg-bad-{time.monotonic_ns()}"
    assert s.handle_change(cc(ok, "CREATE")).outcome is SinkOutcome.CREATED
    s.handle_change(cc(ok, "UPDATE", commit_ids=["a1b2"], build_number="421"))
    s.handle_change(cc(ok, "CLOSE", close_code="SUCCESSFUL", deploy_duration_ms=61000))
    s.handle_change(cc(bad, "CLOSE", close_code="UNSUCCESSFUL"))
    assert ticket(real_rt, tickets(real_rt, ok)[0]["id"])["Status"] == "resolved"
    assert ticket(real_rt, tickets(real_rt, bad)[0]["id"])["Status"] == "rejected"
    # A change a person made in RT: the deploy linker addresses it by its ticket id.
    mine = f"chg-person-{time.monotonic_ns()}"
    made = s.handle_change(cc(mine, "CREATE"))
    closed = s.handle_change(
        cc(f"change-{made.itsm_id}", "CLOSE", close_code="SUCCESSFUL", itsm_ref=made.itsm_id)
    )
    assert (
        closed.outcome is SinkOutcome.RESOLVED and ticket(real_rt, made.itsm_id or "")["Status"] == "resolved"
    )
    with pytest.raises(SinkError, match="has no change"):
        s.handle_change(cc("change-none", "UPDATE", itsm_ref="99999999"))


def test_a_queue_rt_refuses_is_a_permanent_error(real_rt: RealRT) -> None:
    with pytest.raises(SinkError) as info:
        sink(real_rt, queue="no-such-queue").handle_incident(incident(IncidentAction.OPEN, "itsmp-nq"))
    assert info.value.error_class is ErrorClass.AUTH and info.value.status == 403 and not info.value.retryable


def test_commands_on_kafka_become_rt_tickets_through_itsmctl_sink_rt(
    real_rt: RealRT, kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    s = kafka_settings
    stack = Stack(
        tmp_path / "stack",
        kafka_broker.bootstrap,
        kafka_env=kafka_env(kafka_broker.bootstrap),
        topic_prefix=s.topic_prefix,
        app_id=s.app_id,
        extra_env={
            "ITSM_RT_URL": real_rt.url,
            "ITSM_RT_USER": real_rt.user,
            "ITSM_RT_PASSWORD": real_rt.password,
            "ITSM_RT_INCIDENT_QUEUE": real_rt.queue,
            "ITSM_RT_CHANGE_QUEUE": real_rt.queue,
        },
    )
    base = f"kafka-{time.monotonic_ns()}"
    cmds = [
        (f"{base}-{i}".encode(), SERDE.encode(incident(IncidentAction.OPEN, f"{base}-{i}")), [])
        for i in range(5)
    ]
    cmds.append((f"{base}-0".encode(), SERDE.encode(incident(IncidentAction.RESOLVE, f"{base}-0")), []))
    produce(s.kafka_bootstrap, s.topic("itsm.incident.commands"), cmds, partition=0)
    stack.start(["sink-rt"])
    try:
        deadline = time.monotonic() + 90
        while not (
            all(tickets(real_rt, f"{base}-{i}") for i in range(5))
            and tickets(real_rt, f"{base}-0")[0]["Status"] == "resolved"
        ):
            stack.check_alive()
            assert time.monotonic() < deadline, stack.log_tail("sink-rt")
            time.sleep(0.5)
        assert [len(tickets(real_rt, f"{base}-{i}")) for i in range(5)] == [1] * 5
    finally:
        stack.stop()


def test_the_resolved_policy_new_opens_a_new_rt_ticket(real_rt: RealRT) -> None:
    s = sink(real_rt)
    s.resolved_policy = "new"
    cid = f"itsmp-new-{time.monotonic_ns()}"
    s.handle_incident(incident(IncidentAction.OPEN, cid))
    s.handle_incident(incident(IncidentAction.RESOLVE, cid))
    assert s.handle_incident(incident(IncidentAction.OPEN, cid)).outcome is SinkOutcome.CREATED
    assert sorted(t["Status"] for t in tickets(real_rt, cid)) == ["new", "resolved"]


def test_rt_finds_a_known_ticket_by_its_id(real_rt: RealRT) -> None:
    from prometheus_client import REGISTRY

    from connectors.sinks.known import KnownIds

    s = sink(real_rt)
    s.known = KnownIds("rt")
    cid = f"itsmp-known-{time.monotonic_ns()}"
    created = s.handle_incident(incident(IncidentAction.OPEN, cid))
    s.known.learn(created)
    before = (
        REGISTRY.get_sample_value("itsm_pipeline_sink_lookups_total", {"target": "rt", "via": "known"}) or 0
    )
    assert s.handle_incident(incident(IncidentAction.RESOLVE, cid)).outcome is SinkOutcome.RESOLVED
    assert (
        REGISTRY.get_sample_value("itsm_pipeline_sink_lookups_total", {"target": "rt", "via": "known"})
        == before + 1
    )


def test_itsm_check_against_the_real_rt(real_rt: RealRT, tmp_path: Path, itsmctl: Any) -> None:
    secret = tmp_path / "rt.pw"
    secret.write_text(real_rt.password)
    env = {
        "ITSM_RT_URL": real_rt.url,
        "ITSM_RT_USER": real_rt.user,
        "ITSM_RT_PASSWORD_FILE": str(secret),
        "ITSM_RT_INCIDENT_QUEUE": real_rt.queue,
        "ITSM_RT_CHANGE_QUEUE": real_rt.queue,
    }
    # A ticket the pipeline opened, to read the ticket rights on.
    sink(real_rt).handle_incident(incident(IncidentAction.OPEN, f"itsmp-check-{time.monotonic_ns()}"))
    # The account ops/rt/provision.pl made: every right the sink needs, nothing beyond.
    good = itsmctl("itsm", "check", "rt", **env)
    assert good.returncode == 0, good.stdout
    assert f"ok    queue {real_rt.queue}" in good.stdout and "may create tickets" in good.stdout
    assert "ok    custom field 'ITSM Correlation Id'" in good.stdout
    assert "ok    ticket rights" in good.stdout and "may comment on and resolve" in good.stdout
    assert "ok    least privilege" in good.stdout and "0 problem(s), 0 warning(s)" in good.stdout
    # root sees every queue: more than the sink needs.
    secret.write_text(ROOT_PASSWORD)
    root = itsmctl("itsm", "check", "rt", **env | {"ITSM_RT_USER": "root"})
    assert root.returncode == 0 and "WARN  least privilege" in root.stdout and "General" in root.stdout

    secret.write_text("not-the-password")
    bad = itsmctl("itsm", "check", "rt", **env)
    assert bad.returncode == 1 and "FAIL  credentials" in bad.stdout
    secret.write_text(real_rt.password)
    missing = itsmctl("itsm", "check", "rt", **env, ITSM_RT_CORRELATION_FIELD="No Such Field")
    assert missing.returncode == 1 and "FAIL  custom field 'No Such Field'" in missing.stdout
    elsewhere = itsmctl("itsm", "check", "rt", **env | {"ITSM_RT_INCIDENT_QUEUE": "General"})
    assert elsewhere.returncode == 1 and "FAIL  queue General" in elsewhere.stdout  # no SeeQueue there


def test_incident_state_read_back_from_the_real_rt(real_rt: RealRT) -> None:
    from connectors.sources.incidents.base import with_history
    from connectors.sources.incidents.rt import RTIncidents
    from streams.core.models import IncidentStatus

    s = sink(real_rt)
    cid = f"itsmp-state-{time.monotonic_ns()}"
    opened = s.handle_incident(incident(IncidentAction.OPEN, cid))
    reader = RTIncidents(s.config, RetryPolicy(budget_seconds=10, initial_seconds=0.05))
    (first,) = [r for r in reader.changed_since(None) if r.correlation_id == cid]
    first = with_history(reader, None, first)
    assert (first.status, first.number, first.updated_by, first.person_changed) == (
        IncidentStatus.OPEN,
        opened.itsm_id,
        real_rt.user,
        [],
    )
    # A person (root) takes the ticket and resolves it.
    person = httpx.Client(base_url=f"{real_rt.url}/REST/2.0", auth=("root", ROOT_PASSWORD), timeout=10)
    assert (
        person.put(f"/ticket/{opened.itsm_id}", json={"Owner": "root", "Status": "resolved"}).status_code
        == 200
    )
    (done,) = [r for r in reader.changed_since(first.updated_at) if r.correlation_id == cid]
    done = with_history(reader, first, done)
    assert (done.status, done.assigned_to, done.resolved_by, done.resolved_by_pipeline) == (
        IncidentStatus.RESOLVED,
        "root",
        "root",
        False,
    )
    assert done.person_changed == ["assignment"] and done.time_to_restore_seconds is not None
    # The pipeline's own resolve is told apart.
    other = f"itsmp-state-{time.monotonic_ns()}"
    s.handle_incident(incident(IncidentAction.OPEN, other))
    s.handle_incident(incident(IncidentAction.RESOLVE, other))
    (mine,) = [r for r in reader.changed_since(None) if r.correlation_id == other]
    assert mine.status is IncidentStatus.RESOLVED and mine.resolved_by_pipeline


def test_an_acknowledgement_opens_a_new_ticket_in_real_rt(real_rt: RealRT) -> None:
    s = sink(real_rt)
    cid = f"itsmp-ack-{time.monotonic_ns()}"
    s.handle_incident(incident(IncidentAction.OPEN, cid))
    assert tickets(real_rt, cid)[0]["Status"] == "new"
    done = s.handle_incident(incident(IncidentAction.UPDATE, cid, acknowledged=True, work_note="ack"))
    assert done.message == "acknowledged: open" and tickets(real_rt, cid)[0]["Status"] == "open"
    again = s.handle_incident(incident(IncidentAction.UPDATE, cid, acknowledged=True, work_note="ack"))
    assert again.message == "commented"  # already open: a note only
