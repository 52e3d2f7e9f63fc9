"""A deployment pipeline against the whole change side, as separate processes on the real broker:
denied during a freeze, a change requested and approved by a person in the development ITSM,
allowed, the deploy reported, and the change record enriched and closed successful."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ops.kafka import Broker
from ops.stack import Stack
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.examples import configuration_item
from tests.kafka_util import produce
from tests.stacks import pipeline_stack

pytestmark = pytest.mark.e2e
SERDE = AvroSerde()


@pytest.fixture
def stack(kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    with pipeline_stack(
        kafka_broker, kafka_settings, tmp_path / "stack", changes_rules={"park_recheck": 0.5}
    ) as s:
        yield s


def itsmctl(
    s: Stack, *argv: str, caller: str = "pipeline", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """What a pipeline step runs: the token comes from a file named in the environment."""
    env = {**s.env(), "ITSM_GATE_TOKEN_FILE": str(s.gate_token_file(caller))}
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *argv], env=env, capture_output=True, text=True, timeout=timeout
    )


def wait_for(predicate: Any, s: Stack, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        s.check_alive()
        assert time.monotonic() < deadline, "timed out; logs:\n" + "\n".join(
            f"--- {n}\n{s.log_tail(n)}" for n in s.procs
        )
        time.sleep(0.5)


REFERENCES = {"requested_by", "business_service", "cmdb_ci", "assignment_group", "caller_id"}


def changes(s: Stack, query: str) -> list[dict[str, str]]:
    with s.itsm() as itsm:
        # Every field as its value, a reference as the referenced record's name (display value).
        params = {
            "sysparm_query": query,
            "sysparm_display_value": "all",
            "sysparm_exclude_reference_link": "true",
        }
        resp = itsm.get("/api/now/table/change_request", params=params)
        resp.raise_for_status()
        return [
            {k: v["display_value"] if k in REFERENCES else v["value"] for k, v in row.items()}
            for row in resp.json()["result"]
        ]


def publish_ci(settings: Settings) -> None:
    """web-1 of service checkout, through the validated path (cmdb.ci.updates)."""
    produce(
        settings.kafka_bootstrap,
        settings.topic("cmdb.ci.updates"),
        [(b"web-1", SERDE.encode(configuration_item()), [])],
    )


def ics(*events: str) -> str:
    body = "".join(f"BEGIN:VEVENT\r\n{e}\r\nEND:VEVENT\r\n" for e in events)
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//e2e//EN\r\n{body}END:VCALENDAR\r\n"


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def test_a_pipeline_is_denied_in_a_freeze_allowed_with_an_approved_change_and_its_change_is_enriched(
    stack: Stack, kafka_settings: Settings, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    publish_ci(kafka_settings)
    calendar = tmp_path / "release-freeze.ics"
    calendar.write_text(
        ics(
            f"UID:peak-2026\r\nSUMMARY:Peak season freeze\r\nDTSTART:{stamp(now - timedelta(hours=1))}\r\n"
            f"DTEND:{stamp(now + timedelta(days=1))}\r\nX-ITSM-SCOPE:ENVIRONMENT:production"
        )
    )
    imported = itsmctl(stack, "freeze", "import", str(calendar))
    assert imported.returncode == 0 and "1 window(s) published" in imported.stdout, imported.stderr
    stack.start(["devitsm", "worker", "sink-change", "changes-sync", "gate"])

    # 1. In the freeze: denied (exit 1), with the freeze named; a bypass by the pipeline is refused.
    check = [
        "gate",
        "check",
        "--service",
        "checkout",
        "--env",
        "production",
        "--commit",
        "abc123",
        "--ci",
        "web-1",
    ]
    denied = itsmctl(stack, *check)
    assert denied.returncode == 1, denied.stdout + denied.stderr
    assert "freeze window freeze-release-freeze-peak-2026 (Peak season freeze)" in denied.stdout
    refused = itsmctl(stack, *check, "--bypass", "--justification", "hotfix")
    assert refused.returncode == 1 and "pipeline may not bypass the gate" in refused.stdout

    # 2. The on-call lead bypasses: allowed, and an emergency change is recorded after the fact.
    emergency = itsmctl(
        stack, *check, "--bypass", "--justification", "payment outage hotfix", caller="oncall"
    )
    assert emergency.returncode == 0 and "emergency bypass by oncall" in emergency.stdout, emergency.stderr
    (em,) = wait_for(lambda: changes(stack, "type=emergency"), stack)
    assert em["justification"] == "payment outage hotfix" and em["requested_by"] == "On-call lead"

    # 3. The freeze is lifted (the calendar re-imported without it): still denied, no change yet.
    calendar.write_text(ics())
    lifted = itsmctl(stack, "freeze", "import", str(calendar))
    assert lifted.returncode == 0 and "cancelled" in lifted.stdout, lifted.stdout + lifted.stderr
    no_change = wait_for(
        lambda: (r := itsmctl(stack, *check)).returncode == 1 and "freeze" not in r.stdout and r, stack
    )
    assert "no approved change covers checkout in production" in no_change.stdout

    # 4. Asynchronous mode: the pipeline asks for a change and waits; a person approves it in the ITSM.
    waiting = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ops.cli",
            *check,
            "--wait",
            "--timeout",
            "120",
            "--interval",
            "1",
            "--summary",
            "Deploy checkout abc123",
        ],
        env={**stack.env(), "ITSM_GATE_TOKEN_FILE": str(stack.gate_token_file())},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        (requested,) = wait_for(lambda: changes(stack, "correlation_idSTARTSWITHgate-"), stack)
        assert (requested["type"], requested["state"], requested["business_service"]) == (
            "normal",
            "-5",
            "checkout",
        )
        time.sleep(2)
        assert waiting.poll() is None  # still waiting on the person
        with stack.itsm() as itsm:
            itsm.patch(
                f"/api/now/table/change_request/{requested['sys_id']}",
                json={"state": "-2", "approval": "approved"},
            ).raise_for_status()
        out, err = waiting.communicate(timeout=90)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, out + err
    assert f"allow (change {requested['number']})" in out and "waiting for an approval" in out

    # 5. The deploy, reported by the pipeline, enriches and closes that change.
    report = [
        "deploy", "report", "--deployment-id", "dep-77", "--service", "checkout", "--env", "production",
        "--change", requested["number"], "--commit", "abc123", "--build", "421", "--ci", "web-1",
    ]  # fmt: skip
    started = itsmctl(stack, *report, "--phase", "STARTED", "--pipeline", "gh-actions/checkout")
    assert started.returncode == 0, started.stderr
    done = itsmctl(stack, *report, "--phase", "SUCCEEDED", "--duration-ms", "93000")
    assert done.returncode == 0, done.stderr
    (closed,) = wait_for(
        lambda: [c for c in changes(stack, f"number={requested['number']}") if c["state"] == "3"], stack
    )
    assert (
        closed["close_code"],
        closed["u_commit_ids"],
        closed["u_build_number"],
        closed["u_deploy_duration_ms"],
    ) == (
        "successful",
        "abc123",
        "421",
        "93000",
    )
    assert (
        "Deployment dep-77 of checkout to production by gh-actions/checkout started" in closed["work_notes"]
    )

    # 6. The analytics see it.
    report = itsmctl(stack, "changes", "report", "--period", "month")
    assert report.returncode == 0, report.stderr
    (row,) = [line for line in report.stdout.splitlines() if line.startswith("checkout")]
    assert row.split()[2:6] == ["1", "1", "0", "100%"] and "93.0s" in row


def readme_snippet() -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = text.index("A CI/CD pipeline step:\n\n```bash\n") + len("A CI/CD pipeline step:\n\n```bash\n")
    return text[start : text.index("```", start)]


def test_the_readme_pipeline_snippet_runs_as_written(
    stack: Stack, kafka_settings: Settings, tmp_path: Path
) -> None:
    publish_ci(kafka_settings)
    stack.start(["devitsm", "worker", "sink-change", "changes-sync", "gate"])
    job = tmp_path / "job"
    job.mkdir()
    (job / "deploy.sh").write_text("#!/bin/sh\nsleep 1\necho deployed\n")
    (job / "deploy.sh").chmod(0o755)
    env = {
        **stack.env(),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "GIT_SHA": "f00dfeed",
        "RUN_ID": "run-1001",
        "BUILD": "1001",
        "PIPELINE_URL": "https://ci.example/checkout/1001",
    }
    script = (
        "set -euo pipefail\n"
        + readme_snippet().replace("--timeout 3600", "--timeout 120")
        + "\necho PIPELINE-DONE\n"
    )
    run = subprocess.Popen(
        ["bash", "-c", script], cwd=job, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        (requested,) = wait_for(lambda: changes(stack, "correlation_idSTARTSWITHgate-"), stack)
        with stack.itsm() as itsm:  # the change manager approves
            itsm.patch(
                f"/api/now/table/change_request/{requested['sys_id']}",
                json={"state": "-2", "approval": "approved"},
            ).raise_for_status()
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0 and "PIPELINE-DONE" in out and "deployed" in out, out + err
    (closed,) = wait_for(
        lambda: [c for c in changes(stack, f"number={requested['number']}") if c["state"] == "3"], stack
    )
    assert (closed["close_code"], closed["u_commit_ids"], closed["u_build_number"]) == (
        "successful",
        "f00dfeed",
        "1001",
    )
    assert int(closed["u_deploy_duration_ms"]) >= 1000  # from --started-at, around ./deploy.sh
