"""The README's main job, non-interactive: every bundled sample alert ends up accounted for in the ITSM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_once_accounts_for_every_sample_alert_and_gate_step_and_stops_cleanly(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli", "demo", "--once", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert (
        "Accounted for: 6/6 alerts (5 open, 1 resolved); "
        "1 webhook(s) rejected at the gateway; 0 dead letter(s)." in out
    )
    assert (
        "04-malformed.json                400  "
        "invalid alertmanager payload: alerts.0.startsAt: Field required" in out
    )
    assert (
        "stopped: incidents-sync exit 0, gate exit 0, changes-sync exit 0, sink-change exit 0, "
        "gateway exit 0, sink exit 0, worker exit 0, devitsm exit 0" in out
    )
    # The change part: denied in the freeze, then allowed with the change it asked for and got.
    assert "during the imported freeze: deny" in out and "freeze window freeze-demo-calendar-demo-peak" in out
    assert "with the approved change: allowed" in out
    assert "closed successful, commits 4f2a9c1, build 421, 93s" in out
    assert "Change gate: every step as expected." in out
    # The summary table is read back from the ITSM; a resolved alert shows a Resolved incident.
    assert "HighCPU          web-2:9100       resolved" in out and "Resolved" in out
    # Nothing of the demo keeps running: its broker's pid file is gone.
    assert not (tmp_path / "demo" / "kafka" / "broker.pid").exists()
