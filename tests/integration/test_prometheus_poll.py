"""The polling source against a real Prometheus (Debian's package) and the real broker: firing
alerts published once (not again while unchanged), pending ones only when asked, and an alert whose
rule is gone published RESOLVED; a cursor that survives the process; a clear error for a wrong URL."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ops.kafka.broker import free_port
from streams.core.models import Alert, AlertSource, AlertStatus
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.cli import Itsmctl
from tests.kafka_util import consume
from tests.prometheus import start_prometheus

pytestmark = pytest.mark.integration
SERDE = AvroSerde()

RULE = """  - alert: {name}
    expr: vector(1)
    for: {hold}
    labels: {{severity: {severity}, instance: "{host}:9100"}}
    annotations: {{summary: "{name} on {host}"}}
"""


def rules(*alerts: tuple[str, str, str, str]) -> str:
    body = "".join(RULE.format(name=n, host=h, severity=s, hold=f) for n, h, s, f in alerts)
    return "groups:\n- name: poll-test\n  interval: 1s\n  rules:\n" + body


def active(url: str) -> dict[str, str]:
    alerts = httpx.get(f"{url}/api/v1/alerts").json()["data"]["alerts"]
    return {a["labels"]["alertname"]: a["state"] for a in alerts}


def wait_for(url: str, wanted: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while active(url) != wanted:
        assert time.monotonic() < deadline, active(url)
        time.sleep(0.3)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Path, int]]:
    (tmp_path / "rules.yml").write_text(
        rules(
            ("DiskFull", "db-1", "critical", "0s"),
            ("HighCPU", "web-1", "warning", "0s"),
            ("SlowBurn", "web-2", "info", "1h"),
        )
    )
    config = f"global:\n  evaluation_interval: 1s\nrule_files:\n  - {tmp_path / 'rules.yml'}\n"
    proc, url = start_prometheus(tmp_path, config, free_port())
    yield url, tmp_path / "rules.yml", proc.pid
    proc.terminate()
    proc.wait(10)


def test_a_real_prometheus_is_polled_resolved_when_gone(
    prometheus: tuple[str, Path, int], kafka_settings: Settings, itsmctl: Itsmctl, tmp_path: Path
) -> None:
    url, rule_file, pid = prometheus
    boot, t = kafka_settings.kafka_bootstrap, kafka_settings.topic
    env = {"ITSM_KAFKA_BOOTSTRAP": boot, "ITSM_TOPIC_PREFIX": kafka_settings.topic_prefix}
    state = str(tmp_path / "cursor.json")
    wait_for(url, {"DiskFull": "firing", "HighCPU": "firing", "SlowBurn": "pending"})

    first = itsmctl("poll", "prometheus", url, "--once", "--state", state, **env)
    assert first.returncode == 0, first.stderr
    assert "2 firing, 2 published, 0 resolved" in first.stdout
    published = [SERDE.decode(m.value(), Alert) for m in consume(boot, t("alerts.raw"), 2, timeout=30)]
    assert sorted((a.name, a.status, a.source, a.labels["instance"]) for a in published) == [
        ("DiskFull", AlertStatus.FIRING, AlertSource.PROMETHEUS, "db-1:9100"),
        ("HighCPU", AlertStatus.FIRING, AlertSource.PROMETHEUS, "web-1:9100"),
    ]
    assert all(
        a.source_instance == url and a.summary.endswith(a.labels["instance"].split(":")[0]) for a in published
    )

    # Unchanged: nothing published again (the cursor survived the process).
    again = itsmctl("poll", "prometheus", url, "--once", "--state", state, **env)
    assert again.returncode == 0 and "2 firing, 0 published, 0 resolved" in again.stdout

    # HighCPU's rule is removed; Prometheus reloads (SIGHUP) and no longer lists it.
    rule_file.write_text(rules(("DiskFull", "db-1", "critical", "0s"), ("SlowBurn", "web-2", "info", "1h")))
    os.kill(pid, signal.SIGHUP)
    wait_for(url, {"DiskFull": "firing", "SlowBurn": "pending"})
    gone = itsmctl("poll", "prometheus", url, "--once", "--state", state, **env)
    assert gone.returncode == 0 and "1 firing, 0 published, 1 resolved" in gone.stdout
    records = [SERDE.decode(m.value(), Alert) for m in consume(boot, t("alerts.raw"), 3, timeout=30)]
    (resolved,) = [a for a in records if a.status is AlertStatus.RESOLVED]
    (fired,) = [a for a in published if a.name == "HighCPU"]
    assert resolved.fingerprint == fired.fingerprint and resolved.ends_at is not None
    assert resolved.ends_at >= fired.received_at

    # Pending alerts only when asked (a cursor of its own).
    pending = itsmctl(
        "poll", "prometheus", url, "--once", "--include-pending", "--state", str(tmp_path / "p.json"), **env
    )
    assert pending.returncode == 0 and "2 firing, 2 published" in pending.stdout

    wrong = itsmctl(
        "poll", "prometheus", "http://127.0.0.1:1", "--once", "--state", str(tmp_path / "w.json"), **env
    )
    assert wrong.returncode == 2 and "127.0.0.1:1" in wrong.stderr and "Traceback" not in wrong.stderr
    other = itsmctl("poll", "prometheus", "http://127.0.0.1:2", "--once", "--state", state, **env)
    assert other.returncode == 2 and "one state file per Prometheus" in other.stderr
