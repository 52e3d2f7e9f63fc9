"""Incident state back from the ITSM, on the real broker with real processes: a person resolves an
incident in the development ITSM while its alert fires and the worker follows the declared policy;
a person's assignment and priority survive the pipeline's next update; the incident sync starts
again without republishing what it published before."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ops.dlq import read_all
from ops.kafka import Broker
from ops.stack import Stack
from streams.core.models import IncidentRecord
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.stages.alerts.lifecycle import correlation_id
from tests.examples import alert
from tests.kafka_util import produce
from tests.stacks import pipeline_stack

pytestmark = pytest.mark.integration
SERDE = AvroSerde()
FP = "fp-person-1"
REOPEN = 6.0


@pytest.fixture
def stack(kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    with pipeline_stack(
        kafka_broker,
        kafka_settings,
        tmp_path / "stack",
        lifecycle={"stable_period": 1.0, "tick_interval": 0.2, "reopen_period": REOPEN, "dedup_window": 0},
    ) as s:
        yield s


def wait_for(predicate: Callable[[], Any], s: Stack, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        s.check_alive()
        assert time.monotonic() < deadline, "timed out; logs:\n" + "\n".join(
            f"--- {n}\n{s.log_tail(n)}" for n in s.procs
        )
        time.sleep(0.3)
    return value


def incident(s: Stack) -> dict[str, Any] | None:
    with s.itsm() as itsm:
        rows = itsm.get(
            "/api/now/table/incident",
            params={"sysparm_query": f"correlation_id={correlation_id(FP)}", "sysparm_display_value": "all"},
        ).json()["result"]
    return {k: v["value"] for k, v in rows[0].items()} | {"_shown": rows[0]} if rows else None


def admin(s: Stack) -> httpx.Client:
    """A person in the ITSM (its administrator account), not the pipeline's account."""
    return httpx.Client(base_url=s.devitsm_url, auth=("admin", s.admin_password_file.read_text()), timeout=10)


def sys_id(s: Stack, table: str, query: str) -> str:
    with admin(s) as person:
        return str(
            person.get(f"/api/now/table/{table}", params={"sysparm_query": query}).json()["result"][0][
                "sys_id"
            ]
        )


def synced(settings: Settings) -> list[IncidentRecord]:
    return [
        SERDE.decode(m.value(), IncidentRecord) for m in read_all(settings, settings.topic("itsm.incidents"))
    ]


def fire(settings: Settings, severity: str = "warning") -> None:
    produce(
        settings.kafka_bootstrap,
        settings.topic("alerts.raw"),
        [(FP.encode(), SERDE.encode(alert(FP, severity=severity)), [])],
    )


def test_a_person_resolving_assigning_and_reprioritising_is_followed_and_never_overwritten(
    stack: Stack, kafka_settings: Settings, itsmctl: Any
) -> None:
    stack.start(["devitsm", "worker", "sink", "incidents-sync"])
    fire(kafka_settings)
    opened = wait_for(lambda: incident(stack), stack)
    assert opened["state"] == "1" and opened["impact"] == "3"
    wait_for(lambda: synced(kafka_settings), stack)  # the sync has seen it as the pipeline opened it

    # A person takes it: assigns it to the on-call lead and the web team, and raises its impact.
    oncall, team = (
        sys_id(stack, "sys_user", "user_name=oncall"),
        sys_id(stack, "sys_user_group", "name=web-team"),
    )
    with admin(stack) as person:
        edit = {"assigned_to": oncall, "assignment_group": team, "impact": "1", "urgency": "2"}
        assert person.patch(f"/api/now/table/incident/{opened['sys_id']}", json=edit).status_code == 200
    wait_for(
        lambda: any(r.person_changed == ["assignment", "priority"] for r in synced(kafka_settings)), stack
    )
    time.sleep(3)  # the worker's view of itsm.incidents follows the topic

    # The alert escalates: the pipeline's update notes it and leaves what the person set.
    fire(kafka_settings, severity="critical")
    noted = wait_for(
        lambda: (i := incident(stack)) and "the priority stays as a person set it" in i["work_notes"] and i,
        stack,
    )
    assert (noted["assigned_to"], noted["assignment_group"], noted["impact"], noted["urgency"]) == (
        oncall,
        team,
        "1",
        "2",
    )

    # The person resolves it while the alert still fires.
    with admin(stack) as person:
        resolved_at = time.monotonic()
        person.patch(
            f"/api/now/table/incident/{opened['sys_id']}", json={"state": "6", "close_code": "Solved"}
        )
    wait_for(
        lambda: any(
            r.status.value == "RESOLVED" and not r.resolved_by_pipeline for r in synced(kafka_settings)
        ),
        stack,
    )
    fire(kafka_settings)  # a repeat within reopen_period changes nothing in the ITSM
    time.sleep(1)
    assert incident(stack)["state"] == "6"  # type: ignore[index]
    # After reopen_period of firing: reopened, once, with the note naming who resolved it.
    reopened = wait_for(lambda: (i := incident(stack)) and i["state"] == "2" and i, stack)
    assert time.monotonic() - resolved_at >= REOPEN - 1
    assert "Reopened: the alert kept firing" in reopened["work_notes"]
    assert "after admin resolved INC" in reopened["work_notes"]
    assert reopened["assigned_to"] == oncall  # still the person's
    time.sleep(REOPEN + 2)
    settled = incident(stack)
    assert settled is not None and settled["state"] == "2" and settled["work_notes"].count("Reopened") == 1

    # The sync starts again: nothing it published is published again; a new change is, once.
    before = synced(kafka_settings)
    assert stack.stop_one("incidents-sync") == 0
    stack.start(["incidents-sync"])
    time.sleep(4)  # several passes
    assert len(synced(kafka_settings)) == len(before)
    with admin(stack) as person:
        person.patch(f"/api/now/table/incident/{opened['sys_id']}", json={"urgency": "1"})
    wait_for(lambda: len(synced(kafka_settings)) == len(before) + 1, stack)
    time.sleep(3)
    after = synced(kafka_settings)
    assert len(after) == len(before) + 1 and after[-1].priority == "1"

    # The report reads itsm.incidents: the reopened incident is open again (no time to restore).
    env = {
        "ITSM_KAFKA_BOOTSTRAP": kafka_settings.kafka_bootstrap,
        "ITSM_TOPIC_PREFIX": kafka_settings.topic_prefix,
    }
    report = itsmctl("incidents", "report", "-o", "json", **env)
    assert report.returncode == 0, report.stderr
    document = json.loads(report.stdout)
    assert document["open"] == {"servicenow": 1} and document["rows"] == []
    text = itsmctl("incidents", "report", **env)
    assert "servicenow: 1 incident(s) open now" in text.stdout


def test_the_report_gives_time_to_restore_per_target_and_resolver(
    kafka_settings: Settings, itsmctl: Any
) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)

    def record(cid: str, minutes: float, by_pipeline: bool, target: str = "servicenow") -> IncidentRecord:
        opened = now - timedelta(hours=1)
        return IncidentRecord.model_validate(
            {
                "target": target,
                "correlation_id": cid,
                "itsm_id": cid,
                "status": "RESOLVED",
                "resolved_by": "pipeline" if by_pipeline else "ada",
                "resolved_by_pipeline": by_pipeline,
                "opened_at": opened,
                "resolved_at": opened + timedelta(minutes=minutes),
                "updated_at": opened + timedelta(minutes=minutes),
                "time_to_restore_seconds": minutes * 60,
            }
        )

    records = [record("a", 10, True), record("b", 20, True), record("c", 30, True), record("d", 90, False)]
    records.append(record("old", 5, True).model_copy(update={"resolved_at": now - timedelta(days=60)}))
    produce(
        kafka_settings.kafka_bootstrap,
        kafka_settings.topic("itsm.incidents"),
        [(r.key.encode(), SERDE.encode(r), []) for r in records],
    )
    env = {
        "ITSM_KAFKA_BOOTSTRAP": kafka_settings.kafka_bootstrap,
        "ITSM_TOPIC_PREFIX": kafka_settings.topic_prefix,
    }
    rows = json.loads(itsmctl("incidents", "report", "--since", "30d", "-o", "json", **env).stdout)["rows"]
    assert [(r["resolved_by"], r["incidents"], r["p50_s"], r["max_s"]) for r in rows] == [
        ("person", 1, 5400.0, 5400.0),
        ("pipeline", 3, 1200.0, 1800.0),  # the one resolved 60 days ago is outside --since
    ]
    text = itsmctl("incidents", "report", "--since", "30d", **env).stdout
    assert "servicenow  pipeline             3     20.0m     20.0m     30.0m     30.0m" in text
