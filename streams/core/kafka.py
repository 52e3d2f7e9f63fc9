"""confluent-kafka clients configured from Settings, and a producer whose sends can be awaited."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from streams.core.dlq import Headers
from streams.core.settings import Settings

CLIENT_LOGGER = logging.getLogger("librdkafka")


def quiet_client_logs() -> None:
    """For one-shot commands: librdkafka's own log lines (a broker it cannot reach, retried every
    second) are silenced; the command reports the failure in one line. Long-running processes log
    them as JSON lines (configure_logging)."""
    CLIENT_LOGGER.setLevel(logging.CRITICAL)


class DeliveryError(Exception):
    """The broker did not acknowledge a record."""


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """librdkafka config for one client; Settings names are mapped to dotted keys only here."""
    # librdkafka's own lines go through the logging module (JSON like every other line, served
    # when the client polls); a command line silences that logger (see quiet_client_logs).
    cfg: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap, "logger": CLIENT_LOGGER}
    cfg.update(extra)
    return cfg


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Idempotent, fully acknowledged producer config with Java's key partitioner.

    murmur2 (Java's and aiokafka's default) puts a key on the same partition whichever client
    wrote it, so an alert's notifications always meet its dedup state.
    """
    return client_config(
        settings,
        **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "partitioner": "murmur2_random",
            **extra,
        },
    )


class AckedProducer:
    """A confluent Producer with a poll thread; send() resolves when the broker acknowledged."""

    def __init__(self, settings: Settings, **extra: Any) -> None:
        self._producer = Producer(producer_config(settings, **extra))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="kafka-producer-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None = None
    ) -> Message:
        """Produce one record and wait for its acknowledgement (DeliveryError if refused)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                loop.call_soon_threadsafe(_set_exception, future, DeliveryError(f"{topic}: {err.str()}"))
            else:
                loop.call_soon_threadsafe(_set_result, future, msg)

        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers or [], on_delivery=on_delivery
                )
                break
            except BufferError:
                # Local queue full: wait for deliveries instead of failing the request.
                await asyncio.sleep(0.05)
            except KafkaException as exc:
                raise DeliveryError(f"{topic}: {exc}") from exc
        return await future

    def close(self, timeout: float = 10.0) -> int:
        """Flush outstanding records and stop polling; returns how many were left undelivered."""
        left = self._producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=2)
        return int(left)


def _set_result(future: asyncio.Future[Message], msg: Message) -> None:
    if not future.done():
        future.set_result(msg)


def _set_exception(future: asyncio.Future[Message], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)


def publish_batch(
    producer: Producer, records: Sequence[tuple[str, bytes | None, bytes | None]], timeout: float = 30.0
) -> int:
    """Produce records and wait until the broker acknowledged every one; DeliveryError names the
    first refusal (so a command-line tool never reports records as published that were not)."""
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}: {err.str()}")

    for topic, key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
    left = producer.flush(timeout)
    if errors or left:
        raise DeliveryError(errors[0] if errors else f"{left} record(s) not acknowledged within {timeout}s")
    return len(records)


class BrokerProbe:
    """Is the broker reachable? One metadata request, answered from a cache for a few seconds, so
    readiness probes never pile requests onto the broker."""

    def __init__(self, settings: Settings, timeout: float = 3.0, cache_seconds: float = 5.0) -> None:
        from confluent_kafka.admin import AdminClient

        self._admin = AdminClient(client_config(settings))
        self._timeout = timeout
        self._cache = cache_seconds
        self._lock = threading.Lock()
        self._at = 0.0
        self._answer: str | None = None
        self._where = settings.kafka_bootstrap

    def __call__(self) -> str | None:
        import time

        with self._lock:
            self._admin.poll(0)  # serves the client's log lines
            now = time.monotonic()
            if now - self._at > self._cache:
                try:
                    self._admin.list_topics(timeout=self._timeout)
                    self._answer = None
                except KafkaException as exc:
                    self._answer = f"broker at {self._where} unreachable: {exc.args[0]}"
                self._at = now
            return self._answer


def reader(settings: Settings, name: str, **extra: Any) -> Consumer:
    """A consumer that reads by assignment and never commits (itsmctl's readers: dead letters,
    lag, status): a group id of its own that never joins a group, offsets never stored."""
    import uuid

    return Consumer(
        client_config(
            settings,
            **{
                "group.id": f"itsmctl-{name}-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                **extra,
            },
        )
    )
