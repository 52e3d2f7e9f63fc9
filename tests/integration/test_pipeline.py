"""The whole walking skeleton as real processes on the real broker: every record accounted for."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ops.kafka import Broker
from ops.stack import Stack
from streams.core.dlq import header_map
from streams.core.models import IncidentAction, IncidentCommand, SinkOutcome, SinkResult
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.stages.alerts.lifecycle import correlation_id
from tests.examples import alert, raw_alert_bytes
from tests.kafka_util import consume, produce
from tests.stacks import pipeline_stack

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data" / "alertmanager"
SERDE = AvroSerde()


@pytest.fixture
def stack(kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    with pipeline_stack(
        kafka_broker,
        kafka_settings,
        tmp_path / "stack",
        lifecycle={"stable_period": 1.0, "tick_interval": 0.2},
    ) as s:
        yield s


def all_incidents(s: Stack) -> list[dict[str, str]]:
    with s.itsm() as itsm:
        resp = itsm.get("/api/now/table/incident", params={"sysparm_fields": "number,state,correlation_id"})
        resp.raise_for_status()
        return list(resp.json()["result"])


def wait_for(predicate, s: Stack, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        s.check_alive()
        assert time.monotonic() < deadline, "timed out; logs:\n" + "\n".join(
            f"--- {n}\n{s.log_tail(n)}" for n in s.procs
        )
        time.sleep(0.5)


def test_poison_records_are_dead_lettered_while_the_records_around_them_arrive(
    stack: Stack, kafka_settings: Settings
) -> None:
    bootstrap, raw = kafka_settings.kafka_bootstrap, kafka_settings.topic("alerts.raw")
    good = [(f"fp{i:03d}".encode(), SERDE.encode(alert(f"fp{i:03d}")), []) for i in range(40)]
    garbage = (b"poison-1", b"\x00\x01 this is not avro", [("origin", b"test")])
    invalid = (b"poison-2", raw_alert_bytes(fingerprint="fp-invalid", name=""), [])
    # One partition, so the poison sits between good records in a single ordered log.
    records = [*good[:15], garbage, *good[15:30], invalid, *good[30:]]
    produce(bootstrap, raw, records, partition=0)
    stack.start(["devitsm", "worker", "sink"])

    wait_for(lambda: len(all_incidents(stack)) >= 40, stack)
    dead = consume(bootstrap, raw + ".dlq", 2, timeout=30)
    results = consume(bootstrap, kafka_settings.topic("itsm.results"), 40, timeout=30)

    incidents = all_incidents(stack)
    assert sorted(i["correlation_id"] for i in incidents) == sorted(
        correlation_id(f"fp{i:03d}") for i in range(40)
    )
    assert len(dead) == 2
    by_key = {m.key(): header_map(m.headers()) for m in dead}
    assert by_key[b"poison-1"]["dlq.offset"] == "15" and by_key[b"poison-1"]["dlq.error.class"] == "schema"
    assert by_key[b"poison-1"]["origin"] == "test" and by_key[b"poison-1"]["dlq.topic"] == raw
    assert (
        by_key[b"poison-2"]["dlq.offset"] == "31" and by_key[b"poison-2"]["dlq.error.class"] == "validation"
    )
    assert next(m.value() for m in dead if m.key() == b"poison-1") == garbage[1]  # original bytes kept
    outcomes = [SERDE.decode(m.value(), SinkResult).outcome for m in results]
    assert outcomes.count(SinkOutcome.CREATED) == 40
    # The count check: every record in is an incident or a dead letter.
    assert len(records) == len(incidents) + len(dead) == 42
    assert consume(bootstrap, kafka_settings.topic("itsm.incident.commands.dlq"), 1, timeout=2) == []


def test_commands_the_itsm_cannot_take_are_dead_lettered_and_the_stream_goes_on(
    stack: Stack, kafka_settings: Settings
) -> None:
    from datetime import UTC, datetime

    bootstrap, topic = kafka_settings.kafka_bootstrap, kafka_settings.topic("itsm.incident.commands")

    def cmd(cid: str) -> bytes:
        return SERDE.encode(
            IncidentCommand(
                command_id=f"c-{cid}",
                correlation_id=cid,
                action=IncidentAction.OPEN,
                short_description=f"t {cid}",
                issued_at=datetime.now(UTC),
            )
        )

    produce(
        bootstrap,
        topic,
        [(b"a", cmd("ok-a"), []), (b"x", cmd("bad^query"), []), (b"g", b"junk", []), (b"b", cmd("ok-b"), [])],
        partition=0,
    )
    stack.start(["devitsm", "sink"])
    wait_for(lambda: len(all_incidents(stack)) >= 2, stack)
    dead = consume(bootstrap, topic + ".dlq", 2, timeout=30)
    classes = sorted(header_map(m.headers())["dlq.error.class"] for m in dead)
    assert classes == ["schema", "validation"]
    assert sorted(i["correlation_id"] for i in all_incidents(stack)) == ["ok-a", "ok-b"]
    stage = {header_map(m.headers())["dlq.stage"] for m in dead}
    assert stage == {"sink.servicenow"}


def test_webhooks_through_gateway_worker_and_sink_become_incidents_and_resolve(
    stack: Stack, kafka_settings: Settings
) -> None:
    stack.start()
    firing = json.loads((DATA / "highcpu-group-firing.json").read_text())
    resolved = json.loads((DATA / "highcpu-resolved.json").read_text())
    r1 = httpx.post(f"{stack.gateway_url}/v1/alerts/alertmanager", json=firing, timeout=30)
    r2 = httpx.post(f"{stack.gateway_url}/v1/alerts/alertmanager", json=resolved, timeout=30)
    assert (r1.status_code, r2.status_code) == (202, 202)
    fps = r1.json()["fingerprints"]
    (resolved_fp,) = r2.json()["fingerprints"]
    assert resolved_fp in fps

    def settled() -> bool:
        states = {i["correlation_id"]: i["state"] for i in all_incidents(stack)}
        return len(states) == 3 and states.get(correlation_id(resolved_fp)) == "6"

    wait_for(settled, stack)
    states = {i["correlation_id"]: i["state"] for i in all_incidents(stack)}
    assert states == {correlation_id(fp): ("6" if fp == resolved_fp else "1") for fp in fps}
    results = consume(kafka_settings.kafka_bootstrap, kafka_settings.topic("itsm.results"), 4, timeout=30)
    outcomes = sorted(SERDE.decode(m.value(), SinkResult).outcome.value for m in results)
    # 4 alert notifications in: 3 incidents created, 1 resolved, nothing dead-lettered.
    assert outcomes == ["CREATED", "CREATED", "CREATED", "RESOLVED"]
    for topic in ("alerts.raw.dlq", "itsm.incident.commands.dlq"):
        assert consume(kafka_settings.kafka_bootstrap, kafka_settings.topic(topic), 1, timeout=2) == []
    # Every long-running process serves /metrics.
    for port in (stack.worker_metrics_port, stack.sink_metrics_port):
        assert "itsm_pipeline_" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert "itsm_pipeline_webhook_alerts_total" in httpx.get(f"{stack.gateway_url}/metrics").text


def test_change_commands_reach_the_itsm_through_the_change_sink(
    stack: Stack, kafka_settings: Settings
) -> None:
    from datetime import UTC, datetime

    from streams.core.models import ChangeCommand

    def cc(action: str, **kw: object) -> tuple[bytes, bytes, list]:  # type: ignore[type-arg]
        return (
            b"chg-1",
            SERDE.encode(
                ChangeCommand.model_validate(
                    dict(
                        command_id=f"cc-{action}",
                        correlation_id="chg-1",
                        action=action,
                        change_type="STANDARD",
                        short_description="Deploy checkout 421",
                        issued_at=datetime.now(UTC),
                        **kw,
                    )
                )
            ),
            [],
        )

    produce(
        kafka_settings.kafka_bootstrap,
        kafka_settings.topic("itsm.change.commands"),
        [
            cc("CREATE"),
            cc("UPDATE", commit_ids=["a1b2c3"], build_number="421"),
            cc("CLOSE", close_code="SUCCESSFUL", deploy_duration_ms=61000),
        ],
    )
    stack.start(["devitsm", "sink-change"])

    def closed() -> bool:
        with stack.itsm() as itsm:
            rows = itsm.get("/api/now/table/change_request", params={"sysparm_query": "correlation_id=chg-1"})
            result = rows.json()["result"]
            return bool(result) and result[0]["state"] == "3"

    wait_for(closed, stack)
    with stack.itsm() as itsm:
        (rec,) = itsm.get("/api/now/table/change_request").json()["result"]
    assert (
        rec["type"],
        rec["close_code"],
        rec["u_commit_ids"],
        rec["u_build_number"],
        rec["u_deploy_duration_ms"],
    ) == ("standard", "successful", "a1b2c3", "421", "61000")
    results = consume(kafka_settings.kafka_bootstrap, kafka_settings.topic("itsm.results"), 3, timeout=30)
    assert sorted(SERDE.decode(m.value(), SinkResult).outcome.value for m in results) == [
        "CREATED",
        "RESOLVED",
        "UPDATED",
    ]
