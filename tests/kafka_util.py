"""Helpers for tests that read and write the real broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Message, Producer
from pydantic import SecretStr

from ops.kafka import Broker
from streams.core.dlq import Headers
from streams.core.settings import Settings

# Brokers that run secured, by bootstrap string: their clients connect the way they ask.
SECURED: dict[str, Broker] = {}


def register(broker: Broker) -> None:
    if broker.security is not None:
        SECURED[broker.bootstrap] = broker


def conf(bootstrap: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A librdkafka configuration for a test's own client of the broker at bootstrap (as its
    administrator when it runs secured)."""
    broker = SECURED.get(bootstrap)
    base = broker.client_config() if broker is not None else {"bootstrap.servers": bootstrap}
    return {**base, **(extra or {})}


def settings_on(bootstrap: str, **kw: Any) -> Settings:
    """Settings reaching the broker at bootstrap (as its administrator when it runs secured),
    whatever the environment holds: a module-scoped fixture is made before the per-test
    environment is."""
    broker = SECURED.get(bootstrap)
    security: dict[str, Any] = {}
    if broker is not None and broker.security is not None:
        security = {
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_username": "admin",
            "kafka_sasl_password": SecretStr(broker.security.admin_password()),
            "kafka_ca_file": str(broker.security.ca_file),
        }
    return Settings(kafka_bootstrap=bootstrap, **security, **kw)


def kafka_env(bootstrap: str) -> dict[str, str]:
    """The ITSM_KAFKA_* settings of a pipeline process on the broker at bootstrap."""
    broker = SECURED.get(bootstrap)
    return broker.env() if broker is not None else {"ITSM_KAFKA_BOOTSTRAP": bootstrap}


def consume(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> list[Message]:
    """Read topic from the start until count records arrived (or timeout); returns what arrived."""
    if count <= 0:
        return []
    arrived = iter(range(1, count + 1))
    return consume_until(bootstrap, topic, lambda _msg: next(arrived) >= count, timeout)


def consume_until(
    bootstrap: str, topic: str, enough: Callable[[Message], bool | None], timeout: float = 60.0
) -> list[Message]:
    """Read topic from the start, each record through enough(record), until it says True (or
    timeout); returns what arrived."""
    consumer = Consumer(
        conf(
            bootstrap,
            {
                "group.id": f"test-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
        )
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append(msg)
            if enough(msg):
                break
    finally:
        consumer.close()
    return out


def produce(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None, Headers]], partition: int = -1
) -> None:
    """Write records in order (to one partition if given) and wait until the broker acknowledged all."""
    producer = Producer(
        conf(bootstrap, {"enable.idempotence": True, "partitioner": "murmur2_random", "linger.ms": 20})
    )
    errors: list[str] = []
    for key, value, headers in records:
        producer.produce(
            topic,
            key=key,
            value=value,
            headers=headers,
            partition=partition,
            on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
        )
        producer.poll(0)
    assert producer.flush(30) == 0 and not errors, errors
