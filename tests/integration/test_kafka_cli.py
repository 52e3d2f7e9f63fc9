"""`itsmctl kafka up | status | down` manage a broker of their own data directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ops.kafka.broker import free_port

pytestmark = pytest.mark.integration


def itsmctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", "kafka", *args], capture_output=True, text=True, timeout=180
    )


def test_up_status_down_and_restart_keep_the_data(tmp_path: Path) -> None:
    where = [
        "--data-dir",
        str(tmp_path / "k"),
        "--port",
        str(free_port()),
        "--controller-port",
        str(free_port()),
    ]
    assert itsmctl("status", *where).returncode == 1
    up = itsmctl("up", *where)
    assert up.returncode == 0 and "kafka 4.1.1 up" in up.stdout, up.stderr
    try:
        status = itsmctl("status", *where)
        assert status.returncode == 0 and "up: pid" in status.stdout
        as_json = json.loads(itsmctl("status", *where, "-o", "json").stdout)
        assert as_json["state"] == "up" and f"pid {as_json['pid']}," in status.stdout
        assert as_json["bootstrap"] in status.stdout
        again = itsmctl("up", *where)  # idempotent: the running broker is reported, not duplicated
        assert again.returncode == 0 and again.stdout.split("pid")[1] == up.stdout.split("pid")[1]
    finally:
        down = itsmctl("down", *where)
    assert down.returncode == 0 and "kafka stopped" in down.stdout
    down_status = itsmctl("status", *where, "-o", "json")
    assert down_status.returncode == 1 and json.loads(down_status.stdout)["state"] == "down"
    meta = (tmp_path / "k" / "logs" / "meta.properties").read_text()
    restarted = itsmctl("up", *where)  # the formatted store is reused, not formatted again
    try:
        assert restarted.returncode == 0
        assert (tmp_path / "k" / "logs" / "meta.properties").read_text() == meta
    finally:
        itsmctl("down", *where)


def test_a_cluster_id_that_starts_with_a_dash_formats(tmp_path: Path) -> None:
    import base64

    from ops.kafka import Broker

    cluster_id = base64.urlsafe_b64encode(b"\xf8" + bytes(range(15))).decode().rstrip("=")
    assert cluster_id.startswith("-")
    Broker(tmp_path / "k", port=free_port(), controller_port=free_port()).format(cluster_id)
    assert f"cluster.id={cluster_id}" in (tmp_path / "k" / "logs" / "meta.properties").read_text()
