"""A real Prometheus (Debian's) scrapes every process of a running pipeline and evaluates
ops/prometheus/pipeline.rules.yml: when the sink's ITSM goes down, PipelineStalled fires for the
sink's consumer group; when the ITSM is back, it resolves. The rules are used as written, with
their windows shortened (5m -> 20s) so the test takes seconds, not minutes."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ops.kafka import Broker
from ops.kafka.broker import free_port
from ops.stack import Stack
from streams.core.settings import Settings
from tests.stacks import pipeline_stack

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def shortened_rules(target: Path) -> Path:
    text = (ROOT / "ops" / "prometheus" / "pipeline.rules.yml").read_text()
    assert "[5m]" in text and "for: 5m" in text
    target.write_text(
        text.replace("[5m]", "[20s]").replace("for: 5m", "for: 5s").replace("for: 2m", "for: 5s")
    )
    return target


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    exe = shutil.which("prometheus")
    assert exe, "prometheus not found: ops/test.sh installs Debian's prometheus package"
    yield exe, tmp_path


def start_prometheus(exe: str, workdir: Path, stack: Stack) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    rules = shortened_rules(workdir / "pipeline.rules.yml")
    targets = {
        "status": stack.status_url,
        "worker": f"http://127.0.0.1:{stack.worker_metrics_port}",
        "sink": f"http://127.0.0.1:{stack.sink_metrics_port}",
        "gateway": stack.gateway_url,
    }
    jobs = "\n".join(
        f"  - job_name: {name}\n    static_configs:\n      - targets: ['{url.split('//', 1)[1]}']"
        for name, url in targets.items()
    )
    config = workdir / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\n"
        f"scrape_configs:\n{jobs}\n"
    )
    log = open(workdir / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, (workdir / "prometheus.log").read_text()
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("prometheus did not become ready:\n" + (workdir / "prometheus.log").read_text())


def webhook(n: int) -> dict[str, object]:
    alert = {
        "status": "firing",
        "labels": {"alertname": "StallTest", "instance": f"host-{n}:9100", "severity": "warning"},
        "annotations": {"summary": f"stall test {n}"},
        "startsAt": datetime.now(UTC).isoformat(),
        "endsAt": "0001-01-01T00:00:00Z",
    }
    return {"receiver": "itsm-pipeline", "status": "firing", "alerts": [alert], "version": "4"}


def test_the_stall_alert_fires_while_the_itsm_is_down_and_resolves_after(
    prometheus: tuple[str, Path], kafka_broker: Broker, kafka_settings: Settings
) -> None:
    exe, workdir = prometheus
    s = kafka_settings
    sink_group = f"{s.app_id}-sink-servicenow"
    with pipeline_stack(
        kafka_broker,
        s,
        workdir / "stack",
        # The sink keeps retrying the down ITSM (no dead letter): it stands still.
        extra_env={"ITSM_SINK_RETRY_BUDGET_SECONDS": "600", "ITSM_SINK_BACKOFF_MAX_SECONDS": "1"},
    ) as stack:
        stack.start(["devitsm", "worker", "sink", "gateway", "status"])
        prom, prom_url = start_prometheus(exe, workdir, stack)
        stop = threading.Event()
        sent: list[int] = []

        def stream() -> None:
            n = 0
            while not stop.is_set():
                r = httpx.post(f"{stack.gateway_url}/v1/alerts/alertmanager", json=webhook(n), timeout=30)
                sent.append(r.status_code)
                n += 1
                time.sleep(0.5)

        def stalled() -> list[dict[str, object]]:
            body = httpx.get(f"{prom_url}/api/v1/alerts", timeout=5).json()
            return [
                a
                for a in body["data"]["alerts"]
                if a["labels"]["alertname"] == "PipelineStalled"
                and a["labels"].get("consumergroup") == sink_group
            ]

        def wait(predicate, what: str, timeout: float) -> float:  # type: ignore[no-untyped-def]
            started = time.monotonic()
            while not predicate():
                stack.check_alive()
                assert time.monotonic() - started < timeout, (
                    f"{what} not within {timeout}s; alerts: {httpx.get(f'{prom_url}/api/v1/alerts').text}\n"
                    + stack.log_tail("sink")
                )
                time.sleep(1)
            return time.monotonic() - started

        flow = threading.Thread(target=stream)
        flow.start()
        try:
            # Healthy first: commands are delivered, nothing stalls.
            time.sleep(8)
            assert stalled() == []
            stack.stop_one("devitsm")  # the sink's ITSM goes down
            took = wait(lambda: any(a["state"] == "firing" for a in stalled()), "PipelineStalled firing", 120)
            print(f"PipelineStalled fired {took:.0f} s after the ITSM went down")
            (alert,) = [a for a in stalled() if a["state"] == "firing"]
            assert alert["labels"]["topic"] == s.topic("itsm.incident.commands")  # type: ignore[index]
            assert alert["annotations"]["runbook_url"] == "ops/runbooks/PipelineStalled.md"  # type: ignore[index]
            stack.start(["devitsm"])  # back: the sink delivers what waited
            took = wait(lambda: stalled() == [], "PipelineStalled resolved", 120)
            print(f"PipelineStalled resolved {took:.0f} s after the ITSM came back")
        finally:
            stop.set()
            flow.join()
            prom.terminate()
            prom.wait(20)
        assert sent and set(sent) == {202}
        # Nothing lost: every alert sent became an incident, once.
        with stack.itsm() as itsm:

            def count() -> int:
                rows = itsm.get(
                    "/api/now/table/incident", params={"sysparm_query": "short_descriptionLIKEstall test"}
                ).json()["result"]
                return len(rows)

            wait(lambda: count() == len(sent), f"{len(sent)} incidents", 120)
