"""A real Prometheus (Debian's) scrapes every process of a running pipeline and evaluates
ops/prometheus/pipeline.rules.yml: when the sink's ITSM goes down, PipelineStalled fires for the
sink's consumer group; when the ITSM is back, it resolves. The rules are used as written, with
their windows shortened (5m -> 20s) so the test takes seconds, not minutes."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ops.kafka import Broker
from ops.stack import Stack
from streams.core.settings import Settings
from tests.prometheus import start_prometheus
from tests.stacks import pipeline_stack

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
LOGGED = ("sink", "status", "worker")  # whose log tails a failure shows


def shortened_rules(target: Path) -> Path:
    text = (ROOT / "ops" / "prometheus" / "pipeline.rules.yml").read_text()
    assert "[5m]" in text and "for: 5m" in text
    target.write_text(
        text.replace("[5m]", "[20s]").replace("for: 5m", "for: 5s").replace("for: 2m", "for: 5s")
    )
    return target


def prometheus_config(workdir: Path, stack: Stack) -> str:
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
    return (
        f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\n"
        f"scrape_configs:\n{jobs}\n"
    )


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
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    workdir = tmp_path
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
        prom, prom_url = start_prometheus(workdir, prometheus_config(workdir, stack))
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

        def exported() -> str:
            """What the status service exports for the sink's group (PipelineStalled's input)."""
            text = httpx.get(f"{stack.status_url}/metrics", timeout=10).text
            return "\n".join(
                line for line in text.splitlines() if "kafka_consumergroup" in line and sink_group in line
            )

        def wait(predicate, what: str, timeout: float) -> float:  # type: ignore[no-untyped-def]
            started = time.monotonic()
            while not predicate():
                stack.check_alive()
                assert time.monotonic() - started < timeout, (
                    f"{what} not within {timeout}s; alerts: {httpx.get(f'{prom_url}/api/v1/alerts').text}\n"
                    f"status service exports:\n{exported()}\n"
                    + "\n".join(f"--- {name}:\n{stack.log_tail(name)}" for name in LOGGED)
                )
                time.sleep(1)
            return time.monotonic() - started

        flow = threading.Thread(target=stream)
        # The sink's ITSM is down before its first command: the sink never commits, so its
        # partitions have no committed offset at all (the hardest stall to see; a sink that
        # stops after committing is promtool's case in ops/prometheus/tests/pipeline_test.yml).
        stack.stop_one("devitsm")
        flow.start()
        try:
            took = wait(lambda: any(a["state"] == "firing" for a in stalled()), "PipelineStalled firing", 120)
            print(f"PipelineStalled fired {took:.0f} s after the first alert")
            (alert,) = [a for a in stalled() if a["state"] == "firing"]
            assert alert["labels"]["topic"] == s.topic("itsm.incident.commands")  # type: ignore[index]
            assert alert["annotations"]["runbook_url"] == "ops/runbooks/PipelineStalled.md"  # type: ignore[index]
            stack.start(["devitsm"])  # back: the sink delivers what waited
            took = wait(lambda: stalled() == [], "PipelineStalled resolved", 120)
            print(f"PipelineStalled resolved {took:.0f} s after the ITSM came back")
            # Healthy now: commands are delivered and committed while alerts flow, nothing stalls.
            time.sleep(4)
            assert stalled() == []
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
