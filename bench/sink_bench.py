"""The incident sink against the development ITSM, beside plain httpx doing the same requests.

    .venv/bin/python -m bench.sink_bench [--commands N]

Starts a KRaft broker (ops/kafka) on free loopback ports and the development ITSM (`itsmctl
devitsm`, its own process, a fresh database per side); produces N OPEN commands for N new
correlation ids; runs the sink (SinkRunner with the ServiceNow sink, as `itsmctl sink servicenow`
does, no rate limit, logs at warning) until every command has its result on itsm.results. The
baseline, in the same run against a fresh ITSM: plain httpx with as many requests in flight
(--concurrency), making the requests the sink makes for each command (its correlation id lookup,
then the POST of its fields).
Prints commands per second of each and the ratio (the sink's both from its start, group join
included, and steady, from its first command done), and this process's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
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
from confluent_kafka import Producer
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
from streams.core.models import IncidentAction, IncidentCommand, RecordType
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.core.topics import INCIDENT_COMMANDS, declared

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


def sink_rate(
    settings: Settings, url: str, cmds: list[IncidentCommand], concurrency: int
) -> tuple[float, float, float]:
    """(commands/s from the sink's start, seconds to its first command done, commands/s after it).
    The first figure includes joining the consumer group (on a new broker, its first group also
    waits for the broker to create __consumer_offsets); the last is the sink's steady pace."""
    serde = AvroSerde()
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 20})
    topic = settings.topic(INCIDENT_COMMANDS)
    for cmd in cmds:
        producer.produce(topic, key=cmd.correlation_id.encode(), value=serde.encode(cmd))
        producer.poll(0)
    assert producer.flush(30) == 0
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
    args = parser.parse_args()
    print(machine(), flush=True)
    n, c = args.commands, args.concurrency
    # Warnings only, for both sides (the development ITSM logs every request at info otherwise).
    telemetry.configure_logging("warning")
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "kafka", port=free_port(), controller_port=free_port())
        broker.start(wait=120)
        try:
            settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix="bench.", app_id="bench-sink")
            topic_ops.apply(AdminClient({"bootstrap.servers": broker.bootstrap}), list(declared("bench.")))
            with devitsm(Path(tmp), "sink") as url:
                sink, joined, steady = sink_rate(settings, url, commands(n, "sink"), c)
            with devitsm(Path(tmp), "httpx") as url:
                plain = httpx_rate(url, commands(n, "httpx"), c)
        finally:
            broker.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n} new incidents to the development ITSM (its own process), {c} in flight:")
    print(f"  sink (SinkRunner + ServiceNowSink), from its start:   {sink:8,.0f} commands/s")
    print(f"    of which to its first command done (group join):  {joined:8.1f} s")
    print(f"  sink after its first command (steady):              {steady:8,.0f} commands/s")
    print(f"  baseline, plain httpx, same requests:               {plain:8,.0f} commands/s")
    print(f"  ratio, from start:                                  {sink / plain:8.2f}")
    print(f"  ratio, steady:                                      {steady / plain:8.2f}")
    print(f"  peak RSS of this process:                           {rss:8,.0f} MiB")


if __name__ == "__main__":
    main()
