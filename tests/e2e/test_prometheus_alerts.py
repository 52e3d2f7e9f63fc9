"""A real Prometheus (Debian's) points `alerting.alertmanagers` at the gateway as at an Alertmanager:
an alerting rule over its own `up` fires, Prometheus posts it to the gateway's `/api/v2/alerts`,
and the incident in the ITSM carries the rule's summary and runbook_url."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from ops.kafka import Broker
from ops.kafka.broker import free_port
from streams.core.settings import Settings
from tests.prometheus import start_prometheus
from tests.stacks import pipeline_stack

pytestmark = pytest.mark.e2e
RUNBOOK = "https://runbooks.example/PrometheusSelfScrape"
RULES = """groups:
  - name: e2e
    rules:
      - alert: PrometheusSelfScrape
        expr: up{job="self"} == 1
        labels:
          severity: critical
        annotations:
          summary: "Prometheus scrapes itself"
          description: "The self-scrape of {{ $labels.instance }} answers."
          runbook_url: %s
"""


def test_prometheus_sends_to_the_gateway_as_to_an_alertmanager(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    with pipeline_stack(kafka_broker, kafka_settings, tmp_path / "stack") as stack:
        stack.start(["devitsm", "worker", "sink", "gateway"])
        port = free_port()
        (tmp_path / "rules.yml").write_text(RULES % RUNBOOK)
        prom, _url = start_prometheus(
            tmp_path,
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {tmp_path / 'rules.yml'}\n"
            "alerting:\n  alertmanagers:\n    - api_version: v2\n      static_configs:\n"
            f"        - targets: ['{stack.gateway_url.split('//', 1)[1]}']\n"
            "scrape_configs:\n  - job_name: self\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{port}']\n",
            port,
        )
        try:

            def incidents() -> list[dict[str, str]]:
                with stack.itsm() as itsm:
                    rows = itsm.get(
                        "/api/now/table/incident",
                        params={"sysparm_fields": "short_description,description,urgency,correlation_id"},
                    )
                    return list(rows.json()["result"])

            deadline = time.monotonic() + 90
            while not incidents():
                stack.check_alive()
                assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
                assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[
                    -3000:
                ] + stack.log_tail("gateway")
                time.sleep(0.5)
            (incident,) = incidents()
            assert "Prometheus scrapes itself" in incident["short_description"]
            assert f"Runbook: {RUNBOOK}" in incident["description"]
            assert f"The self-scrape of 127.0.0.1:{port} answers." in incident["description"]
            assert incident["urgency"] == "1"  # severity critical, through the severity rules
            sent = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            # Prometheus counted what it sent to the gateway, and no error.
            assert "prometheus_notifications_sent_total" in sent
            errors = [
                line
                for line in sent.splitlines()
                if line.startswith("prometheus_notifications_errors_total") and not line.endswith(" 0")
            ]
            assert errors == [], errors
        finally:
            prom.terminate()
            prom.wait(20)
