"""docker-compose.yml stays valid (Debian's docker-compose checks it) and itsmctl explains itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ops.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def compose(*args: str, password: str | None = "pw") -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    # Never skipped: ops/test.sh installs Debian's docker-compose; without it this must fail loudly.
    assert exe, "docker-compose not found: run the suite through `bash ops/test.sh`, which installs it"
    env = {k: v for k, v in os.environ.items() if k != "ITSM_DEVITSM_PASSWORD"}
    if password is not None:
        env["ITSM_DEVITSM_PASSWORD"] = password
    return subprocess.run(
        [exe, "-f", str(ROOT / "docker-compose.yml"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_file_is_valid_and_has_every_service() -> None:
    assert compose("config", "-q").returncode == 0
    services = compose("config", "--services")
    assert set(services.stdout.split()) == {
        "kafka",
        "topics",
        "devitsm",
        "worker",
        "sink",
        "gateway",
        "sink-change",
        "changes-sync",
        "gate",  # in the "gate" profile: it needs a callers file first
        "status",
        "prometheus",  # in the "observability" profile, with grafana
        "grafana",
    }


def test_the_observability_profile_mounts_files_that_exist_and_publishes_on_loopback() -> None:
    import re

    text = (ROOT / "docker-compose.yml").read_text()
    assert compose("--profile", "observability", "config", "-q").returncode == 0
    for source in re.findall(r"- \./(ops/[^:]+):", text):
        assert (ROOT / source).exists(), source
    for port in ("9470", "9090", "3000"):
        assert f'- "127.0.0.1:{port}:{port}"' in text
    # The status service watches the processes compose runs, on the ports they serve.
    assert "worker=http://worker:9464" in text and "sink-servicenow=http://sink:9465" in text


def test_compose_uses_the_official_kafka_image_and_publishes_only_on_loopback() -> None:
    assert "image: apache/kafka:4." in compose("config").stdout
    published = [
        line
        for line in (ROOT / "docker-compose.yml").read_text().splitlines()
        if ":80" in line and '"' in line
    ]
    assert published and all(line.strip().startswith('- "127.0.0.1:') for line in published)


def test_compose_refuses_to_start_without_an_itsm_password() -> None:
    result = compose("config", "-q", password=None)
    assert result.returncode != 0 and "set ITSM_DEVITSM_PASSWORD" in result.stderr


def test_compose_kafka_version_matches_the_pinned_broker() -> None:
    from ops.kafka import KAFKA_VERSION

    assert f"apache/kafka:{KAFKA_VERSION}" in (ROOT / "docker-compose.yml").read_text()


@pytest.mark.parametrize("command", ["kafka", "topics", "gateway", "worker", "sink", "devitsm", "demo"])
def test_every_command_has_help(command: str) -> None:
    text = build_parser().format_help()
    assert command in text
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli", command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "usage: itsmctl " + command in result.stdout


def test_an_invalid_configuration_is_reported_without_a_traceback() -> None:
    env = {**os.environ, "ITSM_GATEWAY_PORT": "eighty"}
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli", "topics", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "invalid configuration" in result.stderr and "gateway_port" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("target", "cls", "env"),
    [
        ("servicenow", "ServiceNowSink", {}),
        ("jira", "JiraSink", {"jira_url": "https://x.invalid", "jira_email": "a@b", "jira_api_token": "t"}),
        ("rt", "RTSink", {"rt_url": "http://127.0.0.1:1", "rt_password": "p"}),
        ("webhook", "WebhookSink", {"webhook_url": "https://x.invalid/h", "webhook_secret": "s"}),
    ],
)
def test_every_sink_target_builds_its_own_sink(target: str, cls: str, env: dict[str, str]) -> None:
    from connectors.registry import SINKS, build_sink
    from connectors.sinks.http import RetryPolicy
    from ops.cli import build_parser
    from streams.core.settings import Settings

    assert target in SINKS
    assert target in build_parser().parse_args(["sink", target]).target
    sink = build_sink(target, Settings(**env), RetryPolicy(), None)
    assert type(sink).__name__ == cls


@pytest.mark.parametrize("target", ["jira", "rt", "webhook"])
def test_a_sink_without_its_configuration_says_what_is_missing(target: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli", "sink", target],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("ITSM_")},
    )
    assert result.returncode == 2 and "itsmctl sink:" in result.stderr
    assert "required" in result.stderr or "is not set" in result.stderr


def test_a_stack_gives_each_process_its_own_port_even_when_the_kernel_repeats_one(tmp_path: Path) -> None:
    from ops.stack import PORT_FIELDS, Stack

    # CI saw free_port() hand the worker and the sink one metrics port; a stack never keeps that.
    stack = Stack(tmp_path, "127.0.0.1:9092", worker_metrics_port=50001, sink_metrics_port=50001)
    ports = [getattr(stack, name) for name in PORT_FIELDS]
    assert len(set(ports)) == len(ports) and stack.worker_metrics_port == 50001
