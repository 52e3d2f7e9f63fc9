"""The alert rules: promtool accepts them, promtool's unit tests of every alert pass, and every alert
has a runbook that says what it means, how to confirm it and what to do."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus"
SECTIONS = ("## What it means", "## How to confirm", "## What to do")


def promtool() -> str:
    exe = shutil.which("promtool")
    assert exe, "promtool not found: ops/test.sh installs Debian's prometheus package"
    return exe


def alerts() -> dict[str, set[str]]:
    """Alert name -> the runbook_urls its rules give."""
    out: dict[str, set[str]] = {}
    for path in RULES.glob("*.rules.yml"):
        name = None
        for line in path.read_text().splitlines():
            if m := re.match(r"\s*- alert: (\w+)", line):
                name = m.group(1)
                out.setdefault(name, set())
            elif (m := re.match(r"\s*runbook_url: (\S+)", line)) and name:
                out[name].add(m.group(1))
    return out


def test_promtool_accepts_the_rule_files() -> None:
    files = sorted(str(p) for p in RULES.glob("*.rules.yml"))
    assert len(files) == 2
    ran = subprocess.run([promtool(), "check", "rules", *files], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    tests = sorted(RULES.glob("tests/*.yml"))
    ran = subprocess.run(
        [promtool(), "test", "rules", *(p.name for p in tests)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULES / "tests",
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.count("SUCCESS") == len(tests)
    # Every alert is expected to fire in some test case (an exp_labels block after its name).
    text = "\n".join(p.read_text() for p in tests)
    for name in alerts():
        assert re.search(rf"alertname: {name}\n\s+exp_alerts:\n\s+- exp_labels", text), f"{name} never fires"


def test_every_alert_has_a_runbook_with_its_three_sections() -> None:
    found = alerts()
    assert {"PipelineStalled", "DeadLettersGrowing", "SinkErrorRatioHigh", "AuthenticationFailures"} <= set(
        found
    )
    assert {"ViewStopped", "SLOBurnFast", "SLOBurnSlow"} <= set(found)
    for name, urls in found.items():
        assert urls == {f"ops/runbooks/{name}.md"}, (name, urls)
        text = (ROOT / "ops" / "runbooks" / f"{name}.md").read_text()
        assert text.startswith(f"# {name}\n")
        for section in SECTIONS:
            assert section in text, (name, section)
