"""The status service over a running pipeline: its JSON, its lag metrics in kafka_exporter's names,
every process's /readyz, and the live page in headless Chromium (Debian's chromium and
chromium-driver), whose figures change while a stream flows, without a reload."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ops.kafka import Broker
from streams.core.settings import Settings
from tests.dashboards import exported_names, queried_names, recorded_names
from tests.kafka_util import produce
from tests.stacks import pipeline_stack

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / ".artifacts"))


def webhook(batch: int, size: int) -> dict[str, object]:
    now = datetime.now(UTC).isoformat()
    alerts = [
        {
            "status": "firing",
            "labels": {
                "alertname": "StatusPage",
                "instance": f"host-{batch}-{i}:9100",
                "severity": "warning",
            },
            "annotations": {"summary": f"status page test {batch}/{i}"},
            "startsAt": now,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.test/graph",
        }
        for i in range(size)
    ]
    return {"receiver": "itsm-pipeline", "status": "firing", "alerts": alerts, "version": "4"}


def chrome() -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    assert binary and driver, "chromium and chromium-driver not found: ops/test.sh installs Debian's packages"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1400",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def cell(browser: object, table: str, row_name: str, column: int) -> str:
    """One cell's text, read inside the page in one script call: the page re-renders its tables on
    every update, so element handles found in one WebDriver call may be stale by the next."""
    script = """
        const [table, name, column] = arguments;
        for (const row of document.querySelectorAll('#' + table + ' tbody tr')) {
            const cells = row.querySelectorAll('td');
            if (cells.length > column && cells[0].textContent.trim() === name) {
                return cells[column].textContent.trim();
            }
        }
        return '';
    """
    return str(browser.execute_script(script, table, row_name, column))  # type: ignore[attr-defined]


def test_status_page_shows_live_figures_while_a_stream_flows(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    s = kafka_settings
    with pipeline_stack(kafka_broker, s, tmp_path / "stack") as stack:
        stack.start(["devitsm", "worker", "sink", "gateway", "status"])
        # Every process answers /readyz once its views caught up and its broker answers.
        for url in (
            f"http://127.0.0.1:{stack.worker_metrics_port}",
            f"http://127.0.0.1:{stack.sink_metrics_port}",
            stack.gateway_url,
            stack.status_url,
        ):
            stack.wait_http(url, url + "/readyz", timeout=90)
            assert httpx.get(url + "/healthz").status_code == 200

        browser = chrome()
        try:
            browser.get(stack.status_url + "/")  # type: ignore[attr-defined]
            browser.execute_script("window.__sameLoad = 'yes';")  # type: ignore[attr-defined]

            def wait(predicate, what: str, timeout: float = 90.0) -> None:  # type: ignore[no-untyped-def]
                deadline = time.monotonic() + timeout
                while not predicate():
                    stack.check_alive()
                    assert time.monotonic() < deadline, (
                        f"page never showed {what}:\n"
                        + browser.find_element(  # type: ignore[attr-defined]
                            "tag name", "body"
                        ).text
                    )
                    time.sleep(0.5)

            wait(
                lambda: all(
                    cell(browser, "integrations", n, 2) == "up"
                    for n in ("gateway", "worker", "sink-servicenow")
                ),
                "every integration up",
            )
            before = int(cell(browser, "integrations", "gateway", 4) or 0)
            sink_before = int(cell(browser, "integrations", "sink-servicenow", 4) or 0)

            # A stream of webhooks while the page is open, and one poison record.
            sent = []

            def stream() -> None:
                for batch in range(10):
                    r = httpx.post(
                        f"{stack.gateway_url}/v1/alerts/alertmanager", json=webhook(batch, 5), timeout=30
                    )
                    sent.append(r.status_code)
                    time.sleep(0.3)

            flow = threading.Thread(target=stream)
            flow.start()
            produce(s.kafka_bootstrap, s.topic("alerts.raw"), [(b"poison", b"\x00not avro", [])])
            seen = set()

            def moving() -> bool:
                seen.add(cell(browser, "integrations", "gateway", 4))
                return len(seen) >= 3  # the figure changed at least twice while the page stayed open

            wait(moving, "a changing gateway figure")
            wait(
                lambda: float(cell(browser, "integrations", "gateway", 3) or 0) > 0,
                "a throughput above zero while the stream flows",
            )
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / "status-page-streaming.png"))  # type: ignore[attr-defined]
            # Nothing the status service saw before the processes listened stays as their error.
            assert "scrape" not in cell(browser, "integrations", "gateway", 5)
            flow.join()
            assert sent == [202] * 10
            wait(
                lambda: int(cell(browser, "integrations", "gateway", 4) or 0) == before + 50, "all 50 alerts"
            )
            wait(
                lambda: int(cell(browser, "integrations", "sink-servicenow", 4) or 0) >= sink_before + 50,
                "50 commands delivered",
            )
            wait(lambda: "alerts.raw.dlq" in browser.find_element("id", "letters").text, "the dead letter")  # type: ignore[attr-defined]
            assert browser.execute_script("return window.__sameLoad;") == "yes"  # type: ignore[attr-defined]
            lags = browser.find_element("id", "groups").text  # type: ignore[attr-defined]
            assert s.app_id in lags and f"{s.app_id}-sink-servicenow" in lags
            shot = ARTIFACTS / "status-page.png"
            browser.save_screenshot(str(shot))  # type: ignore[attr-defined]
            assert shot.stat().st_size > 10_000
        finally:
            browser.quit()  # type: ignore[attr-defined]

        # The same figures on the command line, from the stack's own settings (ITSM_STATUS_SCRAPE).
        ran = subprocess.run(
            [sys.executable, "-m", "ops.cli", "status"],
            env=stack.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "route alertmanager" in ran.stdout and f"{s.app_id}-sink-servicenow" in ran.stdout
        ran = subprocess.run(
            [sys.executable, "-m", "ops.cli", "status", "-o", "json"],
            env=stack.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert {i["name"]: i["health"] for i in json.loads(ran.stdout)["integrations"]} == {
            "gateway": "up",
            "worker": "up",
            "sink-servicenow": "up",
        }

        snap = httpx.get(stack.status_url + "/api/status", timeout=10).json()
        slos = {o["name"]: o for o in snap["slos"]}
        assert slos["command-delivery"]["events"] >= 50 and slos["command-delivery"]["compliance"] == 1.0
        assert slos["incident-open-latency"]["events"] == 50  # 50 new incidents, each measured once
        assert slos["alert-intake"]["events"] == 51 and slos["alert-intake"]["good"] == 50  # the poison one
        letters = [x for x in snap["recent_dead_letters"] if x["topic"] == s.topic("alerts.raw.dlq")]
        assert letters and letters[0]["error_class"] == "schema" and letters[0]["reason"]

        metrics = httpx.get(stack.status_url + "/metrics", timeout=10).text
        assert f'kafka_consumergroup_lag{{consumergroup="{s.app_id}",partition="' in metrics
        assert f'kafka_consumergroup_current_offset{{consumergroup="{s.app_id}-sink-servicenow"' in metrics
        assert f'itsm_pipeline_dlq_records{{topic="{s.topic("alerts.raw.dlq")}"}} 1.0' in metrics
        assert 'itsm_pipeline_integration_up{integration="worker",kind="worker"} 1.0' in metrics

        # Every metric the dashboards query is exported by a process (or recorded by a rule file).
        exported = recorded_names()
        for url in (
            stack.status_url,
            stack.gateway_url,
            f"http://127.0.0.1:{stack.worker_metrics_port}",
            f"http://127.0.0.1:{stack.sink_metrics_port}",
        ):
            exported |= exported_names(httpx.get(url + "/metrics", timeout=10).text)
        assert queried_names() - exported == set()

        # The sink's hops of the way were measured, end to end included.
        sink_metrics = httpx.get(f"http://127.0.0.1:{stack.sink_metrics_port}/metrics").text
        whole = (
            'itsm_pipeline_latency_seconds_count{action="OPEN",hop="ingest_to_itsm",integration="servicenow"}'
        )
        assert f"{whole} 50.0" in sink_metrics

    # Every process logged one JSON object per line (libraries and librdkafka included), never a
    # terminal escape code.
    logs = sorted((tmp_path / "stack" / "logs").glob("*.log"))
    assert {p.stem for p in logs} >= {"worker", "sink", "gateway", "status", "devitsm"}
    for path in logs:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert "\x1b" not in line, (path.name, number, line)
            assert isinstance(json.loads(line), dict), (path.name, number, line)
    # The worker's own lines are there (Faust's stdout redirect would have swallowed them).
    assert '"event": "dead_letter"' in (tmp_path / "stack" / "logs" / "worker.log").read_text()


def test_with_tokens_the_status_json_needs_status_read_and_the_page_asks_for_a_token(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    """ITSM_TOKENS_FILE set: /api/status answers 401 without a token and 403 without the scope; the
    page (open, it holds no data) shows a token form, and with a status:read token the figures."""
    from connectors import auth

    tokens = tmp_path / "tokens.toml"
    viewer, _ = auth.issue(tokens, "sre-viewer", ["status:read"])
    other, _ = auth.issue(tokens, "prometheus", ["alerts:write"])
    extra = {"ITSM_TOKENS_FILE": str(tokens), "ITSM_STATUS_SCRAPE": ""}
    with pipeline_stack(kafka_broker, kafka_settings, tmp_path / "stack", extra_env=extra) as stack:
        stack.start(["status"])
        api = stack.status_url + "/api/status"
        assert httpx.get(api).status_code == 401
        assert httpx.get(api, headers={"Authorization": f"Bearer {other}"}).status_code == 403
        assert httpx.get(api, headers={"Authorization": f"Bearer {viewer}"}).json()["at"]
        assert httpx.get(stack.status_url + "/metrics").status_code == 200  # Prometheus scrapes it
        browser = chrome()
        try:
            browser.get(stack.status_url + "/")  # type: ignore[attr-defined]
            deadline = time.monotonic() + 30
            form = browser.find_element("id", "login")  # type: ignore[attr-defined]
            while not form.is_displayed():
                assert time.monotonic() < deadline, "the page never asked for a token"
                time.sleep(0.2)
            assert browser.find_element("id", "updated").text == "never"  # type: ignore[attr-defined]
            browser.find_element("id", "token").send_keys(viewer)  # type: ignore[attr-defined]
            form.submit()
            while browser.find_element("id", "updated").text == "never":  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, "the page never showed figures after the token"
                time.sleep(0.2)
            assert not form.is_displayed()
        finally:
            browser.quit()  # type: ignore[attr-defined]
    log = (tmp_path / "stack" / "logs" / "status.log").read_text()
    assert '"reason": "missing_scope"' in log and '"principal": "prometheus"' in log
    assert viewer not in log and other not in log  # a principal's name, never its token
