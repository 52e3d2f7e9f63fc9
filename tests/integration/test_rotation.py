"""Credentials rotated under a running pipeline: the gateway's, worker's and sink's broker passwords
and the sink's ITSM password change while alerts flow; no process restarts, every alert becomes
exactly one incident, nothing is dead-lettered.

A secured broker of its own whose clients must re-authenticate every few seconds
(connections.max.reauth.ms): once the broker holds only the new passwords, a client still on an
old one would be cut off, so the alerts sent after that prove each process took its new password."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from ops.kafka.security import scram_user
from ops.stack import Stack
from tests.kafka_util import consume
from tests.secured import APP, PREFIX, Secured, secured_broker

pytestmark = pytest.mark.integration
REAUTH_MS = 4000
PRINCIPALS = {"gateway": "gateway", "worker": "worker", "sink": "sink-servicenow"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    yield from secured_broker(tmp_path_factory.mktemp("rotation-broker"), reauth_ms=REAUTH_MS)


def webhook(i: int) -> dict[str, object]:
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="Rotation{i}"}}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "itsm-pipeline",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": f"Rotation{i}", "instance": f"host-{i:03d}", "severity": "warning"},
                "annotations": {"summary": f"alert {i}"},
                "startsAt": "2026-11-27T08:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": f"{i + 1:016x}",
            }
        ],
    }


def incidents(stack: Stack, password: str) -> list[str]:
    with httpx.Client(base_url=stack.devitsm_url, auth=("pipeline", password), timeout=10) as itsm:
        got = itsm.get("/api/now/table/incident", params={"sysparm_fields": "short_description"})
        got.raise_for_status()
        return [row["short_description"] for row in got.json()["result"]]


def test_broker_and_itsm_credentials_rotate_mid_stream_without_a_restart(
    secured: Secured, tmp_path: Path
) -> None:
    workdir = tmp_path / "stack"
    workdir.mkdir()
    # The development ITSM and the sink each read their own file: the ITSM accepts every line of
    # its file (a rotation's overlap, as a second OAuth secret or integration account would give).
    old_itsm, new_itsm = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    itsm_file, sink_itsm_file = workdir / "itsm.passwords", workdir / "sink-itsm.password"
    for path in (itsm_file, sink_itsm_file):
        path.touch(mode=0o600)
        path.write_text(old_itsm)
    component_env = {name: secured.env(principal) for name, principal in PRINCIPALS.items()}
    component_env["devitsm"] = {"ITSM_DEVITSM_PASSWORD_FILE": str(itsm_file)}
    component_env["sink"]["ITSM_SERVICENOW_PASSWORD_FILE"] = str(sink_itsm_file)
    stack = Stack(
        workdir,
        secured.broker.bootstrap,
        kafka_env=secured.env("admin"),
        topic_prefix=PREFIX,
        app_id=APP,
        component_env=component_env,
    )
    posted: list[int] = []
    failures: list[str] = []

    def post_range(first: int, last: int, pace: float) -> None:
        for i in range(first, last):
            resp = httpx.post(f"{stack.gateway_url}/v1/alerts/alertmanager", json=webhook(i), timeout=30)
            if resp.status_code == 202:
                posted.append(i)
            else:
                failures.append(f"{i}: {resp.status_code} {resp.text[:200]}")
            time.sleep(pace)

    def wait_incidents(n: int, timeout: float = 180) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(found := incidents(stack, itsm_file.read_text().split()[-1])) < n:
            stack.check_alive()
            assert time.monotonic() < deadline, (len(found), {k: stack.log_tail(k) for k in stack.procs})
            time.sleep(0.5)
        return found

    try:
        stack.start(["devitsm", "gateway", "worker", "sink"])
        pids = {name: proc.pid for name, proc in stack.procs.items()}
        # The pipeline runs end to end first, so the rotation comes mid-stream, not mid-start (on
        # a loaded machine the worker was still declaring its topics 3 s after it was spawned).
        post_range(0, 1, 0.0)
        wait_incidents(1)
        flowing = threading.Thread(target=post_range, args=(1, 60, 0.25))  # about 15 s of alerts
        flowing.start()
        time.sleep(3)
        # Kafka: each principal's new password, at the broker and in its file.
        admin = AdminClient(secured.broker.client_config())
        for principal in PRINCIPALS.values():
            fresh = secrets.token_urlsafe(24)
            scram_user(admin, principal, fresh)
            secured.passwords[principal].write_text(fresh)
        # The ITSM: the new password beside the old, the sink moves to it, the old one goes.
        itsm_file.write_text(f"{old_itsm}\n{new_itsm}\n")
        time.sleep(1.5)
        sink_itsm_file.write_text(new_itsm)
        time.sleep(3)
        itsm_file.write_text(new_itsm)
        flowing.join()
        wait_incidents(60)
        # Every connection opened before has had to re-authenticate by now: only new passwords work.
        time.sleep(2 * REAUTH_MS / 1000)
        with httpx.Client(base_url=stack.devitsm_url, auth=("pipeline", old_itsm)) as old:
            assert old.get("/api/now/table/incident", params={"sysparm_limit": "1"}).status_code == 401
        post_range(60, 70, 0.0)
        found = wait_incidents(70)
        assert failures == []
        assert sorted(posted) == list(range(70))
        assert len(found) == 70 and len(set(found)) == 70  # each alert exactly one incident
        assert {name: proc.pid for name, proc in stack.procs.items()} == pids  # nothing restarted
        for topic in ("alerts.raw.dlq", "itsm.incident.commands.dlq"):
            assert consume(secured.broker.bootstrap, f"{PREFIX}{topic}", 1, timeout=2) == []
        logs = {name: (workdir / "logs" / f"{name}.log").read_text() for name in PRINCIPALS}
        for name, text in logs.items():
            assert "kafka_credentials_rotated" in text, name
        assert "secret_reloaded" in logs["sink"]
    finally:
        codes = stack.stop()
    assert all(code == 0 for code in codes.values()), (codes, {n: stack.log_tail(n) for n in codes})


def test_views_outlive_the_seconds_between_a_new_password_at_the_broker_and_in_their_file(
    secured: Secured,
) -> None:
    """The broker holds a principal's new password before the process's file does: the views'
    clients are refused meanwhile (their connections re-authenticate every 4 s here), and once the
    new password reaches them they follow their topics again instead of having failed their process.

    librdkafka hands a consumer's poll a refusal only when one of its requests was on a connection
    whose re-authentication failed, so five views are refused for 20 s (without the grace, one of
    them failed in each of several runs)."""
    from confluent_kafka import Producer

    from streams.core.follower import TopicFollower
    from streams.core.kafka import renew_later

    principal = "gate"  # a view reader the pipeline test above does not run as
    settings = secured.settings(principal)
    topics = [
        settings.topic(t)
        for t in ("cmdb.ci", "maintenance.windows", "itsm.changes", "gate.requests", "rules.sets")
    ]
    seen: dict[str, list[bytes]] = {topic: [] for topic in topics}
    views = [
        TopicFollower(settings, topic, lambda key, _v, got=seen[topic]: got.append(key)) for topic in topics
    ]
    try:
        for view in views:
            view.start()
        for view in views:
            view.wait_ready(60)
        fresh = secrets.token_urlsafe(24)
        scram_user(AdminClient(secured.broker.client_config()), principal, fresh)
        secured.passwords[principal].write_text(fresh)
        time.sleep(5 * REAUTH_MS / 1000)  # every connection has had to re-authenticate, and failed
        assert [view.problem() for view in views] == [None] * len(views)
        for view in views:
            renew_later(view._consumer, principal, fresh)  # what the password file's watcher does
        producer = Producer(secured.broker.client_config())
        for topic in topics:
            producer.produce(topic, key=b"after-rotation", value=None)
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 30
        while any(b"after-rotation" not in got for got in seen.values()) and time.monotonic() < deadline:
            for view in views:
                view.check()
            time.sleep(0.2)
        assert all(b"after-rotation" in got for got in seen.values()), {t: len(g) for t, g in seen.items()}
        for view in views:
            view.check()
    finally:
        for view in views:
            view.signal_stop()
        for view in views:
            view.stop()


def test_a_view_started_between_a_new_password_at_the_broker_and_in_its_file_catches_up(
    secured: Secured,
) -> None:
    """A process starting in a rotation's seconds between the two steps: its view is refused at
    first, takes the new password from its file, catches up and follows its topic."""
    from confluent_kafka import Producer

    from streams.core.follower import TopicFollower
    from streams.core.kafka import renew_later

    principal = "gate"
    settings = secured.settings(principal)  # the old password, as the file still holds it
    topic = settings.topic("cmdb.ci")
    producer = Producer(secured.broker.client_config())
    producer.produce(topic, key=b"before-start", value=None)
    assert producer.flush(30) == 0
    fresh = secrets.token_urlsafe(24)
    scram_user(AdminClient(secured.broker.client_config()), principal, fresh)
    seen: list[bytes] = []
    view = TopicFollower(settings, topic, lambda key, _v: seen.append(key)).start()
    try:
        time.sleep(5)
        assert view.problem() == f"view of {topic} not caught up"  # refused so far, not failed
        secured.passwords[principal].write_text(fresh)
        renew_later(view._consumer, principal, fresh)  # what the password file's watcher does
        view.wait_ready(60)
        assert b"before-start" in seen
        view.check()
    finally:
        view.stop()


def test_the_workers_committed_offsets_are_asked_again_until_its_new_password_arrives(
    secured: Secured,
) -> None:
    """The worker reads its group's committed offsets (BrokerOffsets) when it takes a partition:
    asked while the broker refuses the old password, the question is asked again (with the new
    password once its file has it) instead of failing the worker after one timeout."""
    import asyncio

    from streams.agents.delivery import BrokerOffsets, TopicPartition
    from streams.core.kafka import client_config, renew_later

    principal = "worker"
    settings = secured.settings(principal)
    offsets = BrokerOffsets(client_config(settings), APP, timeout=5)
    tp = TopicPartition(settings.topic("alerts.raw"), 0)
    try:
        before = asyncio.run(offsets.committed(tp))  # connected with the old password
        fresh = secrets.token_urlsafe(24)
        scram_user(AdminClient(secured.broker.client_config()), principal, fresh)
        secured.passwords[principal].write_text(fresh)
        time.sleep(2 * REAUTH_MS / 1000)  # its connections had to re-authenticate, and failed
        started = time.monotonic()
        timer = threading.Timer(8, renew_later, (offsets._group, principal, fresh))
        timer.start()  # the file's watcher hands the new password over after one timeout
        got = asyncio.run(offsets.committed(tp))
        timer.join()
        assert time.monotonic() - started >= 8  # answered only once the new password was there
        assert got == before
    finally:
        offsets.close()
