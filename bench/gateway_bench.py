"""The ingest gateway beside Prometheus Alertmanager, under the same load generator (wrk).

    .venv/bin/python -m bench.gateway_bench [--seconds S] [--processes 1,2] [--rounds R]

Needs `wrk` and `prometheus-alertmanager` (Debian packages; ops/test.sh installs both). Starts a
KRaft broker (ops/kafka) on free loopback ports, applies the topics, then for each load:

- 1 alert per request with 16 connections, and 10 alerts per request with 64 connections;
- every request carries new alerts (a Lua script numbers them), so neither side deduplicates;
- our gateway (`itsmctl gateway`, ITSM_GATEWAY_PROCESSES=1 and =2) takes Alertmanager's webhook
  (what Alertmanager sends it) and answers 202 only after the broker acknowledged every alert;
- Prometheus Alertmanager (the Debian package, no cluster, a null receiver) takes the same
  alerts on `POST /api/v2/alerts` (what Prometheus sends it) and keeps them in memory.
- two floors, each one process served as the gateway serves (bench/http_floor.py): aiohttp
  reading the body and answering 202, and the same plus the per-alert library work (the strict
  JSON parse, the webhook mapping, Avro encoding; no Kafka): what the chosen stack can reach in
  one process before any of the gateway's own work (--no-floors skips them).

wrk runs with 2 threads for --seconds (default 10) after a 2-second warm-up. Prints alerts per
second, p50/p99 latency and non-2xx answers for each, and the ratio gateway / Alertmanager. With
--rounds R every contender is measured R times (Alertmanager first in odd rounds, last in even
ones; the broker runs, idle, while Alertmanager is measured): the medians, their range, and the
ratio of the medians, the latencies of the round nearest the median.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka.admin import AdminClient

from bench.measure import machine
from ops import topics as topic_ops
from ops.kafka import Broker
from ops.kafka.broker import free_port
from ops.stack import Stack
from streams.core.topics import declared

ALERTMANAGER = "Alertmanager POST /api/v2/alerts"
Row = tuple[str, int, dict[str, Any]]

LUA = """
local counter = 0
local seed = 0
local template = [==[@BODY@]==]
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
function setup(thread)
  seed = seed + 1
  thread:set("seed", seed)
end
function request()
  counter = counter + 1
  local id = string.format("%04x%012x", seed, counter)
  return wrk.format(nil, "@PATH@", nil, (template:gsub("@ID@", id)))
end
"""

ALERTMANAGER_CONFIG = """
route:
  receiver: "null"
receivers:
  - name: "null"
"""


def alert_labels(i: int) -> dict[str, str]:
    return {
        "alertname": "HighCPU",
        "instance": f"web-@ID@-{i}:9100",
        "job": "node",
        "severity": "critical",
        "service": "web",
    }


# A minute ago: Alertmanager refuses an alert that starts after the end it gives it (now + its
# resolve_timeout when endsAt is not set).
STARTS_AT = (
    (datetime.now(UTC) - timedelta(minutes=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
)
ANNOTATIONS = {"summary": "CPU above 90%", "description": "5m average CPU busy above 90%."}


def webhook_body(per: int) -> str:
    alerts = [
        {
            "status": "firing",
            "labels": alert_labels(i),
            "annotations": ANNOTATIONS,
            "startsAt": STARTS_AT,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example:9090/graph?g0.expr=HighCPU",
            "fingerprint": f"@ID@{i:02x}",
        }
        for i in range(per)
    ]
    return json.dumps(
        {
            "version": "4",
            "groupKey": '{}:{alertname="HighCPU"}',
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "itsm-pipeline",
            "groupLabels": {"alertname": "HighCPU"},
            "commonLabels": {"alertname": "HighCPU", "job": "node"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager.example:9093",
            "alerts": alerts,
        }
    )


def api_body(per: int) -> str:
    alerts = [
        {
            "labels": alert_labels(i),
            "annotations": ANNOTATIONS,
            "startsAt": STARTS_AT,
            "generatorURL": "http://prometheus.example:9090/graph?g0.expr=HighCPU",
        }
        for i in range(per)
    ]
    return json.dumps(alerts)


def wrk(tmp: Path, url: str, path: str, body: str, connections: int, seconds: int) -> dict[str, Any]:
    script = tmp / "load.lua"
    script.write_text(LUA.replace("@BODY@", body).replace("@PATH@", path))
    base = ["wrk", "-t2", f"-c{connections}", "--latency", "-s", str(script), url]
    subprocess.run([*base[:-1], "-d2s", url], check=True, capture_output=True)  # warm-up
    out = subprocess.run(
        [*base[:-1], f"-d{seconds}s", url], check=True, capture_output=True, text=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = dict(re.findall(r"\s(50|99)%\s+([\d.]+\w+)", out))
    return {
        "rps": rps,
        "p50": lat.get("50", "?"),
        "p99": lat.get("99", "?"),
        "errors": int(errors.group(1)) if errors else 0,
    }


def start_alertmanager(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if not exe:
        raise SystemExit("prometheus-alertmanager not found: apt-get install prometheus-alertmanager")
    port = free_port()
    config = tmp / "alertmanager.yml"
    config.write_text(ALERTMANAGER_CONFIG)
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={config}",
            f"--storage.path={tmp / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("alertmanager did not become ready")


def measure_alertmanager(tmp: Path, loads: list[tuple[int, int]], seconds: int) -> list[Row]:
    tmp.mkdir(parents=True, exist_ok=True)
    proc, am_url = start_alertmanager(tmp)
    try:
        return [
            (ALERTMANAGER, per, wrk(tmp, am_url, "/api/v2/alerts", api_body(per), conns, seconds))
            for per, conns in loads
        ]
    finally:
        proc.terminate()
        proc.wait(10)


def measure_gateway(
    tmp: Path, bootstrap: str, count: int, loads: list[tuple[int, int]], seconds: int
) -> list[Row]:
    tmp.mkdir(parents=True, exist_ok=True)
    stack = Stack(
        tmp,
        bootstrap,
        topic_prefix="bgw.",
        app_id="bgw",
        extra_env={"ITSM_LOG_LEVEL": "warning", "ITSM_GATEWAY_PROCESSES": str(count)},
    )
    stack.start(["gateway"])
    name = f"gateway, {count} process{'es' if count > 1 else ''}"
    try:
        return [
            (
                name,
                per,
                wrk(tmp, stack.gateway_url, "/v1/alerts/alertmanager", webhook_body(per), conns, seconds),
            )
            for per, conns in loads
        ]
    finally:
        stack.stop()


FLOORS = {
    "bare": "floor: aiohttp, read + 202",
    "work": "floor: + parse, map, Avro (no Kafka)",
}


def measure_floor(tmp: Path, mode: str, loads: list[tuple[int, int]], seconds: int) -> list[Row]:
    """bench.http_floor (one process, as the gateway serves) under the same loads."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.http_floor", str(port), mode])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(url + "/v1/alerts/alertmanager", content=webhook_body(1).replace("@ID@", "0"))
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"bench.http_floor {mode} did not start") from None
                time.sleep(0.2)
        return [
            (FLOORS[mode], per, wrk(tmp, url, "/v1/alerts/alertmanager", webhook_body(per), conns, seconds))
            for per, conns in loads
        ]
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--processes", default="1,2", help="ITSM_GATEWAY_PROCESSES values to measure")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every contender this many times, Alertmanager first in odd rounds and last in "
        "even ones; prints the medians (and the range) and the ratio of medians (default 1)",
    )
    parser.add_argument(
        "--no-floors",
        dest="floors",
        action="store_false",
        help="skip the floors (bench.http_floor: aiohttp alone, and with the per-alert parse, "
        "mapping and Avro encoding but no Kafka)",
    )
    args = parser.parse_args()
    print(machine(), flush=True)
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    loads = [(1, 16), (10, 64)]
    processes = [int(p) for p in args.processes.split(",")]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp / "kafka", port=free_port(), controller_port=free_port())
        broker.start(wait=120)
        try:
            topic_ops.apply(AdminClient({"bootstrap.servers": broker.bootstrap}), list(declared("bgw.")))
            for round_ in range(args.rounds):
                # None: Alertmanager; a string: one of the floors.
                order: list[int | str | None] = [None, *processes, *(FLOORS if args.floors else [])]
                if round_ % 2:
                    order.reverse()
                for count in order:
                    if count is None:
                        rows.extend(measure_alertmanager(tmp / f"am-{round_}", loads, args.seconds))
                    elif isinstance(count, str):
                        rows.extend(
                            measure_floor(tmp / f"floor-{count}-{round_}", count, loads, args.seconds)
                        )
                    else:
                        where = tmp / f"stack-{count}-{round_}"
                        rows.extend(measure_gateway(where, broker.bootstrap, count, loads, args.seconds))
                if args.rounds > 1:
                    print(f"round {round_ + 1} of {args.rounds} done", flush=True)
        finally:
            broker.stop()
    many = args.rounds > 1
    if many:
        print(f"medians of {args.rounds} rounds (alerts/s range in brackets); ratios of the medians")
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for name, per, result in rows:
        grouped.setdefault((name, per), []).append(result)
    rate = {key: statistics.median(r["rps"] * key[1] for r in runs) for key, runs in grouped.items()}
    print(
        f"{'':<36} {'per req':>7} {'conns':>5} {'alerts/s':>10} {'p50':>9} {'p99':>9} "
        f"{'non-2xx':>7} {'ratio':>6}"
    )
    for (name, per), runs in grouped.items():
        conns = dict(loads)[per]
        median = rate[(name, per)]
        ratio = "" if name == ALERTMANAGER else f"{median / rate[(ALERTMANAGER, per)]:6.2f}"
        # Latencies of the round whose rate is nearest the median; refusals of every round.
        middle = min(runs, key=lambda r: abs(r["rps"] * per - median))
        errors = sum(r["errors"] for r in runs)
        spread = ""
        if many:
            spread = f"  [{min(r['rps'] * per for r in runs):,.0f}-{max(r['rps'] * per for r in runs):,.0f}]"
        print(
            f"{name:<36} {per:>7} {conns:>5} {median:>10,.0f} {middle['p50']:>9} {middle['p99']:>9} "
            f"{errors:>7} {ratio:>6}{spread}"
        )


if __name__ == "__main__":
    main()
