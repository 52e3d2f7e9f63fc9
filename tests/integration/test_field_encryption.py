"""Sensitive fields through the whole pipeline on the real broker: unreadable in every topic the
records pass (and the worker's state changelog), correct in the ITSM, the key rotated while
alerts flow with nothing lost or doubled; and no secret and no sensitive text in any process log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors import auth
from ops.kafka import Broker
from ops.stack import Stack
from streams.core import fieldcrypt
from streams.core.settings import Settings
from streams.core.topics import ALERTS_RAW, INCIDENT_COMMANDS, dlq_name
from tests.kafka_util import conf, consume
from tests.stacks import pipeline_stack

pytestmark = pytest.mark.integration
BATCH = 12  # alerts before the rotation, and again after it


def personal(i: int) -> str:
    return f"paged Jane Doe-{i:03d} <jane.doe.{i:03d}@example.com>, desk +49 170 555{i:04d}"


def webhook(i: int) -> dict[str, object]:
    return {
        "receiver": "itsm-pipeline",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "DiskFull", "instance": f"db-{i:03d}:9100", "severity": "critical"},
                "annotations": {"summary": f"disk full on db-{i:03d}", "description": personal(i)},
                "startsAt": "2026-11-27T08:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": f"{i:016x}",
            }
        ],
        "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {"alertname": "DiskFull"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": '{}:{alertname="DiskFull"}',
        "truncatedAlerts": 0,
    }


@pytest.fixture
def stack(kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    keys = tmp_path / "field-keys.toml"
    fieldcrypt.rotate(keys)
    tokens = tmp_path / "tokens.toml"
    token, _ = auth.issue(tokens, "prometheus", ["alerts:write:alertmanager"])
    (tmp_path / "prometheus.token").write_text(token)
    with pipeline_stack(
        kafka_broker,
        kafka_settings,
        tmp_path / "stack",
        extra_env={"ITSM_FIELD_KEYS_FILE": str(keys), "ITSM_TOKENS_FILE": str(tokens)},
    ) as s:
        yield s


def incidents(s: Stack) -> dict[str, str]:
    """short_description -> description of every incident in the development ITSM."""
    with s.itsm() as itsm:
        resp = itsm.get("/api/now/table/incident", params={"sysparm_fields": "short_description,description"})
        resp.raise_for_status()
        return {row["short_description"]: row["description"] for row in resp.json()["result"]}


def every_value(bootstrap: str, topics: list[str]) -> list[bytes]:
    """Every record value of topics, from the start to the end as it is now."""
    consumer = Consumer(conf(bootstrap, {"group.id": f"scan-{time.time_ns()}", "enable.auto.commit": False}))
    values: list[bytes] = []
    try:
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            assert meta.error is None and meta.partitions, (topic, meta.error)
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high <= low:
                    continue
                consumer.assign([TopicPartition(topic, p, low)])
                while True:
                    msg = consumer.poll(5)
                    assert msg is not None, f"{topic}[{p}] stopped before offset {high}"
                    assert msg.error() is None, msg.error()
                    values.append(msg.value() or b"")
                    if msg.offset() >= high - 1:
                        break
    finally:
        consumer.close()
    return values


def test_sensitive_fields_are_ciphertext_on_every_topic_plaintext_in_the_itsm_and_never_in_a_log(
    stack: Stack, kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    stack.start(["devitsm", "gateway", "worker", "sink"])
    token = (tmp_path / "prometheus.token").read_text()
    keys = tmp_path / "field-keys.toml"
    first = fieldcrypt.KeyRing.load(keys).active

    def post(i: int) -> None:
        resp = httpx.post(
            stack.gateway_url + "/v1/alerts/alertmanager",
            json=webhook(i),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert resp.status_code == 202, resp.text

    def wait_incidents(n: int) -> dict[str, str]:
        deadline = time.monotonic() + 120
        while len(found := incidents(stack)) < n:
            stack.check_alive()
            assert time.monotonic() < deadline, {name: stack.log_tail(name) for name in stack.procs}
            time.sleep(0.5)
        return found

    for i in range(BATCH):
        post(i)
    wait_incidents(BATCH)
    # A rotation while the pipeline runs: no restart; the processes reread the file.
    second, _ = fieldcrypt.rotate(keys)
    time.sleep(1.5)  # the file is checked once a second
    for i in range(BATCH, 2 * BATCH):
        post(i)
    found = wait_incidents(2 * BATCH)

    # In the ITSM: every incident once, with its description in clear.
    assert len(found) == 2 * BATCH
    for i in range(2 * BATCH):
        (body,) = [d for title, d in found.items() if f"db-{i:03d}" in title]
        assert personal(i) in body and "enc:v1:" not in body

    # On the broker: ciphertext under both keys, never the text.
    raw = kafka_settings.topic(ALERTS_RAW)
    commands = kafka_settings.topic(INCIDENT_COMMANDS)
    admin = AdminClient(conf(kafka_broker.bootstrap))
    changelogs = [t for t in admin.list_topics(timeout=10).topics if t.startswith(kafka_settings.app_id)]
    assert any("alert-state" in t for t in changelogs), changelogs
    alerts = every_value(kafka_broker.bootstrap, [raw])
    assert len(alerts) == 2 * BATCH
    assert sum(f"enc:v1:{first}:".encode() in v for v in alerts) == BATCH
    assert sum(f"enc:v1:{second}:".encode() in v for v in alerts) == BATCH
    opened = every_value(kafka_broker.bootstrap, [commands])
    assert len(opened) == 2 * BATCH and all(b"enc:v1:" in v for v in opened)
    scanned = alerts + opened + every_value(kafka_broker.bootstrap, changelogs)
    assert len(scanned) > 5 * BATCH  # the changelogs hold each state at least once
    leaks = [v for v in scanned if b"Jane Doe" in v or b"@example.com" in v or b"+49 170" in v]
    assert leaks == []
    # Nothing dead-lettered: no key was missing anywhere.
    assert consume(kafka_broker.bootstrap, dlq_name(raw), 1, timeout=2) == []
    assert consume(kafka_broker.bootstrap, dlq_name(commands), 1, timeout=2) == []

    codes = stack.stop()
    assert all(code == 0 for code in codes.values()), codes
    # No process logged a secret or a sensitive value: passwords, tokens, key material, the text.
    secrets = {
        "ITSM password": stack.password,
        "ITSM admin password": stack.admin_password_file.read_text(),
        "API token": token,
        "gate token": stack.gate_token_file().read_text(),
    }
    password_file = kafka_broker.env().get("ITSM_KAFKA_SASL_PASSWORD_FILE")
    if password_file:
        secrets["Kafka password"] = Path(password_file).read_text().strip()
    for kid, material in fieldcrypt.entries(keys)[1].items():
        secrets[f"field key {kid}"] = material
    secrets |= {f"sensitive text {i}": personal(i) for i in range(2 * BATCH)}
    logs = {p.name: p.read_text(errors="replace") for p in (stack.workdir / "logs").glob("*.log")}
    assert {"gateway.log", "worker.log", "sink.log", "devitsm.log"} <= logs.keys()
    assert sum(len(text) for text in logs.values()) > 10_000  # the processes did log
    leaked = [(what, name) for what, value in secrets.items() for name, text in logs.items() if value in text]
    assert leaked == []
