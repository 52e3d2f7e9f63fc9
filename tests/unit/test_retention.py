"""itsmctl retention report: every topic listed with its retention and personal fields; personal
data kept in clear, or under a key older than the declared period, on a topic kept longer, is a
finding (crypto-shredding is how the period is kept); the log file rotates and keeps its days."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ops.retention import report
from streams.core.serde import SchemaStore
from streams.core.settings import Settings
from streams.core.topics import declared
from tests.cli import Itsmctl

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
STORE = SchemaStore()


def keys_file(tmp_path: Path, *kids: str) -> Path:
    path = tmp_path / "keys.toml"
    lines = [f'active = "{kids[-1]}"', "[keys]"]
    lines += [f'"{k}" = "{base64.b64encode(os.urandom(32)).decode()}"' for k in kids]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def test_every_topic_is_listed_and_personal_data_in_clear_on_long_topics_is_a_finding() -> None:
    found = report(Settings(), STORE, NOW)
    listed = {k.what.removeprefix("topic ") for k in found.entries if k.what.startswith("topic ")}
    assert listed == {s.name for s in declared()}
    suppressed = next(k for k in found.entries if k.what == "topic alerts.suppressed")
    assert suppressed.days == 90 and any(f.endswith("description") for f in suppressed.personal)
    flagged = sorted(f.split(" ", 1)[0] for f in found.findings)
    # Kept longer than 30 days with sensitive fields: the suppressed alerts, the audit log (actors)
    # the ITSM's incidents as last synced (compacted: assignees and resolvers) and the rule sets
    # (compacted: who applied each).
    assert flagged == ["alerts.suppressed", "audit.events", "itsm.incidents", "rules.sets"]
    assert all("in clear" in f for f in found.findings)


def test_keys_younger_than_the_period_satisfy_it_and_older_ones_are_named(tmp_path: Path) -> None:
    fresh = (NOW - timedelta(days=3)).strftime("%Y%m%dT%H%M%SZ")
    assert report(Settings(field_keys_file=str(keys_file(tmp_path, fresh))), STORE, NOW).findings == []
    old = (NOW - timedelta(days=45)).strftime("%Y%m%dT%H%M%SZ")
    found = report(Settings(field_keys_file=str(keys_file(tmp_path, old, fresh))), STORE, NOW)
    assert len(found.findings) == 4 and all(
        f"itsmctl fieldkeys retire {old} --shred" in f for f in found.findings
    )
    longer = report(
        Settings(field_keys_file=str(keys_file(tmp_path, old, fresh)), personal_data_days=60), STORE, NOW
    )
    assert longer.findings == []


def test_the_command_reports_and_exits_1_on_findings(itsmctl: Itsmctl, tmp_path: Path) -> None:
    ran = itsmctl("retention", "report", "-o", "json")
    assert ran.returncode == 1
    doc = json.loads(ran.stdout)
    assert doc["personal_data_days"] == 30 and len(doc["findings"]) == 4
    fresh = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    ok = itsmctl("retention", "report", ITSM_FIELD_KEYS_FILE=str(keys_file(tmp_path, fresh)))
    assert ok.returncode == 0 and "no personal data outlives" in ok.stdout


def test_the_log_file_rotates_at_midnight_and_keeps_its_days(tmp_path: Path) -> None:
    from streams.core.telemetry import RotatingStream

    log = tmp_path / "itsm.log"
    stream = RotatingStream(str(log), days=2)
    stream.write('{"event": "one"}\n')
    midnight = int(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
    for day in range(4):  # four midnights pass (each already past, so the next write rotates)
        stream._handler.rolloverAt = midnight - (3 - day) * 86400
        stream.write(f'{{"event": "day {day}"}}\n')
    stream.flush()
    rotated = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("itsm.log."))
    assert len(rotated) == 2  # the older ones were deleted
    assert log.read_text() == '{"event": "day 3"}\n'


def test_fieldkeys_expire_retires_keys_past_the_period_rotating_first(
    itsmctl: Itsmctl, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    old = (now - timedelta(days=40)).strftime("%Y%m%dT%H%M%SZ")
    older = (now - timedelta(days=70)).strftime("%Y%m%dT%H%M%SZ")
    path = keys_file(tmp_path, older, old)  # the active key (old) is past 30 days too
    ran = itsmctl("fieldkeys", "expire", "--offline", ITSM_FIELD_KEYS_FILE=str(path))
    assert ran.returncode == 0, ran.stderr
    assert f"key {old} is older than 30 days" in ran.stdout and f"key {older} retired" in ran.stdout
    listed = json.loads(itsmctl("fieldkeys", "list", "-o", "json", ITSM_FIELD_KEYS_FILE=str(path)).stdout)
    assert listed["keys"] == [listed["active"]] and listed["active"] not in (old, older)
    # Now nothing outlives the period, and a second run has nothing to do.
    assert report(Settings(field_keys_file=str(path)), STORE, now).findings == []
    again = itsmctl("fieldkeys", "expire", "--offline", "--older-than", "30", ITSM_FIELD_KEYS_FILE=str(path))
    assert again.returncode == 0 and "no key older than 30 days" in again.stdout
