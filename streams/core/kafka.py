"""confluent-kafka clients configured from Settings, and a producer whose sends can be awaited."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from streams.core.dlq import Headers
from streams.core.settings import Settings

CLIENT_LOGGER = logging.getLogger("librdkafka")
_C = TypeVar("_C")
# Broker refusals, by librdkafka error code: the credentials were refused (SASL) or an ACL denied.
REFUSALS: dict[int, str] = {
    KafkaError._AUTHENTICATION: "kafka_sasl",
    KafkaError.SASL_AUTHENTICATION_FAILED: "kafka_sasl",
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "kafka_acl",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "kafka_acl",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "kafka_acl",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "kafka_acl",
}
# Who this process is, for the refusals it reports (identify(); "itsmctl" for one-shot commands).
_IDENTITY: dict[str, str | None] = {"component": "itsmctl", "principal": None}


# Every record a pipeline process produces names it in this header (itsmctl integrations audit
# attributes records to integrations by it; records without one came from outside the pipeline).
PRODUCER_HEADER = "itsm.producer"


def identify(component: str, principal: str | None) -> None:
    """Name this process and its broker principal in the refusals it logs and counts, and in the
    producer header of every record it writes."""
    _IDENTITY.update(component=component, principal=principal)


def producer_header() -> tuple[str, bytes]:
    """(itsm.producer, this process's component name)."""
    return PRODUCER_HEADER, str(_IDENTITY["component"]).encode()


def with_producer(headers: Headers | None) -> list[tuple[str, bytes | str | None]]:
    """headers with this process's producer header in place of any carried one."""
    return [*(h for h in headers or () if h[0] != PRODUCER_HEADER), producer_header()]


def note_refusal(code: int | None, detail: str, where: str = "") -> str | None:
    """When code is a broker refusal: log it with this process's principal (never a secret),
    count it in itsm_pipeline_auth_failures_total{component,reason} and return the reason."""
    reason = REFUSALS.get(code) if code is not None else None
    if reason is None:
        return None
    import structlog

    from streams.core.telemetry import AUTH_FAILURES

    if code == KafkaError.CLUSTER_AUTHORIZATION_FAILED and not where:
        where = "cluster"  # e.g. an idempotent producer without a WRITE grant on any topic
    AUTH_FAILURES.labels(_IDENTITY["component"], reason).inc()
    structlog.get_logger("kafka").warning(
        "kafka_refused", reason=reason, principal=_IDENTITY["principal"], resource=where, error=detail
    )
    return reason


# Refusals a credential rotation gives for a moment (README: Rotating any other secret): the broker
# holds the principal's new password before the process's file does. librdkafka reports the group
# coordinator lookup it then cannot make as an authentication failure or as the group's refusal.
PASSING_REFUSALS = frozenset(
    {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}
)


class RefusalGrace:
    """Whether a long-running client loop (a view, a sink) goes on after a refusal its poll
    returned: an authentication refusal is retried while the refusals in a row are younger than
    grace seconds; a row ends when a record arrives or after grace seconds without a refusal.
    A topic's or the cluster's authorization refusal (a missing grant) and a fatal error end
    the loop at once. Every refusal is logged and counted by note_refusal either way."""

    def __init__(self, grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self.clock = clock
        self._since: float | None = None
        self._last = 0.0

    def tolerate(self, err: KafkaError) -> bool:
        if err.fatal() or err.code() not in PASSING_REFUSALS:
            return False
        now = self.clock()
        if self._since is None or now - self._last > self.grace:
            self._since = now
        self._last = now
        return now - self._since <= self.grace

    def cleared(self) -> None:
        """A record arrived: the client is authenticated again."""
        self._since = None


# What aiokafka (the worker's Faust clients) logs for the same refusals: its error class names.
AIOKAFKA_REFUSALS: dict[str, int] = {
    "SaslAuthenticationFailed": KafkaError.SASL_AUTHENTICATION_FAILED,
    "TopicAuthorizationFailed": KafkaError.TOPIC_AUTHORIZATION_FAILED,
    "GroupAuthorizationFailed": KafkaError.GROUP_AUTHORIZATION_FAILED,
    "ClusterAuthorizationFailed": KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    "TransactionalIdAuthorizationFailed": KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}


class AiokafkaRefusals(logging.Handler):
    """On the aiokafka logger: each refusal it logs (a warning or worse naming one of its
    authentication or authorization errors) is logged and counted like librdkafka's."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the logging system's problem
            return
        for marker, code in AIOKAFKA_REFUSALS.items():
            if marker in message:
                note_refusal(code, message[:300])
                return


def count_aiokafka_refusals() -> None:
    """Count the refusals aiokafka logs (the worker's consumer and producer); once per process."""
    root = logging.getLogger("aiokafka")
    if not any(isinstance(h, AiokafkaRefusals) for h in root.handlers):
        root.addHandler(AiokafkaRefusals())


def _on_client_error(err: KafkaError) -> None:
    # librdkafka's error callback: a refused SASL handshake arrives here (and is retried).
    note_refusal(err.code(), err.str())


# Long-lived librdkafka clients of this process, told a rotated SASL password (watch_credentials).
_CLIENTS: list[Any] = []
# Further listeners (the worker's aiokafka clients): called with (username, password).
_LISTENERS: list[Callable[[str, str], None]] = []
_CLIENTS_LOCK = threading.Lock()
_WATCHING: list[threading.Thread] = []
# Consumers that have not taken the latest credentials yet (renew(), in their polling thread: a
# Consumer's set_sasl_credentials waits while another thread polls it), and those credentials.
_PENDING: set[int] = set()
_LATEST: list[tuple[str, str]] = []


def track(client: _C) -> _C:
    """Register a long-lived client (Producer, Consumer, AdminClient) for password rotations.
    Only while watch_credentials runs (a pipeline process): the clients cannot be weakly referenced,
    and a list of every client a test session makes would keep them all alive."""
    if _WATCHING:
        with _CLIENTS_LOCK:
            _CLIENTS.append(client)
    return client


def untrack(client: Any) -> None:
    with _CLIENTS_LOCK:
        if client in _CLIENTS:
            _CLIENTS.remove(client)


def renew_later(consumer: Consumer, username: str, password: str) -> None:
    """Hand consumer new credentials: the thread that polls it takes them at its next renew()."""
    with _CLIENTS_LOCK:
        _LATEST[:] = [(username, password)]
        _PENDING.add(id(consumer))


def renew(consumer: Consumer) -> None:
    """Called by the thread that polls consumer, before it polls: take rotated credentials."""
    if not _PENDING or id(consumer) not in _PENDING:
        return
    with _CLIENTS_LOCK:
        _PENDING.discard(id(consumer))
        username, password = _LATEST[0]
    try:
        consumer.set_sasl_credentials(username, password)
    except RuntimeError:  # closed
        untrack(consumer)


def on_credentials(listener: Callable[[str, str], None]) -> None:
    """Call listener(username, password) whenever this process's SASL password file changes."""
    with _CLIENTS_LOCK:
        _LISTENERS.append(listener)


def rotate_credentials(username: str, password: str) -> int:
    """Give every tracked client and listener the new credentials; how many took them. A client
    keeps its authenticated connections; the next (re)authentication uses the new password."""
    with _CLIENTS_LOCK:
        clients, listeners = list(_CLIENTS), list(_LISTENERS)
    told = 0
    for client in clients:
        if isinstance(client, Consumer):
            renew_later(client, username, password)
            told += 1
            continue
        try:
            client.set_sasl_credentials(username, password)
            told += 1
        except RuntimeError:  # closed meanwhile
            untrack(client)
    for listener in listeners:
        listener(username, password)
        told += 1
    return told


def watch_credentials(settings: Settings, interval: float = 1.0) -> threading.Thread | None:
    """When the SASL password follows its file (ITSM_KAFKA_SASL_PASSWORD_FILE), a daemon thread
    that hands a changed password to every client of this process: no restart."""
    from streams.core.secrets import FileSecret

    secret = settings.kafka_sasl_password
    if not isinstance(secret, FileSecret) or not settings.kafka_sasl_username or _WATCHING:
        return None
    username = settings.kafka_sasl_username

    def run() -> None:
        import structlog

        log = structlog.get_logger("kafka")
        current = secret.get_secret_value()
        while True:
            time.sleep(interval)
            value = secret.get_secret_value()
            if value != current:
                current = value
                try:
                    told = rotate_credentials(username, value)
                except Exception as exc:  # noqa: BLE001 - this thread must outlive one failed hand-off
                    log.error("kafka_credentials_rotation_failed", principal=username, error=str(exc)[:300])
                    continue
                log.info("kafka_credentials_rotated", principal=username, clients=told, file=str(secret.path))

    thread = threading.Thread(target=run, name="kafka-credentials", daemon=True)
    _WATCHING.append(thread)
    thread.start()
    return thread


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
    cfg: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": f"itsm-{_IDENTITY['component']}",  # names the process in the broker's logs and quotas
        "logger": CLIENT_LOGGER,
        "error_cb": _on_client_error,
    }
    # SASL_SSL: certificate and host name verified (librdkafka's defaults, never turned off).
    cfg.update(settings.kafka_security())
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
        self._producer = track(Producer(producer_config(settings, **extra)))
        # A fatal client error (e.g. the broker refusing this principal an idempotent producer id)
        # fails every send waiting and every later one, instead of leaving them waiting forever.
        self._fatal: str | None = None
        self._waiting: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[list[Message]]]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="kafka-producer-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self._producer.poll(0.1)
            except KafkaException as exc:
                err = exc.args[0]
                note_refusal(err.code(), err.str())
                with self._lock:
                    self._fatal = f"producer failed: {err.str()}"
                    waiting, self._waiting = self._waiting, set()
                for loop, future in waiting:
                    loop.call_soon_threadsafe(_set_exception, future, DeliveryError(self._fatal))
                self._stop.wait(1.0)

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None = None
    ) -> Message:
        """Produce one record and wait for its acknowledgement (DeliveryError if refused)."""
        return (await self.send_all(topic, [(key, value)], headers))[0]

    async def send_all(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None]],
        headers: Headers | None = None,
    ) -> list[Message]:
        """Produce records (key, value) to topic and wait until the broker acknowledged every one:
        their messages in order, or DeliveryError naming the first refusal.

        One future and one wake-up of the event loop for the whole batch (profiled in the gateway:
        a future, a task and a cross-thread wake-up per record were a quarter of its time).
        """
        if not records:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Message]] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            if self._fatal is not None:
                raise DeliveryError(f"{topic}: {self._fatal}")
            self._waiting.add(entry)
        batch = _Batch(len(records))

        def finish() -> None:
            with self._lock:
                self._waiting.discard(entry)
            if batch.error:
                loop.call_soon_threadsafe(_set_exception, future, DeliveryError(batch.error))
            else:
                loop.call_soon_threadsafe(_set_result, future, batch.acked)

        def delivered(i: int) -> Callable[[KafkaError | None, Message], None]:
            def on_delivery(err: KafkaError | None, msg: Message) -> None:
                if err is not None:
                    note_refusal(err.code(), err.str(), topic)
                if batch.done(i, msg, f"{topic}: {err.str()}" if err is not None else ""):
                    finish()

            return on_delivery

        carried = with_producer(headers)
        for i, (key, value) in enumerate(records):
            while True:
                try:
                    self._producer.produce(
                        topic, value=value, key=key, headers=carried, on_delivery=delivered(i)
                    )
                    break
                except BufferError:
                    # Local queue full: wait for deliveries instead of failing the request.
                    await asyncio.sleep(0.05)
                except KafkaException as exc:
                    # The records not produced will never call back. Those produced may still be
                    # delivered, so the caller learns of the refusal once they are done, never
                    # while one of them is still on its way.
                    if batch.abandon(len(records) - i, f"{topic}: {exc}"):
                        finish()
                    return await future
        return await future

    def close(self, timeout: float = 10.0) -> int:
        """Flush outstanding records and stop polling; returns how many were left undelivered."""
        try:
            left = self._producer.flush(timeout)
        except KafkaException:  # fatal, already reported by the poll thread
            left = len(self._producer)
        self._stop.set()
        self._thread.join(timeout=2)
        return int(left)


class _Batch:
    """What AckedProducer.send_all still waits for: the delivery callbacks (on the poll thread)
    and a produce refusal (on the event loop) count down under one lock; done() and abandon() are
    true for the one call that finished the batch."""

    __slots__ = ("acked", "error", "left", "lock")

    def __init__(self, count: int) -> None:
        self.acked: list[Message] = [None] * count  # type: ignore[list-item]
        self.error = ""
        self.left = count
        self.lock = threading.Lock()

    def done(self, i: int, msg: Message, error: str) -> bool:
        with self.lock:
            self.acked[i] = msg
            self.error = self.error or error
            self.left -= 1
            return self.left == 0

    def abandon(self, count: int, error: str) -> bool:
        with self.lock:
            self.error = self.error or error
            self.left -= count
            return self.left == 0


def _set_result(future: asyncio.Future[Any], msg: Any) -> None:
    if not future.done():
        future.set_result(msg)


def _set_exception(future: asyncio.Future[Any], exc: Exception) -> None:
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
            note_refusal(err.code(), err.str(), str(msg.topic()))
            errors.append(f"{msg.topic()}: {err.str()}")

    for topic, key, value in records:
        while True:
            try:
                producer.produce(
                    topic, value=value, key=key, headers=[producer_header()], on_delivery=on_delivery
                )
                break
            except BufferError:
                producer.poll(0.1)
    try:
        left = producer.flush(timeout)
    except KafkaException as exc:  # a fatal error, e.g. the broker refused this producer an id
        err = exc.args[0]
        note_refusal(err.code(), err.str())
        raise DeliveryError(f"producer failed: {err.str()}") from None
    if errors or left:
        raise DeliveryError(errors[0] if errors else f"{left} record(s) not acknowledged within {timeout}s")
    return len(records)


class BrokerProbe:
    """Is the broker reachable? One metadata request, answered from a cache for a few seconds, so
    readiness probes never pile requests onto the broker."""

    def __init__(self, settings: Settings, timeout: float = 3.0, cache_seconds: float = 5.0) -> None:
        from confluent_kafka.admin import AdminClient

        self._admin = track(AdminClient(client_config(settings)))
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
