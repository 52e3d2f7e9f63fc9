"""Silences and event rules on the real broker: `itsmctl silence add` mutes exactly the alerts its
matchers match (counted), `query --muted` shows them, `expire` lets the still-firing one open at
once, every change is audited; Alertmanager's silences import; an event rule's drop is recorded
in alerts.suppressed and counted."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from ops.kafka import Broker
from ops.stack import Stack
from streams.core.models import AuditEvent
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.cli import Itsmctl
from tests.kafka_util import consume
from tests.stacks import pipeline_stack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    with pipeline_stack(
        kafka_broker,
        kafka_settings,
        tmp_path / "stack",
        lifecycle={"stable_period": 1.0, "tick_interval": 0.2},
    ) as s:
        yield s


def env(s: Settings) -> dict[str, str]:
    return {"ITSM_KAFKA_BOOTSTRAP": s.kafka_bootstrap, "ITSM_TOPIC_PREFIX": s.topic_prefix}


def webhook(*instances: str) -> dict[str, object]:
    now = datetime.now(UTC).isoformat()
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": "SilenceMe", "instance": i, "severity": "warning"},
            "annotations": {"summary": f"silence test on {i}"},
            "startsAt": now,
            "endsAt": "0001-01-01T00:00:00Z",
        }
        for i in instances
    ]
    return {"receiver": "itsm-pipeline", "status": "firing", "alerts": alerts, "version": "4"}


def rules_dir(tmp_path: Path, lifecycle: dict[str, float] | None = None, **files: str) -> Path:
    """The shipped rule files, lifecycle.toml's values overridden and some files replaced (name
    without .toml -> its text): give the stack this instead of its lifecycle= (both would set
    ITSM_RULES_DIR)."""
    from ops.stack import write_rules

    rules = write_rules(tmp_path / "rules", {"lifecycle": lifecycle or {}})
    for name, text in files.items():
        (rules / f"{name}.toml").write_text(text)
    return rules


def wait(predicate, stack: Stack, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        stack.check_alive()
        assert time.monotonic() < deadline, f"{what}:\n" + stack.log_tail("worker")
        time.sleep(0.3)


def test_a_silence_mutes_its_matches_and_its_expiry_lets_them_open(
    stack: Stack, kafka_settings: Settings, itsmctl: Itsmctl
) -> None:
    s = kafka_settings
    stack.start()
    ran = itsmctl(
        "silence",
        "add",
        "alertname=SilenceMe",
        'instance=~"db-.*"',
        "--duration",
        "10m",
        "--comment",
        "disk swap on the db hosts",
        "--author",
        "alice",
        **env(s),
    )
    assert ran.returncode == 0, ran.stderr
    silence_id = ran.stdout.strip()
    assert silence_id.startswith("silence-")
    listed = json.loads(itsmctl("silence", "query", "-o", "json", **env(s)).stdout)
    assert [(x["id"], x["state"], x["matchers"]) for x in listed] == [
        (silence_id, "active", ['alertname="SilenceMe"', 'instance=~"db-.*"'])
    ]
    time.sleep(3)  # the worker's view of maintenance.windows follows the topic

    r = httpx.post(f"{stack.gateway_url}/v1/alerts/alertmanager", json=webhook("db-1:9100", "web-1:9100"))
    assert r.status_code == 202

    def incidents() -> dict[str, str]:
        with stack.itsm() as itsm:
            rows = itsm.get("/api/now/table/incident", params={"sysparm_fields": "short_description,state"})
            return {row["short_description"]: row["state"] for row in rows.json()["result"]}

    wait(lambda: any("web-1" in d for d in incidents()), stack, "web-1 opens")

    def muted() -> list[dict[str, object]]:
        return list(json.loads(itsmctl("silence", "query", "--muted", "-o", "json", **env(s)).stdout))

    wait(lambda: len(muted()) == 1, stack, "db-1 muted")
    (m,) = muted()
    assert (m["silence_id"], m["labels"]["instance"], m["status"]) == (silence_id, "db-1:9100", "FIRING")  # type: ignore[index]
    assert not any("db-1" in d for d in incidents())
    # Every input accounted for: one emitted (web-1), one suppressed (db-1).
    metrics = httpx.get(f"http://127.0.0.1:{stack.worker_metrics_port}/metrics").text
    assert 'itsm_pipeline_alert_outcomes_total{outcome="suppressed"} 1.0' in metrics
    assert 'itsm_pipeline_alert_outcomes_total{outcome="emitted"} 1.0' in metrics

    ran = itsmctl("silence", "expire", silence_id, "--author", "bob", **env(s))
    assert ran.returncode == 0 and f"expired {silence_id}" in ran.stdout, ran.stderr
    # db-1 still fires: it opens now, not when the ten minutes would have ended.
    wait(lambda: any("db-1" in d for d in incidents()), stack, "db-1 opens after the expiry", timeout=30)
    assert json.loads(itsmctl("silence", "query", "-o", "json", **env(s)).stdout) == []
    (gone,) = json.loads(itsmctl("silence", "query", "--expired", "-o", "json", **env(s)).stdout)
    assert gone["state"] == "expired" and gone["created_by"] == "alice"

    audit = [
        AvroSerde().decode(m.value(), AuditEvent)
        for m in consume(s.kafka_bootstrap, s.topic("audit.events"), 2, timeout=30)
    ]
    assert sorted((a.action, a.actor, a.subject_id) for a in audit) == [
        ("silence.add", "alice", silence_id),
        ("silence.expire", "bob", silence_id),
    ]
    assert audit[0].details["matchers"] == 'alertname="SilenceMe",instance=~"db-.*"'

    ran = itsmctl("silence", "expire", "silence-nope", **env(s))
    assert ran.returncode == 1 and "no silence silence-nope" in ran.stderr


def test_bad_silences_are_refused_in_one_line(kafka_settings: Settings, itsmctl: Itsmctl) -> None:
    for argv, problem in (
        (["alertname=~.*", "--comment", "x"], "must not match the empty string"),
        (['alertname=~"(x"', "--comment", "x"], "not an RE2 regex"),
        (["alertname=X", "--comment", "x", "--duration", "1h", "--end", "2h"], "not both"),
        (["alertname=X", "--comment", "x", "--every", "MON"], "--every, --at and --for together"),
    ):
        ran = itsmctl("silence", "add", *argv, **env(kafka_settings))
        assert ran.returncode == 2 and problem in ran.stderr, (argv, ran.stderr)
        assert "Traceback" not in ran.stderr


def test_alertmanager_silences_import_and_reimport_updates(
    kafka_settings: Settings, itsmctl: Itsmctl, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    exported = [
        {
            "id": "b3a1e2f0-1111-4c2d-9a7e-000000000001",
            "matchers": [
                {"name": "alertname", "value": "DiskFull", "isRegex": False, "isEqual": True},
                {"name": "instance", "value": "web-.*", "isRegex": True, "isEqual": False},
            ],
            "startsAt": (now - timedelta(minutes=5)).isoformat(),
            "endsAt": (now + timedelta(hours=2)).isoformat(),
            "createdBy": "carol",
            "comment": "migrated",
            "status": {"state": "active"},
        },
        {
            "id": "b3a1e2f0-1111-4c2d-9a7e-000000000002",
            "matchers": [{"name": "alertname", "value": "Old", "isRegex": False}],
            "startsAt": (now - timedelta(hours=5)).isoformat(),
            "endsAt": (now - timedelta(hours=1)).isoformat(),
            "createdBy": "carol",
            "comment": "over",
            "status": {"state": "expired"},
        },
    ]
    path = tmp_path / "silences.json"
    path.write_text(json.dumps(exported))
    for _ in range(2):  # importing again updates the same silence
        ran = itsmctl("silence", "import", str(path), **env(kafka_settings))
        assert ran.returncode == 0, ran.stderr
        assert "1 silence(s) imported" in ran.stdout
    listed = json.loads(itsmctl("silence", "query", "-o", "json", **env(kafka_settings)).stdout)
    assert [(x["id"], x["matchers"], x["created_by"]) for x in listed] == [
        (
            "silence-b3a1e2f0-1111-4c2d-9a7e-000000000001",
            ['alertname="DiskFull"', 'instance!~"web-.*"'],
            "carol",
        )
    ]
    path.write_text('{"not": "a list"}')
    ran = itsmctl("silence", "import", str(path), **env(kafka_settings))
    assert ran.returncode == 2 and "expected a JSON array" in ran.stderr


def test_an_event_rule_drop_is_recorded_and_counted_never_silent(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    from streams.core.models import SuppressedAlert

    rules = rules_dir(
        tmp_path,
        events='version = 2\n[[rule]]\nname = "drop-info"\n'
        'when = { severity = ["info"] }\nthen = { drop = true }\n',
    )
    s = kafka_settings
    with pipeline_stack(
        kafka_broker, s, tmp_path / "stack", extra_env={"ITSM_RULES_DIR": str(rules)}
    ) as stack:
        stack.start()
        body = webhook("noise-1:9100", "noise-2:9100", "real-1:9100")
        for a in body["alerts"]:  # type: ignore[attr-defined]
            if a["labels"]["instance"].startswith("noise"):
                a["labels"]["severity"] = "info"
        assert httpx.post(f"{stack.gateway_url}/v1/alerts/alertmanager", json=body).status_code == 202
        suppressed = [
            AvroSerde().decode(m.value(), SuppressedAlert)
            for m in consume(s.kafka_bootstrap, s.topic("alerts.suppressed"), 2, timeout=60)
        ]
        assert sorted((x.alert.labels["instance"], x.reason) for x in suppressed) == [
            ("noise-1:9100", "event rule drop-info"),
            ("noise-2:9100", "event rule drop-info"),
        ]

        def incidents() -> list[str]:
            with stack.itsm() as itsm:
                rows = itsm.get("/api/now/table/incident", params={"sysparm_fields": "short_description"})
                return [r["short_description"] for r in rows.json()["result"]]

        wait(lambda: len(incidents()) == 1, stack, "one incident")
        assert "real-1" in incidents()[0]
        metrics = httpx.get(f"http://127.0.0.1:{stack.worker_metrics_port}/metrics").text
        # Every input accounted for: 3 in = 1 emitted + 2 suppressed (by the rule, counted).
        assert 'itsm_pipeline_alert_outcomes_total{outcome="suppressed"} 2.0' in metrics
        assert 'itsm_pipeline_alert_outcomes_total{outcome="emitted"} 1.0' in metrics
        assert 'itsm_pipeline_event_rules_total{action="dropped",rule="drop-info"} 2.0' in metrics


def test_a_hold_opens_what_keeps_firing_and_lets_what_resolves_end_quietly(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    s = kafka_settings
    lifecycle = {"stable_period": 1.0, "tick_interval": 0.2, "dedup_window": 0.0, "open_after_seconds": 4.0}
    with pipeline_stack(kafka_broker, s, tmp_path / "stack", lifecycle=lifecycle) as stack:
        stack.start()
        firing = webhook("held-1:9100", "brief-1:9100")
        assert httpx.post(f"{stack.gateway_url}/v1/alerts/alertmanager", json=firing).status_code == 202
        time.sleep(1)
        resolved = webhook("brief-1:9100")
        for a in resolved["alerts"]:  # type: ignore[attr-defined]
            a["status"] = "resolved"
            a["endsAt"] = datetime.now(UTC).isoformat()
        resolved["status"] = "resolved"
        assert httpx.post(f"{stack.gateway_url}/v1/alerts/alertmanager", json=resolved).status_code == 202

        def incidents() -> list[str]:
            with stack.itsm() as itsm:
                rows = itsm.get("/api/now/table/incident", params={"sysparm_fields": "short_description"})
                return [r["short_description"] for r in rows.json()["result"]]

        assert incidents() == []  # inside the hold: nothing opened yet
        wait(lambda: len(incidents()) == 1, stack, "the held alert opens after its hold", timeout=30)
        assert "held-1" in incidents()[0]
        time.sleep(2)
        assert len(incidents()) == 1  # the brief one resolved inside its hold: never opened
        metrics = httpx.get(f"http://127.0.0.1:{stack.worker_metrics_port}/metrics").text
        # 3 records in: the two firings held, the resolve ended quietly (held); the opening came
        # from a tick, not from a record.
        assert 'itsm_pipeline_alert_outcomes_total{outcome="held"} 3.0' in metrics
        assert 'itsm_pipeline_holds_total{outcome="ended_quietly"} 1.0' in metrics
        assert 'itsm_pipeline_holds_total{outcome="opened"} 1.0' in metrics


def test_an_inhibition_keeps_targets_quiet_while_its_source_fires_and_they_open_when_it_clears(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    from streams.core.models import MaintenanceWindow, SuppressedAlert, WindowKind

    lifecycle = {"stable_period": 1.0, "tick_interval": 0.2}
    rules = rules_dir(
        tmp_path,
        lifecycle,
        inhibit='version = 2\n[[rule]]\nname = "dc-down"\n'
        "source_matchers = ['alertname=\"DatacenterDown\"']\n"
        'target_matchers = [\'severity=~"warning|critical"\']\nequal = ["datacenter"]\n',
    )
    s = kafka_settings
    with pipeline_stack(
        kafka_broker, s, tmp_path / "stack", extra_env={"ITSM_RULES_DIR": str(rules)}
    ) as stack:
        stack.start()

        def alerts(status: str, *labels: dict[str, str]) -> dict[str, object]:
            now = datetime.now(UTC).isoformat()
            items = [
                {
                    "status": status,
                    "labels": lbl,
                    "annotations": {"summary": f"{lbl['alertname']} {lbl.get('instance', '')}"},
                    "startsAt": now,
                    "endsAt": now if status == "resolved" else "0001-01-01T00:00:00Z",
                }
                for lbl in labels
            ]
            return {"receiver": "itsm-pipeline", "status": status, "alerts": items, "version": "4"}

        def incidents() -> list[str]:
            with stack.itsm() as itsm:
                rows = itsm.get("/api/now/table/incident", params={"sysparm_fields": "short_description"})
                return sorted(r["short_description"] for r in rows.json()["result"])

        source = {"alertname": "DatacenterDown", "datacenter": "fra", "severity": "critical"}
        url = f"{stack.gateway_url}/v1/alerts/alertmanager"
        assert httpx.post(url, json=alerts("firing", source)).status_code == 202
        wait(lambda: len(incidents()) == 1, stack, "the source opens its incident")
        targets = [
            {"alertname": "NodeDown", "instance": f"fra-{i}:9100", "datacenter": "fra", "severity": "warning"}
            for i in range(5)
        ]
        other = {**targets[0], "instance": "ams-1:9100", "datacenter": "ams"}
        assert httpx.post(url, json=alerts("firing", *targets, other)).status_code == 202
        wait(lambda: len(incidents()) == 2, stack, "the other datacenter's alert opens")
        suppressed = [
            AvroSerde().decode(m.value(), SuppressedAlert)
            for m in consume(s.kafka_bootstrap, s.topic("alerts.suppressed"), 5, timeout=60)
        ]
        assert sorted(x.alert.labels["instance"] for x in suppressed) == [f"fra-{i}:9100" for i in range(5)]
        assert {x.window_id for x in suppressed} == {next(iter(suppressed)).window_id}
        assert all("DatacenterDown" in x.reason and "rule dc-down" in x.reason for x in suppressed)
        # The inhibition is a window on maintenance.windows, where every worker sees it.
        (window,) = [
            AvroSerde().decode(m.value(), MaintenanceWindow)
            for m in consume(s.kafka_bootstrap, s.topic("maintenance.windows"), 1, timeout=30)
        ]
        assert window.kind is WindowKind.INHIBITION and window.window_id == suppressed[0].window_id
        metrics = httpx.get(f"http://127.0.0.1:{stack.worker_metrics_port}/metrics").text
        # Every input accounted for: 7 in = 2 emitted (source, ams-1) + 5 inhibited.
        assert 'itsm_pipeline_alert_outcomes_total{outcome="inhibited"} 5.0' in metrics
        assert 'itsm_pipeline_alert_outcomes_total{outcome="emitted"} 2.0' in metrics
        assert len(incidents()) == 2

        # The source clears: the five still fire, so each opens its incident now.
        assert httpx.post(url, json=alerts("resolved", source)).status_code == 202
        wait(lambda: len(incidents()) == 7, stack, "the inhibited alerts open once the source clears")
        assert sum("NodeDown fra-" in d for d in incidents()) == 5
