"""The worker (`itsmctl worker`) beside three passthroughs reading the same records, in one run,
and the worker's own work without Faust.

    .venv/bin/python -m bench.worker_bench [--new N] [--repeats N] [--resolves N] [--contenders ...]
                                           [--rounds R]

Starts a KRaft broker (ops/kafka) on free loopback ports and applies the topics. Two workloads,
each produced once to its own alerts.raw (6 partitions, Avro, keyed by fingerprint):

- the mix: N new alerts (distinct fingerprints), then repeats of them (deduplicated), then
  resolves of some (default 10,000 / 18,000 / 2,000, as issue #12 measured);
- new alerts only: the N new alerts alone (each opens an incident: one command per alert).

Each contender is its own process and consumer group, reading the whole topic from the start:
the worker (as `itsmctl worker` runs, commit interval 0.2 s) and bench/passthrough.py's bare Faust
agent awaiting each acknowledgement, the same not awaiting, and a confluent-kafka loop; and the
alert processor (the worker's per-record work: decode, stages, encode, state) on a confluent-kafka
loop instead of Faust, to show what reading alerts.raw without Faust could reach. The rate
is measured on the group's committed offsets, polled every 50 ms, from the first commit to the
last (so process start-up and group joining are not counted); RSS is the process's at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.measure import machine
from ops import topics as topic_ops
from ops.kafka import Broker
from ops.kafka.broker import free_port
from ops.stack import Stack
from streams.core import models as m
from streams.core.serde import AvroSerde
from streams.core.topics import ALERTS_RAW, declared

PARTITIONS = 6


def alert(fp: str, status: str, at: datetime) -> m.Alert:
    return m.Alert(
        fingerprint=fp,
        source=m.AlertSource.ALERTMANAGER,
        status=m.AlertStatus(status),
        name="HighCPU",
        severity="critical",
        summary=f"CPU above 95% on {fp}",
        labels={"alertname": "HighCPU", "instance": f"{fp}:9100", "job": "node", "severity": "critical"},
        annotations={"summary": "CPU high", "runbook_url": "https://runbooks.example/cpu"},
        starts_at=at,
        ends_at=at + timedelta(minutes=5) if status == "RESOLVED" else None,
        received_at=at,
    )


def workload(new: int, repeats: int, resolves: int) -> list[tuple[bytes, bytes]]:
    serde, at = AvroSerde(), datetime.now(UTC) - timedelta(minutes=1)
    fps = [f"bench{i:07d}" for i in range(new)]
    out = [alert(fp, "FIRING", at) for fp in fps]
    out += [alert(fps[i % new], "FIRING", at) for i in range(repeats)]
    out += [alert(fps[(i * 5) % new], "RESOLVED", at) for i in range(resolves)]
    return [(a.fingerprint.encode(), serde.encode(a)) for a in out]


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0


def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        for _attempt in range(50):
            try:
                tps = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
                return sum(max(tp.offset, 0) for tp in tps)
            except KafkaException:  # the group's coordinator is loading or moving: ask again
                time.sleep(0.1)
        raise RuntimeError(f"no committed offsets of {group} from the broker")
    finally:
        consumer.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(
    proc: subprocess.Popen[bytes], bootstrap: str, group: str, topic: str, total: int
) -> dict[str, Any]:
    """Rate over the committed offsets, from the first commit to the last; RSS at the end. A
    contender that commits everything at once (the confluent-kafka loop on a fast hour) has no
    such interval: its rate is then counted from its process start (start-up included, so a
    lower bound, marked "bound")."""
    started = time.monotonic()
    deadline, first = started + 600, None
    try:
        while True:
            done, now = committed(bootstrap, group, topic), time.monotonic()
            if proc.poll() is not None:
                raise RuntimeError(f"{group} exited with {proc.returncode}")
            if first is None and done > 0:
                first = (now, done)
            if done >= total:
                break
            if now > deadline:
                raise RuntimeError(f"{group} processed {done} of {total} in 600 s")
            time.sleep(0.05)
        assert first is not None
        if done > first[1]:
            return {"rate": (done - first[1]) / max(now - first[0], 1e-9), "rss": rss_mib(proc.pid)}
        return {"rate": done / max(now - started, 1e-9), "rss": rss_mib(proc.pid), "bound": True}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_worker(tmp: Path, bootstrap: str, prefix: str, total: int, tag: str = "") -> dict[str, Any]:
    """`itsmctl worker` as its own consumer group (tag: a round's, so each reads from the start)."""
    stack = Stack(
        tmp / f"stack-{prefix.strip('.')}{tag}",
        bootstrap,
        topic_prefix=prefix,
        app_id=f"{prefix}worker{tag}",
        extra_env={"ITSM_LOG_LEVEL": "warning", "ITSM_WORKER_COMMIT_INTERVAL_SECONDS": "0.2"},
    )
    stack.start(["worker"])
    return measure(stack.procs["worker"], bootstrap, f"{prefix}worker{tag}", f"{prefix}{ALERTS_RAW}", total)


def run_passthrough(
    tmp: Path, bootstrap: str, prefix: str, mode: str, total: int, tag: str = ""
) -> dict[str, Any]:
    group = f"{prefix}pass-{mode}{tag}"
    log = open(tmp / f"{group}.log", "ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.passthrough",
            mode,
            bootstrap,
            f"{prefix}{ALERTS_RAW}",
            f"{prefix}out",
            group,
            prefix,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp,
        # Its own working directory (Faust writes <group>-data there); the checkout on the path.
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("ITSM_")},
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        },
    )
    log.close()
    return measure(proc, bootstrap, group, f"{prefix}{ALERTS_RAW}", total)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=18_000)
    parser.add_argument("--resolves", type=int, default=2_000)
    parser.add_argument(
        "--contenders",
        default="worker,faust-await,faust,confluent,processor",
        help="which to run (comma-separated; default all)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every contender this many times, in a rotated order each round; prints the "
        "median (and the range) and the ratio of medians (default 1)",
    )
    args = parser.parse_args()
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp / "kafka", port=free_port(), controller_port=free_port())
        broker.start(wait=120)
        try:
            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            cases = {
                "mix": ("bmix.", workload(args.new, args.repeats, args.resolves)),
                "new alerts only": ("bnew.", workload(args.new, 0, 0)),
            }
            for prefix, records in cases.values():
                topic_ops.apply(admin, list(declared(prefix)))
                # Where the passthroughs copy to (the broker creates no topic by itself).
                admin.create_topics([NewTopic(f"{prefix}out", PARTITIONS, 1)])[f"{prefix}out"].result(30)
                produce(broker.bootstrap, f"{prefix}{ALERTS_RAW}", records)
            contenders = args.contenders.split(",")
            results: dict[str, dict[str, list[dict[str, Any]]]] = {case: {} for case in cases}
            for round_ in range(args.rounds):
                # Rotated, so no contender always runs first (or last) on a host that drifts.
                order = contenders[round_ % len(contenders) :] + contenders[: round_ % len(contenders)]
                tag = f"-r{round_}" if args.rounds > 1 else ""
                for case, (prefix, records) in cases.items():
                    n = len(records)
                    for mode in order:
                        if mode == "worker":
                            result = run_worker(tmp, broker.bootstrap, prefix, n, tag)
                        else:
                            result = run_passthrough(tmp, broker.bootstrap, prefix, mode, n, tag)
                        results[case].setdefault(mode, []).append(result)
                if args.rounds > 1:
                    print(f"round {round_ + 1} of {args.rounds} done", flush=True)
        finally:
            broker.stop()
    labels = {
        "worker": "worker (itsmctl worker)",
        "faust-await": "bare Faust, awaiting each ack",
        "faust": "bare Faust, not awaiting acks",
        "confluent": "confluent-kafka passthrough",
        "processor": "alert processor, confluent-kafka",
    }
    many = args.rounds > 1
    if many:
        print(f"medians of {args.rounds} rounds (range in brackets); ratios of the medians")
    for case, row in results.items():
        n = len(cases[case][1])
        print(f"{case}: {n:,} alerts on 6 partitions")
        rates = {key: statistics.median(r["rate"] for r in runs) for key, runs in row.items()}
        worker = rates.get("worker")
        for key, label in labels.items():
            if key not in row:
                continue
            runs, rate = row[key], rates[key]
            spread = ""
            if many:
                low, high = min(r["rate"] for r in runs), max(r["rate"] for r in runs)
                spread = f" [{low:,.0f}-{high:,.0f}]"
            ratio = ""
            if key != "worker" and worker is not None:
                ratio = f"   worker / this: {worker / rate:5.2f}"
            bound = any(r.get("bound") for r in runs)
            if bound:
                ratio += " (at most: everything committed at once, rate counted from its start)"
            at_least = ">=" if bound else "  "
            rss = max(r["rss"] for r in runs)
            print(f"  {label:<32} {at_least}{rate:9,.0f} alerts/s{spread}   RSS {rss:6.0f} MiB{ratio}")


if __name__ == "__main__":
    main()
