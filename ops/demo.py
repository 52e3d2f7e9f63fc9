"""The main job on one machine: broker, topics, ITSM, worker, sinks, gateway, gate; samples in,
incidents out; then a deployment pipeline through the change gate."""

from __future__ import annotations

import io
import json
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from connectors.sinks.servicenow.values import CHOICE_LABELS
from ops import topics as topic_ops
from ops.change_demo import run_change_demo
from ops.dlq import count as dlq_count
from ops.kafka import Broker
from ops.kafka.broker import free_port
from ops.stack import COMPONENTS, Stack, port_or_free
from streams.core.settings import Settings
from streams.core.topics import ALERTS_RAW, INCIDENT_COMMANDS, ITSM_INCIDENTS, declared, dlq_name
from streams.stages.alerts.lifecycle import correlation_id

DEMO_STABLE_PERIOD = 5.0
CHANGE_COMPONENTS = ("sink-change", "changes-sync", "gate", "incidents-sync")
STATE_NAMES = CHOICE_LABELS["incident"]["state"]
ACTIVE = {"1", "2", "3"}


def bundled_samples() -> Path:
    return Path(str(resources.files("ops").joinpath("samples/alertmanager")))


@dataclass
class Expected:
    """What should become of one alert fingerprint, from the webhooks the gateway accepted."""

    fingerprint: str
    name: str
    where: str
    status: str  # firing | resolved


def post_samples(gateway_url: str, samples: Path) -> tuple[dict[str, Expected], list[tuple[str, int, str]]]:
    """POST every sample file in name order; the expected end state per alert, and a line per file."""
    expected: dict[str, Expected] = {}
    lines: list[tuple[str, int, str]] = []
    for path in sorted(samples.glob("*.json")):
        body = json.loads(path.read_text())
        resp = httpx.post(f"{gateway_url}/v1/alerts/alertmanager", json=body, timeout=30)
        answer = resp.json()
        if resp.status_code == 202:
            lines.append((path.name, resp.status_code, f"accepted {answer['accepted']} alert(s)"))
            for alert, fp in zip(body["alerts"], answer["fingerprints"], strict=True):
                labels = alert["labels"]
                expected[fp] = Expected(
                    fp,
                    labels["alertname"],
                    labels.get("instance") or labels.get("service", ""),
                    alert["status"],
                )
        else:
            detail = answer.get("error", "")
            if answer.get("problems"):
                detail += ": " + "; ".join(answer["problems"])
            lines.append((path.name, resp.status_code, detail))
    return expected, lines


def incident_states(itsm: httpx.Client, expected: dict[str, Expected]) -> dict[str, dict[str, str] | None]:
    """The newest incident per expected fingerprint, straight from the ITSM's Table API."""
    out: dict[str, dict[str, str] | None] = {}
    for fp in expected:
        resp = itsm.get(
            "/api/now/table/incident",
            params={
                "sysparm_query": f"correlation_id={correlation_id(fp)}^ORDERBYDESCsys_created_on",
                "sysparm_fields": "number,state,priority,short_description",
                "sysparm_limit": "1",
            },
        )
        resp.raise_for_status()
        rows = resp.json()["result"]
        out[fp] = rows[0] if rows else None
    return out


def settled(exp: Expected, rec: dict[str, str] | None) -> bool:
    if rec is None:
        return False
    return rec["state"] in ACTIVE if exp.status == "firing" else rec["state"] == "6"


def synced_incidents(kafka: Settings, wait: float = 10.0) -> int:
    """How many incidents `itsmctl incidents sync` has put on itsm.incidents (waiting a little
    for its next pass)."""
    from ops.dlq import read_all

    deadline = time.monotonic() + wait
    while True:
        keys = {m.key() for m in read_all(kafka, kafka.topic(ITSM_INCIDENTS))}
        if keys or time.monotonic() > deadline:
            return len(keys)
        time.sleep(0.5)


def show_check(stack: Stack) -> bool:
    """`itsmctl itsm check servicenow` against the development ITSM, printed; False on a problem."""
    from connectors.preflight import Level, worst
    from connectors.registry import preflight
    from ops.commands.itsm import print_findings

    settings = Settings(
        servicenow_url=stack.devitsm_url,
        servicenow_password=SecretStr(stack.password),
    )
    findings = preflight("servicenow", settings)
    print("      itsmctl itsm check servicenow:", flush=True)
    buffer = io.StringIO()
    print_findings("servicenow", findings, buffer)
    for line in buffer.getvalue().splitlines():
        print(f"        {line}", flush=True)
    return worst(findings) is not Level.PROBLEM


def run_demo(once: bool, samples: Path | None, workdir: Path, timeout: float = 180.0) -> int:
    """Run everything, feed the samples, print the outcome; exit code 0 iff every alert is accounted for."""
    samples = samples or bundled_samples()
    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    broker = Broker(workdir / "kafka", port=port_or_free(9092), controller_port=free_port())
    print(f"[1/6] starting Kafka (KRaft, 127.0.0.1:{broker.port}) ...", flush=True)
    broker.start()
    # Short lifecycle periods, so a resolved sample alert auto-resolves its incident within the demo.
    stack = Stack(
        workdir,
        broker.bootstrap,
        gateway_port=port_or_free(8080),
        devitsm_port=port_or_free(8090),
        gate_port=port_or_free(8095),
        lifecycle={"stable_period": DEMO_STABLE_PERIOD, "tick_interval": 0.5},
    )
    code = 1
    try:
        print("[2/6] applying topics ...", flush=True)
        states = topic_ops.apply(AdminClient({"bootstrap.servers": broker.bootstrap}), list(declared()))
        print(f"      {sum(s.action == 'created' for s in states)} topics created", flush=True)
        print("[3/6] starting the development ITSM and checking it as the sinks will ...", flush=True)
        stack.start(["devitsm"])
        print("      provisioned its custom fields (itsmctl itsm provision servicenow)", flush=True)
        if not show_check(stack):
            return 1
        print("      starting worker, sinks, gateway, change sync, change gate ...", flush=True)
        stack.start([c for c in (*COMPONENTS, *CHANGE_COMPONENTS) if c != "devitsm"])
        print(
            f"[4/6] posting {len(list(samples.glob('*.json')))} sample webhooks to {stack.gateway_url} ...",
            flush=True,
        )
        expected, lines = post_samples(stack.gateway_url, samples)
        for name, status, detail in lines:
            print(f"      {name:<32} {status}  {detail}", flush=True)
        print(
            f"[5/6] waiting until every alert is accounted for in the ITSM (a resolved alert's incident "
            f"auto-resolves after staying clear for {DEMO_STABLE_PERIOD:.0f}s, the demo's stable_period) ...",
            flush=True,
        )
        deadline = time.monotonic() + timeout
        kafka = Settings(kafka_bootstrap=broker.bootstrap)
        with stack.itsm() as itsm:
            while True:
                stack.check_alive()
                recs = incident_states(itsm, expected)
                dead = dlq_count(kafka, dlq_name(ALERTS_RAW)) + dlq_count(kafka, dlq_name(INCIDENT_COMMANDS))
                done = all(settled(expected[fp], recs[fp]) for fp in expected)
                if done or time.monotonic() > deadline or stop.is_set():
                    break
                time.sleep(0.5)
        print()
        print(f"What became of each alert (read back from the ITSM's Table API at {stack.devitsm_url}):")
        print(f"  {'ALERT':<16} {'WHERE':<16} {'LAST SIGNAL':<12} {'INCIDENT':<11} {'STATE':<12} PRIORITY")
        for fp, exp in expected.items():
            rec = recs[fp] or {}
            state = STATE_NAMES.get(rec.get("state", ""), "missing")
            print(
                f"  {exp.name:<16} {exp.where:<16} {exp.status:<12} "
                f"{rec.get('number', '-'):<11} {state:<12} {rec.get('priority', '-')}"
            )
        accounted = sum(settled(expected[fp], recs[fp]) for fp in expected)
        rejected = sum(1 for _, status, _ in lines if status >= 400)
        print(
            f"\nAccounted for: {accounted}/{len(expected)} alerts "
            f"({sum(e.status == 'firing' for e in expected.values())} open, "
            f"{sum(e.status == 'resolved' for e in expected.values())} resolved); "
            f"{rejected} webhook(s) rejected at the gateway; {dead} dead letter(s)."
        )
        read_back = synced_incidents(kafka)
        print(
            f"Read back from the ITSM by `itsmctl incidents sync`: {read_back} incident(s) on itsm.incidents."
        )
        print("\n[6/6] a deployment pipeline against the change gate ...", flush=True)
        changes_ok = run_change_demo(stack, kafka, lambda line: print(line, flush=True))
        print(f"Change gate: {'every step as expected' if changes_ok else 'a step did not go as expected'}.")
        code = 0 if accounted == len(expected) and dead == 0 and changes_ok else 1
        if not once and not stop.is_set():
            print(
                f"\nRunning. ITSM page: {stack.devitsm_url}/  "
                f"(user pipeline, password in {stack.password_file})"
            )
            print(
                f"Post more Alertmanager webhooks to {stack.gateway_url}/v1/alerts/alertmanager. "
                f"Ask the change gate with ITSM_GATE_URL={stack.gate_url} "
                f"ITSM_GATE_TOKEN_FILE={stack.gate_token_file()} "
                "itsmctl gate check --service S --env production. "
                "Ctrl-C stops everything.",
                flush=True,
            )
            while not stop.is_set():
                stack.check_alive()
                stop.wait(1.0)
            code = 0
    finally:
        print(
            "\nstopping the gate, change and incident sync, gateway, sinks, worker, ITSM and Kafka ...",
            flush=True,
        )
        codes = stack.stop()
        broker.stop()
        print("stopped: " + ", ".join(f"{n} exit {c}" for n, c in codes.items()), flush=True)
    return code
