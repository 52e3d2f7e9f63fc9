"""A real Prometheus Alertmanager sends webhooks to the gateway; resolving alerts there resolves incidents."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from connectors.sources.alertmanager.mapping import labelset_fingerprint
from ops.kafka import Broker
from ops.kafka.broker import free_port
from ops.stack import Stack
from streams.core.settings import Settings
from streams.stages.alerts.lifecycle import correlation_id
from tests.kafka_util import kafka_env
from tests.prometheus import wait_ready

pytestmark = pytest.mark.e2e

CONFIG = """\
route:
  receiver: itsm-pipeline
  group_by: ['alertname']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: itsm-pipeline
    webhook_configs:
      - url: {url}/v1/alerts/alertmanager
        send_resolved: true
"""


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Yields (base URL, config path); the config is written by the test before the first reload."""
    exe = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert exe, "prometheus-alertmanager not found: ops/test.sh installs Debian's package"
    yield exe, tmp_path


def start_alertmanager(exe: str, workdir: Path, gateway_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = workdir / "alertmanager.yml"
    config.write_text(CONFIG.format(url=gateway_url))
    log = open(workdir / "alertmanager.log", "wb")
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={config}",
            f"--storage.path={workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url, workdir / "alertmanager.log", "alertmanager")
    return proc, url


def test_alerts_posted_to_alertmanager_become_incidents_and_resolve(
    alertmanager: tuple[str, Path], kafka_broker: Broker, kafka_settings: Settings
) -> None:
    exe, workdir = alertmanager
    stack = Stack(
        workdir / "stack",
        kafka_broker.bootstrap,
        kafka_env=kafka_env(kafka_broker.bootstrap),
        topic_prefix=kafka_settings.topic_prefix,
        app_id=kafka_settings.app_id,
        lifecycle={"stable_period": 1.0, "tick_interval": 0.2},
    )
    stack.start()
    am, am_url = start_alertmanager(exe, workdir, stack.gateway_url)
    try:
        now = datetime.now(UTC)
        alerts = [
            {
                "labels": {"alertname": "E2EDiskFull", "instance": f"db-{i}:9100", "severity": "critical"},
                "annotations": {"summary": f"Disk full on db-{i}"},
                "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(hours=1)).isoformat(),
                "generatorURL": "http://prometheus.test/graph",
            }
            for i in (1, 2)
        ]
        assert httpx.post(f"{am_url}/api/v2/alerts", json=alerts).status_code == 200
        # Alertmanager's own fingerprints: ours must be the same label-set hash.
        am_alerts = httpx.get(f"{am_url}/api/v2/alerts").json()
        fps = {a["labels"]["instance"]: a["fingerprint"] for a in am_alerts}
        for a in am_alerts:
            assert a["fingerprint"] == labelset_fingerprint(a["labels"])
        ids = {correlation_id(fp) for fp in fps.values()}

        def states() -> dict[str, str]:
            with stack.itsm() as itsm:
                rows = itsm.get(
                    "/api/now/table/incident", params={"sysparm_fields": "correlation_id,state,priority"}
                )
                return {r["correlation_id"]: r["state"] for r in rows.json()["result"]}

        wait_until(lambda: set(states()) == ids and set(states().values()) == {"1"}, stack, workdir)
        with stack.itsm() as itsm:
            rows = itsm.get("/api/now/table/incident", params={"sysparm_fields": "priority,urgency"}).json()[
                "result"
            ]
        assert {r["urgency"] for r in rows} == {"1"}  # critical -> urgency 1 via the severity rules

        # Resolve them in Alertmanager: it sends the resolved notification, the incidents resolve.
        ended = datetime.now(UTC)
        for a in alerts:
            a["endsAt"] = ended.isoformat()
        assert httpx.post(f"{am_url}/api/v2/alerts", json=alerts).status_code == 200
        wait_until(lambda: set(states().values()) == {"6"}, stack, workdir)
        assert set(states()) == ids  # resolved the same incidents, opened none
    finally:
        am.terminate()
        am.wait(10)
        codes = stack.stop()
    assert all(code == 0 for code in codes.values()), codes


def wait_until(predicate, stack: Stack, workdir: Path, timeout: float = 90.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        stack.check_alive()
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}\n{stack.log_tail(n)}" for n in stack.procs)
            raise AssertionError(
                f"timed out\n{logs}\n--- alertmanager\n{(workdir / 'alertmanager.log').read_text()[-3000:]}"
            )
        time.sleep(0.5)
