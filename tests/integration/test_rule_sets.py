"""Rules with history and rollback on the real broker: a running worker switches rule sets while
alerts flow, without a restart; every incident command was made under one whole set (its Rules:
line and its urgency agree), in the order the switches were published; every switch is audited;
an invalid set or a change without a version bump is refused before it reaches any worker."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.sources.alertmanager.mapping import labelset_fingerprint
from ops.kafka import Broker
from ops.stack import Stack
from streams.core.models import (
    Alert,
    AlertStatus,
    AuditEvent,
    IncidentAction,
    IncidentCommand,
    MaintenanceWindow,
    WindowKind,
    WindowScope,
)
from streams.core.rules import default_rules_dir, load_rules
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.cli import Itsmctl
from tests.examples import alert, configuration_item
from tests.kafka_util import consume, consume_until, produce
from tests.stacks import pipeline_stack

pytestmark = pytest.mark.integration
SERDE = AvroSerde()


def rules_copy(where: Path, source: Path | None = None, **edits: tuple[str, str]) -> Path:
    """ops/rules (or source) copied to where, each edit (old text, new text) applied to its file."""
    shutil.copytree(source or default_rules_dir(), where)
    for name, (old, new) in edits.items():
        path = where / f"{name}.toml"
        text = path.read_text()
        assert old in text, (name, old)
        path.write_text(text.replace(old, new, 1))
    return where


def edited(where: Path, name: str, *edits: tuple[str, str]) -> Path:
    """name.toml in where with the edits (old text, new text) applied and its version one higher
    (`itsmctl rules apply` refuses a changed file whose version did not go up)."""
    path = where / f"{name}.toml"
    text = path.read_text()
    for old, new in edits:
        assert old in text, (name, old)
        text = text.replace(old, new, 1)
    version = next(line for line in text.splitlines() if line.startswith("version = "))
    path.write_text(text.replace(version, f"version = {int(version.removeprefix('version = ')) + 1}", 1))
    return where


def cli_env(settings: Settings) -> dict[str, str]:
    """What itsmctl needs to reach this test's broker and topics."""
    return {"ITSM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "ITSM_TOPIC_PREFIX": settings.topic_prefix}


@pytest.fixture
def stack(kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    with pipeline_stack(kafka_broker, kafka_settings, tmp_path / "stack") as s:
        yield s


def test_a_rollback_while_alerts_flow_switches_whole_sets_at_record_boundaries(
    stack: Stack, kafka_settings: Settings, itsmctl: Itsmctl, tmp_path: Path
) -> None:
    boot, t = kafka_settings.kafka_bootstrap, kafka_settings.topic
    env = cli_env(kafka_settings)
    a = rules_copy(tmp_path / "a")
    # B: Alertmanager's "warning" counts as critical (a higher urgency), and templates.toml moves
    # too: two files that must switch together.
    b = rules_copy(
        tmp_path / "b",
        severity=("version = 1", "version = 2"),
        templates=("version = 1", "version = 2"),
    )
    severity = (b / "severity.toml").read_text()
    (b / "severity.toml").write_text(severity.replace('warning = "warning"', 'warning = "critical"', 1))
    versions_a, versions_b = load_rules(a).versions(), load_rules(b).versions()
    assert versions_a != versions_b

    first = itsmctl("rules", "apply", "--dir", str(a), "--reason", "baseline", "--actor", "alice", **env)
    assert first.returncode == 0, first.stderr
    stack.start(["worker"])
    # Warm up: the worker runs set A and consumes before the flow starts.
    produce(boot, t("alerts.raw"), [(b"warm" * 4, SERDE.encode(alert("warm" * 4, severity="warning")), [])])
    assert consume(boot, t("itsm.incident.commands"), 1, timeout=120)

    sent: list[tuple[float, str]] = []

    def flow() -> None:
        for n in range(60):
            fp = f"{n:04d}" * 4
            produce(boot, t("alerts.raw"), [(fp.encode(), SERDE.encode(alert(fp, severity="warning")), [])])
            sent.append((time.monotonic(), fp))
            time.sleep(0.1)

    flowing = threading.Thread(target=flow)
    flowing.start()
    time.sleep(2)
    switched = itsmctl(
        "rules", "apply", "--dir", str(b), "--reason", "warnings page", "--actor", "bob", **env
    )
    assert switched.returncode == 0, switched.stderr
    assert '+warning = "critical"' in switched.stdout  # the diff of what changes
    time.sleep(2)
    back = itsmctl("rules", "rollback", "--reason", "too noisy", "--actor", "carol", **env)
    assert back.returncode == 0, back.stderr
    flowing.join()

    commands = [
        SERDE.decode(m.value(), IncidentCommand)
        for m in consume(boot, t("itsm.incident.commands"), 61, timeout=120)
    ]
    assert len(commands) == 61
    by_set: dict[str, set[int | None]] = {}
    order: list[str] = []
    for cmd in sorted(commands, key=lambda c: c.issued_at):
        line = next(x for x in cmd.description.splitlines() if x.startswith("Rules: "))
        versions = line.removeprefix("Rules: ")
        assert versions in (versions_a, versions_b), versions  # never a mix of two sets
        by_set.setdefault(versions, set()).add(cmd.urgency)
        if not order or order[-1] != versions:
            order.append(versions)
    # Each set decided one urgency, B's higher than A's; A, then B, then A again after the rollback.
    assert len(by_set[versions_a]) == 1 and len(by_set[versions_b]) == 1
    assert by_set[versions_a] != by_set[versions_b]
    assert order == [versions_a, versions_b, versions_a], order

    audits = [SERDE.decode(m.value(), AuditEvent) for m in consume(boot, t("audit.events"), 3, timeout=30)]
    assert [(e.action, e.actor, e.reason) for e in sorted(audits, key=lambda e: e.occurred_at)] == [
        ("rules.applied", "alice", "baseline"),
        ("rules.applied", "bob", "warnings page"),
        ("rules.rolled_back", "carol", "too noisy"),
    ]
    history = json.loads(itsmctl("rules", "history", "-o", "json", **env).stdout)
    assert [s["action"] for s in history["sets"]] == ["apply", "apply", "rollback"]
    assert history["current"] == history["sets"][-1]["set_id"]
    assert history["sets"][-1]["versions"]["severity.toml"] == 1
    status = itsmctl("rules", "status", "--dir", str(a), **env)
    assert status.returncode == 0 and "severity.toml" in status.stdout and "differs" not in status.stdout
    assert itsmctl("rules", "diff", "--dir", str(b), **env).returncode == 1  # B is not what runs now
    metrics = httpx.get(f"http://127.0.0.1:{stack.worker_metrics_port}/metrics").text
    assert 'itsm_pipeline_rules_version{file="severity.toml"} 1.0' in metrics
    # At start from its local files to A (the topic's current set), then to B, then back to A.
    assert 'itsm_pipeline_rule_switches_total{outcome="switched"} 3.0' in metrics

    # Refused before any worker sees it: an invalid file, and a change that kept its version.
    broken = rules_copy(tmp_path / "broken", severity=("default_impact = 3", "default_impact = 'x'"))
    refused = itsmctl("rules", "apply", "--dir", str(broken), **env)
    assert (
        refused.returncode == 2
        and "severity.toml" in refused.stderr
        and "nothing was applied" in refused.stderr
    )
    unbumped = rules_copy(tmp_path / "unbumped", routes=("# ", "#  "))
    refused = itsmctl("rules", "apply", "--dir", str(unbumped), **env)
    assert refused.returncode == 2 and "routes.toml changed but its version is" in refused.stderr
    assert len(json.loads(itsmctl("rules", "history", "-o", "json", **env).stdout)["sets"]) == 3


def test_the_gateway_keys_alerts_under_the_rule_set_the_pipeline_runs_without_a_restart(
    stack: Stack, kafka_settings: Settings, itsmctl: Itsmctl, tmp_path: Path
) -> None:
    """fingerprint.toml reaches a running gateway through rules.sets: an applied set re-keys the
    next webhook's alerts, a rollback keys them as before; the gateway exports the set it runs."""
    boot, t = kafka_settings.kafka_bootstrap, kafka_settings.topic
    env = cli_env(kafka_settings)
    a = rules_copy(tmp_path / "a")
    by_name = edited(
        rules_copy(tmp_path / "b"), "fingerprint", ('alertmanager = "source"', 'alertmanager = ["alertname"]')
    )
    assert itsmctl("rules", "apply", "--dir", str(a), "--actor", "alice", **env).returncode == 0
    stack.start(["gateway"])
    source_fp = "feedfacefeedface"
    by_name_fp = labelset_fingerprint({"alertname": "DiskFull"})
    posted: list[str] = []

    def post() -> str:
        """One webhook (a new instance label each time, the same source fingerprint); the key of
        the alert the gateway published."""
        instance = f"db-{len(posted)}:9100"
        hook = {
            "version": "4",
            "status": "firing",
            "receiver": "itsm",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "DiskFull", "instance": instance},
                    "annotations": {"summary": "disk full"},
                    "startsAt": "2026-12-03T08:00:00Z",
                    "fingerprint": source_fp,
                }
            ],
        }
        r = httpx.post(f"{stack.gateway_url}/v1/alerts/alertmanager", json=hook, timeout=30)
        assert r.status_code == 202, r.text
        posted.append(instance)
        msgs = consume(boot, t("alerts.raw"), len(posted), timeout=60)
        assert len(msgs) == len(posted)
        last = next(m for m in msgs if SERDE.decode(m.value() or b"", Alert).labels["instance"] == instance)
        return (last.key() or b"").decode()

    def keyed_as(wanted: str) -> bool:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if post() == wanted:
                return True
            time.sleep(0.5)
        return False

    assert post() == source_fp
    switched = itsmctl("rules", "apply", "--dir", str(by_name), "--actor", "bob", **env)
    assert switched.returncode == 0, switched.stderr
    assert keyed_as(by_name_fp)  # no restart: the running gateway took set B
    metrics = httpx.get(f"{stack.gateway_url}/metrics", timeout=10).text
    assert 'itsm_pipeline_rules_version{file="fingerprint.toml"} 2.0' in metrics
    back = itsmctl("rules", "rollback", "--actor", "carol", **env)
    assert back.returncode == 0, back.stderr
    assert keyed_as(source_fp)
    assert post() == source_fp  # and it stays there


def test_the_gate_decides_under_the_topology_of_the_rule_set_the_pipeline_runs(
    stack: Stack, kafka_settings: Settings, itsmctl: Itsmctl, tmp_path: Path
) -> None:
    """correlation.toml's topology reaches a running gate through rules.sets: a freeze on a host
    covers the web server that runs on it while RUNS_ON is followed, and no longer once a set
    without it is applied."""
    boot, t = kafka_settings.kafka_bootstrap, kafka_settings.topic
    env = cli_env(kafka_settings)
    a = rules_copy(tmp_path / "a")
    no_runs_on = edited(
        rules_copy(tmp_path / "b"),
        "correlation",
        (
            'relationships = ["DEPENDS_ON", "RUNS_ON", "HOSTED_ON"]',
            'relationships = ["DEPENDS_ON", "HOSTED_ON"]',
        ),
    )
    now = datetime.now(UTC)
    web = configuration_item("web-1", relationships=[{"type": "RUNS_ON", "target_ci_id": "host-1"}])
    produce(
        boot,
        t("cmdb.ci"),
        [(b"host-1", SERDE.encode(configuration_item("host-1")), []), (b"web-1", SERDE.encode(web), [])],
    )
    freeze = MaintenanceWindow(
        window_id="fr-host-1",
        kind=WindowKind.FREEZE,
        scope=WindowScope.CI_AND_DEPENDENTS,
        target="host-1",
        starts_at=now - timedelta(hours=1),
        ends_at=now + timedelta(days=1),
        reason="host-1 firmware",
        updated_at=now,
    )
    produce(boot, t("maintenance.windows"), [(b"fr-host-1", SERDE.encode(freeze), [])])
    assert itsmctl("rules", "apply", "--dir", str(a), "--actor", "alice", **env).returncode == 0
    stack.start(["gate"])
    check = "gate check --service checkout --env production --commit c1 --ci web-1".split()

    def decision() -> subprocess.CompletedProcess[str]:
        caller = {**stack.env(), "ITSM_GATE_TOKEN_FILE": str(stack.gate_token_file())}
        return subprocess.run(
            [sys.executable, "-m", "ops.cli", *check], env=caller, capture_output=True, text=True, timeout=60
        )

    frozen = decision()
    assert frozen.returncode == 1 and "freeze window fr-host-1" in frozen.stdout, (
        frozen.stdout + frozen.stderr
    )
    switched = itsmctl("rules", "apply", "--dir", str(no_runs_on), "--actor", "bob", **env)
    assert switched.returncode == 0, switched.stderr
    deadline = time.monotonic() + 60
    while "freeze window fr-host-1" in (latest := decision()).stdout and time.monotonic() < deadline:
        time.sleep(0.5)
    # Still denied (no approved change covers the deploy), but the host's freeze no longer covers it.
    assert latest.returncode == 1 and "freeze" not in latest.stdout, latest.stdout + latest.stderr
    assert "no approved change" in latest.stdout, latest.stdout


def test_a_new_tick_interval_reaches_a_running_worker_within_a_second(
    stack: Stack, kafka_settings: Settings, itsmctl: Itsmctl, tmp_path: Path
) -> None:
    """lifecycle.tick_interval is read by the running worker's timer: under set A (a tick a
    minute) a cleared alert waits for the next tick to resolve its incident; once set B (two
    ticks a second) is applied, it resolves within seconds, long before A's first tick."""
    boot, t = kafka_settings.kafka_bootstrap, kafka_settings.topic
    env = cli_env(kafka_settings)
    slow = edited(
        rules_copy(tmp_path / "a"),
        "lifecycle",
        ("tick_interval = 1.0", "tick_interval = 60.0"),
        ("stable_period = 300", "stable_period = 1"),
    )
    fast = edited(
        rules_copy(tmp_path / "b", slow), "lifecycle", ("tick_interval = 60.0", "tick_interval = 0.5")
    )
    assert itsmctl("rules", "apply", "--dir", str(slow), "--actor", "alice", **env).returncode == 0
    started = time.monotonic()
    stack.start(["worker"])
    now = datetime.now(UTC)
    fp = "5eed" * 4
    firing = alert(fp, starts_at=now - timedelta(minutes=1), received_at=now)
    produce(boot, t("alerts.raw"), [(fp.encode(), SERDE.encode(firing), [])])
    assert consume(boot, t("itsm.incident.commands"), 1, timeout=60)
    cleared = alert(
        fp,
        status=AlertStatus.RESOLVED,
        starts_at=now - timedelta(minutes=1),
        ends_at=datetime.now(UTC),
        received_at=datetime.now(UTC),
    )
    produce(boot, t("alerts.raw"), [(fp.encode(), SERDE.encode(cleared), [])])
    time.sleep(3)  # the stable period (1 s) passes; set A's first tick is a minute after the start
    switched = itsmctl("rules", "apply", "--dir", str(fast), "--actor", "bob", **env)
    assert switched.returncode == 0, switched.stderr
    applied = time.monotonic()
    assert applied - started < 45, "too slow a start to tell set B's tick from set A's"

    def resolved(msg: Any) -> bool:
        return SERDE.decode(msg.value() or b"", IncidentCommand).action is IncidentAction.RESOLVE

    commands = consume_until(boot, t("itsm.incident.commands"), resolved, timeout=30)
    actions = [SERDE.decode(m.value() or b"", IncidentCommand).action for m in commands]
    assert actions and actions[-1] is IncidentAction.RESOLVE, actions
    # Resolved under set B's period: well before set A's first tick (60 s after the start).
    assert time.monotonic() - started < 58
