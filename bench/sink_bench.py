"""The incident sink against the development ITSM, beside plain httpx doing the same requests.

    .venv/bin/python -m bench.sink_bench [--commands N] [--concurrency C] [--rounds R]

Starts a KRaft broker (ops/kafka) on free loopback ports and the development ITSM (`itsmctl
devitsm`, its own process, a fresh database per side); produces N OPEN commands for N new
correlation ids; runs the sink (SinkRunner with the ServiceNow sink, as `itsmctl sink servicenow`
does, no rate limit, logs at warning) until every command has its result on itsm.results. The
baseline, in the same run against a fresh ITSM: plain httpx with as many requests in flight
(--concurrency), making the requests the sink makes for each command (its correlation id lookup,
then the POST of its fields).
And the sink's floor, against a third fresh ITSM: the Kafka work no sink can skip around the
baseline's requests (consume and decode each command, publish its result acknowledged, commit
what is finished), with none of the sink's own work (floor_rate).
Prints commands per second of each and the ratios (the sink's both from its start, group join
included, and steady, from its first command done), and this process's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import queue
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from bench.measure import machine
from connectors.sinks.http import RetryPolicy
from connectors.sinks.runner import SinkRunner
from connectors.sinks.servicenow.client import ServiceNowClient
from connectors.sinks.servicenow.config import ServiceNowConfig
from connectors.sinks.servicenow.mapping import lookup_query, open_fields
from connectors.sinks.servicenow.sink import ServiceNowSink
from ops import topics as topic_ops
from ops.kafka import Broker
from ops.kafka.broker import free_port
from streams.core import telemetry
from streams.core.kafka import producer_config
from streams.core.models import IncidentAction, IncidentCommand, RecordType, SinkOutcome, SinkResult
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.core.topics import INCIDENT_COMMANDS, ITSM_RESULTS, declared

PASSWORD = secrets.token_urlsafe(16)  # the development ITSM of this run only


def commands(n: int, run: str) -> list[IncidentCommand]:
    now = datetime.now(UTC)
    return [
        IncidentCommand(
            command_id=f"{run}-{i}",
            correlation_id=f"itsmp-{run}-{i:06d}",
            action=IncidentAction.OPEN,
            short_description=f"Disk full on db-{i}",
            description="97% used",
            impact=2,
            urgency=2,
            issued_at=now,
        )
        for i in range(n)
    ]


def publish(settings: Settings, cmds: list[IncidentCommand]) -> AvroSerde:
    """cmds on the incident command topic, acknowledged; the serde that encoded them."""
    serde = AvroSerde()
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 20})
    topic = settings.topic(INCIDENT_COMMANDS)
    for cmd in cmds:
        producer.produce(topic, key=cmd.correlation_id.encode(), value=serde.encode(cmd))
        producer.poll(0)
    assert producer.flush(30) == 0
    return serde


def sink_rate(
    settings: Settings, url: str, cmds: list[IncidentCommand], concurrency: int
) -> tuple[float, float, float]:
    """(commands/s from the sink's start, seconds to its first command done, commands/s after it).
    The first figure includes joining the consumer group (on a new broker, its first group also
    waits for the broker to create __consumer_offsets); the last is the sink's steady pace."""
    serde = publish(settings, cmds)
    config = ServiceNowConfig(url, "pipeline", SecretStr(PASSWORD), True, 10.0)
    lanes = [
        ServiceNowSink(ServiceNowClient(config, RetryPolicy(budget_seconds=60))) for _ in range(concurrency)
    ]
    runner = SinkRunner(settings, serde, lanes[0], RecordType.INCIDENT, more=lanes[1:])
    stop = threading.Event()
    started = time.perf_counter()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    while runner.processed == 0:
        if not thread.is_alive():
            raise SystemExit("the sink stopped before its first command (see its log lines above)")
        time.sleep(0.001)
    first = time.perf_counter()
    while runner.processed < len(cmds):
        if not thread.is_alive():
            raise SystemExit(f"the sink stopped after {runner.processed} of {len(cmds)} commands")
        time.sleep(0.01)
    end = time.perf_counter()
    stop.set()
    thread.join(30)
    return len(cmds) / (end - started), first - started, (len(cmds) - 1) / (end - first)


def httpx_rate(url: str, cmds: list[IncidentCommand], concurrency: int) -> float:
    """The requests the sink makes per new incident, `concurrency` threads each with its own
    client: the correlation id lookup (the sink's query, fields and order) and the POST of the
    sink's own fields (mapping.open_fields, the caller bound to its sys_id as the sink binds it)."""
    with httpx.Client(base_url=url, auth=("pipeline", PASSWORD), timeout=10.0) as http:
        users = http.get(
            "/api/now/table/sys_user", params={"sysparm_query": "user_name=pipeline", "sysparm_limit": "1"}
        )
        caller = users.raise_for_status().json()["result"][0]["sys_id"]

    def deliver(part: list[IncidentCommand]) -> None:
        with httpx.Client(base_url=url, auth=("pipeline", PASSWORD), timeout=10.0) as http:
            for cmd in part:
                http.get(
                    "/api/now/table/incident", params=lookup_query(cmd.correlation_id)
                ).raise_for_status()
                http.post("/api/now/table/incident", json=open_fields(cmd, caller)).raise_for_status()

    threads = [threading.Thread(target=deliver, args=(cmds[i::concurrency],)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(cmds) / (time.perf_counter() - started)


def floor_rate(settings: Settings, url: str, cmds: list[IncidentCommand], concurrency: int) -> float:
    """The sink's floor: the Kafka work no sink can skip, around the baseline's requests. One
    consumer thread (its own group) hands the commands to `concurrency` threads, each with its
    own httpx client: decode the command, make the baseline's lookup and POST, publish a
    SinkResult (the sink's producer settings: idempotent, acks=all); the consumer thread commits,
    at most once a second, each partition's offsets up to the first command whose result is not
    acknowledged. None of the sink's own work: no retries, ordering, metrics, spans or logs.
    Commands/s from the first command consumed to the last result acknowledged."""
    serde = publish(settings, cmds)
    topic, results = settings.topic(INCIDENT_COMMANDS), settings.topic(ITSM_RESULTS)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"{settings.app_id}-floor",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    failed: list[str] = []
    acked: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
    producer = Producer(producer_config(settings))
    with httpx.Client(base_url=url, auth=("pipeline", PASSWORD), timeout=10.0) as http:
        users = http.get(
            "/api/now/table/sys_user", params={"sysparm_query": "user_name=pipeline", "sysparm_limit": "1"}
        )
        caller = users.raise_for_status().json()["result"][0]["sys_id"]
    work: queue.Queue[Message | None] = queue.Queue(maxsize=64 * concurrency)

    def deliver() -> None:
        with httpx.Client(base_url=url, auth=("pipeline", PASSWORD), timeout=10.0) as http:
            while (msg := work.get()) is not None:
                cmd = serde.decode(msg.value() or b"", IncidentCommand)
                http.get(
                    "/api/now/table/incident", params=lookup_query(cmd.correlation_id)
                ).raise_for_status()
                made = http.post("/api/now/table/incident", json=open_fields(cmd, caller))
                created = made.raise_for_status().json()["result"]
                result = SinkResult(
                    command_id=cmd.command_id,
                    correlation_id=cmd.correlation_id,
                    target="servicenow",
                    record_type=RecordType.INCIDENT,
                    outcome=SinkOutcome.CREATED,
                    itsm_id=created["sys_id"],
                    itsm_number=created.get("number"),
                    attempts=2,
                    completed_at=datetime.now(UTC),
                )
                at = (msg.partition() or 0, msg.offset() or 0)

                def delivered(err: KafkaError | None, _msg: Message, at: tuple[int, int] = at) -> None:
                    if err is not None:
                        failed.append(str(err))
                    else:
                        acked.put(at)

                producer.produce(
                    results,
                    key=cmd.correlation_id.encode(),
                    value=serde.encode(result),
                    on_delivery=delivered,
                )
                producer.poll(0)

    lanes = [threading.Thread(target=deliver, daemon=True) for _ in range(concurrency)]
    for lane in lanes:
        lane.start()
    done: dict[int, set[int]] = {}
    committed: dict[int, int] = {}  # partition -> the next offset to commit from
    finished, started, last_commit = 0, 0.0, 0.0

    def commit() -> None:
        ready = []
        for part, offsets in done.items():
            at = committed.get(part, 0)
            while at in offsets:
                offsets.discard(at)
                at += 1
            if at != committed.get(part, 0):
                committed[part] = at
                ready.append(TopicPartition(topic, part, at))
        if ready:
            consumer.commit(offsets=ready, asynchronous=True)

    consumer.subscribe([topic])
    try:
        while finished < len(cmds):
            msg = consumer.poll(0.05)
            if msg is not None and msg.error() is None:
                started = started or time.perf_counter()
                work.put(msg)
            producer.poll(0)
            while not acked.empty():
                part, offset = acked.get()
                done.setdefault(part, set()).add(offset)
                finished += 1
            if failed:
                raise SystemExit(f"the floor's results were refused: {failed[:3]}")
            if time.monotonic() - last_commit >= 1.0:
                commit()
                last_commit = time.monotonic()
        end = time.perf_counter()
        commit()
    finally:
        for _ in lanes:
            work.put(None)
        for lane in lanes:
            lane.join(10)
        producer.flush(10)
        consumer.close()
    return len(cmds) / (end - started)


@contextmanager
def devitsm(tmp: Path, name: str) -> Iterator[str]:
    """`itsmctl devitsm` on a free loopback port with a fresh database; its URL."""
    secret = tmp / f"{name}.password"
    secret.write_text(PASSWORD)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ITSM_")},
        "ITSM_DEVITSM_PORT": str(port),
        "ITSM_DEVITSM_DB": str(tmp / f"{name}.sqlite3"),
        "ITSM_DEVITSM_PASSWORD_FILE": str(secret),
        "ITSM_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen([sys.executable, "-m", "ops.cli", "devitsm"], env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the development ITSM did not start")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commands", type=int, default=2000)
    parser.add_argument(
        "--concurrency", type=int, default=4, help="in flight at once (ITSM_SINK_CONCURRENCY)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure the sink, the baseline and the floor this many times, in a rotated order; "
        "prints the medians (and the range) and the ratios of the medians (default 1)",
    )
    args = parser.parse_args()
    print(machine(), flush=True)
    n, c = args.commands, args.concurrency
    # Warnings only, for both sides (the development ITSM logs every request at info otherwise).
    telemetry.configure_logging("warning")
    runs: dict[str, list[float]] = {"start": [], "join": [], "steady": [], "plain": [], "floor": []}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "kafka", port=free_port(), controller_port=free_port())
        broker.start(wait=120)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        try:
            for round_ in range(args.rounds):
                order = ["sink", "plain", "floor"]
                order = order[round_ % 3 :] + order[: round_ % 3]
                for who in order:
                    # Each its own topics, group and fresh ITSM: every run starts from nothing.
                    settings = Settings(
                        kafka_bootstrap=broker.bootstrap,
                        topic_prefix=f"{who}{round_}.",
                        app_id=f"bench-{who}-{round_}",
                    )
                    if who != "plain":
                        topic_ops.apply(admin, list(declared(settings.topic_prefix)))
                    with devitsm(Path(tmp), f"{who}{round_}") as url:
                        cmds = commands(n, f"{who}{round_}")
                        if who == "sink":
                            start, joined, steady = sink_rate(settings, url, cmds, c)
                            runs["start"].append(start)
                            runs["join"].append(joined)
                            runs["steady"].append(steady)
                        elif who == "plain":
                            runs["plain"].append(httpx_rate(url, cmds, c))
                        else:
                            runs["floor"].append(floor_rate(settings, url, cmds, c))
                if args.rounds > 1:
                    print(f"round {round_ + 1} of {args.rounds} done", flush=True)
        finally:
            broker.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mid = {k: statistics.median(v) for k, v in runs.items()}

    def shown(key: str, unit: str = "commands/s") -> str:
        figure = f"{mid[key]:8,.1f} s" if unit == "s" else f"{mid[key]:8,.0f} {unit}"
        if args.rounds > 1:
            digits = 1 if unit == "s" else 0
            figure += f"  [{min(runs[key]):,.{digits}f}-{max(runs[key]):,.{digits}f}]"
        return figure

    many = f", medians of {args.rounds} rounds [range]" if args.rounds > 1 else ""
    print(f"{n} new incidents to the development ITSM (its own process), {c} in flight{many}:")
    print(f"  sink (SinkRunner + ServiceNowSink), from its start:   {shown('start')}")
    print(f"    of which to its first command done (group join):  {shown('join', 's')}")
    print(f"  sink after its first command (steady):              {shown('steady')}")
    print(f"  baseline, plain httpx, same requests:               {shown('plain')}")
    print(f"  floor: the Kafka work around the same requests:     {shown('floor')}")
    print(f"  ratio, from start:                                  {mid['start'] / mid['plain']:8.2f}")
    print(f"  ratio, steady:                                      {mid['steady'] / mid['plain']:8.2f}")
    print(f"  ratio, floor / plain httpx:                         {mid['floor'] / mid['plain']:8.2f}")
    print(f"  ratio, sink steady / floor:                         {mid['steady'] / mid['floor']:8.2f}")
    print(f"  peak RSS of this process:                           {rss:8,.0f} MiB")


if __name__ == "__main__":
    main()
