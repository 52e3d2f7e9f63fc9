"""Routing on the real broker: two sinks side by side (the development ITSM as ServiceNow, and a
real RT 5) each deliver only the incidents routes.toml sends them, into the queue the route
names; every command is counted by each sink (delivered, or not routed to it) and none twice."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ops.kafka import Broker
from streams.core.models import SinkResult
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.cli import Itsmctl
from tests.integration.test_silences_and_event_rules import rules_dir
from tests.kafka_util import consume
from tests.rt import ROOT_PASSWORD, RealRT, provision
from tests.stacks import pipeline_stack

pytestmark = pytest.mark.integration


def rt_tickets(rt: RealRT, queue: str) -> list[dict[str, object]]:
    r = httpx.get(
        f"{rt.url}/REST/2.0/tickets",
        params={"query": f"Queue='{queue}'", "fields": "Status,Subject"},
        auth=("root", ROOT_PASSWORD),
        timeout=10,
    )
    return list(r.json()["items"])


def test_two_sinks_receive_disjoint_routed_sets_in_the_queue_the_route_names(
    real_rt: RealRT, kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path, itsmctl: Itsmctl
) -> None:
    # A queue of the DBA team beside the sink's own, both this test's (the session's queue holds
    # other tests' tickets), and an RT account of this test's with rights on both (the session's
    # account keeps its one queue: other tests check its least privilege).
    routed_queue, own_queue = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("dba", "own"))
    user, password = f"itsm-route-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    for queue in (routed_queue, own_queue):
        provision(tmp_path, queue, user, password)
    rules = rules_dir(
        tmp_path,
        {"stable_period": 1.0, "tick_interval": 0.2},
        routes=f"""version = 2
targets = ["servicenow"]

[[route]]
name = "dba"
matchers = ['team="dba"']
targets = ["rt"]
fields.rt = {{ queue = "{routed_queue}" }}
""",
    )
    s = kafka_settings
    env = {
        "ITSM_RULES_DIR": str(rules),
        "ITSM_RT_URL": real_rt.url,
        "ITSM_RT_USER": user,
        "ITSM_RT_PASSWORD": password,
        "ITSM_RT_INCIDENT_QUEUE": own_queue,
        "ITSM_RT_CHANGE_QUEUE": own_queue,
    }
    with pipeline_stack(kafka_broker, s, tmp_path / "stack", extra_env=env) as stack:
        stack.start([*("devitsm", "worker", "sink", "gateway"), "sink-rt"])
        now = datetime.now(UTC).isoformat()

        def body(status: str) -> dict[str, object]:
            alerts = [
                {
                    "status": status,
                    "labels": {"alertname": "Routed", "instance": f"host-{i}:9100", "team": team},
                    "annotations": {"summary": f"routing test {team} {i}"},
                    "startsAt": now,
                    "endsAt": datetime.now(UTC).isoformat()
                    if status == "resolved"
                    else "0001-01-01T00:00:00Z",
                }
                for i, team in enumerate(["dba", "web", "dba", "web", "web", "web"])
            ]
            return {"receiver": "itsm-pipeline", "status": status, "alerts": alerts, "version": "4"}

        url = f"{stack.gateway_url}/v1/alerts/alertmanager"
        assert httpx.post(url, json=body("firing")).status_code == 202

        def incidents() -> list[str]:
            with stack.itsm() as itsm:
                rows = itsm.get("/api/now/table/incident", params={"sysparm_fields": "short_description"})
                return sorted(r["short_description"] for r in rows.json()["result"])

        deadline = time.monotonic() + 90
        while not (len(incidents()) == 4 and len(rt_tickets(real_rt, routed_queue)) == 2):
            stack.check_alive()
            assert time.monotonic() < deadline, (incidents(), stack.log_tail("sink-rt"))
            time.sleep(0.5)
        # Disjoint: the web team's four in the development ITSM, the DBA team's two in RT's
        # routed queue, nothing in the RT sink's own queue.
        assert incidents() == [f"[unknown] routing test web {i} on host-{i}:9100" for i in (1, 3, 4, 5)]
        assert sorted(str(t["Subject"]) for t in rt_tickets(real_rt, routed_queue)) == [
            f"[unknown] routing test dba {i} on host-{i}:9100" for i in (0, 2)
        ]
        assert rt_tickets(real_rt, own_queue) == []

        # The resolves follow the same routes, and RT finds its tickets in the routed queue.
        time.sleep(0.1)  # a resolve ends after its alert started
        assert httpx.post(url, json=body("resolved")).status_code == 202
        deadline = time.monotonic() + 60
        while {str(t["Status"]) for t in rt_tickets(real_rt, routed_queue)} != {"resolved"}:
            stack.check_alive()
            assert time.monotonic() < deadline, stack.log_tail("sink-rt")
            time.sleep(0.5)

        # Counted: every result names one target, and no correlation id reached both.
        results = [
            AvroSerde().decode(m.value(), SinkResult)
            for m in consume(s.kafka_bootstrap, s.topic("itsm.results"), 12, timeout=60)
        ]
        by_target: dict[str, set[str]] = {}
        for r in results:
            by_target.setdefault(r.target, set()).add(r.correlation_id)
        assert len(by_target["servicenow"]) == 4 and len(by_target["rt"]) == 2
        assert not by_target["servicenow"] & by_target["rt"]
        metrics = httpx.get(f"http://127.0.0.1:{stack.sink_metrics_port}/metrics").text
        # 12 commands (6 opens, 6 resolves): 8 delivered by ServiceNow's sink, 4 not routed to it.
        assert 'itsm_pipeline_sink_commands_total{outcome="not_routed",target="servicenow"} 4.0' in metrics
        # The RT sink read every command too (its group's lag is 0) while delivering only its 4.
        lag = json.loads(
            itsmctl(
                "lag",
                "--group",
                f"{s.app_id}-sink-rt",
                "-o",
                "json",
                ITSM_KAFKA_BOOTSTRAP=s.kafka_bootstrap,
                ITSM_TOPIC_PREFIX=s.topic_prefix,
            ).stdout
        )
        assert sum(int(p["lag"]) for p in lag["partitions"]) == 0, lag


def test_a_template_renders_into_the_incident_and_one_that_fails_dead_letters_the_alert(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    from streams.core.dlq import header_map

    rules = rules_dir(
        tmp_path,
        templates="version = 2\n[servicenow]\n"
        'short_description = "{{ alert.name }}: {{ alert.labels.instance }}"\n'
        'description = "Runbook {{ alert.annotations.runbook_url }} for {{ correlation_id }}"\n',
    )
    s = kafka_settings
    with pipeline_stack(
        kafka_broker, s, tmp_path / "stack", extra_env={"ITSM_RULES_DIR": str(rules)}
    ) as stack:
        stack.start()
        now = datetime.now(UTC).isoformat()
        alerts = [
            {
                "status": "firing",
                "labels": {"alertname": "Templated", "instance": instance},
                "annotations": annotations,
                "startsAt": now,
                "endsAt": "0001-01-01T00:00:00Z",
            }
            for instance, annotations in (
                ("good-1:9100", {"summary": "s", "runbook_url": "https://runbooks.example/templated"}),
                ("bad-1:9100", {"summary": "no runbook annotation"}),
            )
        ]
        body = {"receiver": "itsm-pipeline", "status": "firing", "alerts": alerts, "version": "4"}
        assert httpx.post(f"{stack.gateway_url}/v1/alerts/alertmanager", json=body).status_code == 202

        (letter,) = consume(s.kafka_bootstrap, s.topic("alerts.raw.dlq"), 1, timeout=60)
        reason = header_map(letter.headers())["dlq.exception.message"]
        assert "template servicenow.description" in reason and "runbook_url" in reason, reason
        deadline = time.monotonic() + 60
        while True:
            with stack.itsm() as itsm:
                rows = itsm.get(
                    "/api/now/table/incident", params={"sysparm_fields": "short_description,description"}
                ).json()["result"]
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        (row,) = rows
        assert row["short_description"] == "Templated: good-1:9100"
        assert row["description"].startswith("Runbook https://runbooks.example/templated for itsmp-")
        metrics = httpx.get(f"http://127.0.0.1:{stack.worker_metrics_port}/metrics").text
        # Every input accounted for: 2 in = 1 emitted + 1 dead-lettered (with the reason).
        assert 'itsm_pipeline_alert_outcomes_total{outcome="emitted"} 1.0' in metrics
        assert 'itsm_pipeline_alert_outcomes_total{outcome="dead_lettered"} 1.0' in metrics
