"""itsmctl freeze import against the real broker: from a calendar file and from the development
ITSM's blackout schedules (ServiceNow Table API), re-imports updating and cancelling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from connectors.devitsm.server import create_devitsm
from connectors.devitsm.store import Store
from streams.core.models import MaintenanceWindow, WindowKind
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.kafka_util import consume, kafka_env
from tests.servers import serve

pytestmark = pytest.mark.integration
SERDE = AvroSerde()
PASSWORD = "freeze-test-pw"


@pytest.fixture
def itsm_url() -> Iterator[str]:
    store = Store(":memory:")
    with serve(create_devitsm(store, "pipeline", PASSWORD)) as url:
        yield url
    store.close()


def itsmctl(settings: Settings, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_")}
    base.update(kafka_env(settings.kafka_bootstrap))
    base.update(ITSM_TOPIC_PREFIX=settings.topic_prefix, **env)
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *argv], env=base, capture_output=True, text=True, timeout=120
    )


def windows(settings: Settings, n: int) -> list[MaintenanceWindow]:
    msgs = consume(settings.kafka_bootstrap, settings.topic("maintenance.windows"), n, timeout=20)
    return [SERDE.decode(m.value(), MaintenanceWindow) for m in msgs]


def test_a_calendar_file_import_and_reimport(kafka_settings: Settings, tmp_path: Path) -> None:
    cal = tmp_path / "retail.ics"
    start = datetime.now(UTC) + timedelta(days=1)  # a window that has ended is not cancelled again
    event = (
        "BEGIN:VEVENT\nUID:{uid}\nSUMMARY:{what}\n"
        f"DTSTART:{start:%Y%m%dT000000Z}\nDURATION:P3D\nEND:VEVENT\n"
    )
    cal.write_text(
        f"BEGIN:VCALENDAR\n{event.format(uid='bf', what='Black Friday')}"
        f"{event.format(uid='cm', what='Cyber Monday')}END:VCALENDAR\n"
    )
    first = itsmctl(
        kafka_settings, "freeze", "import", str(cal), "--scope", "SERVICE", "--target", "checkout"
    )
    assert first.returncode == 0 and "2 window(s) published" in first.stdout, first.stderr
    dry = itsmctl(
        kafka_settings,
        "freeze",
        "import",
        str(cal),
        "--scope",
        "SERVICE",
        "--target",
        "checkout",
        "--dry-run",
    )
    assert "dry run: 0 window(s) would be published" in dry.stdout, dry.stdout + dry.stderr
    scoped = ("--scope", "SERVICE", "--target", "checkout")
    as_json = itsmctl(kafka_settings, "freeze", "import", str(cal), *scoped, "--dry-run", "-o", "json")
    plan = json.loads(as_json.stdout)
    assert (plan["dry_run"], plan["published"], plan["unchanged"]) == (True, 0, 2)
    assert [(s["action"], s["window_id"], s["scope"], s["target"]) for s in plan["steps"]] == [
        ("unchanged", "freeze-retail-bf", "SERVICE", "checkout"),
        ("unchanged", "freeze-retail-cm", "SERVICE", "checkout"),
    ]
    assert all(f"unchanged  {s['window_id']}" in dry.stdout for s in plan["steps"])
    cal.write_text(f"BEGIN:VCALENDAR\n{event.format(uid='bf', what='Black Friday')}END:VCALENDAR\n")
    second = itsmctl(
        kafka_settings, "freeze", "import", str(cal), "--scope", "SERVICE", "--target", "checkout"
    )
    assert second.returncode == 0 and "1 window(s) published, 1 unchanged" in second.stdout, second.stdout
    got = windows(kafka_settings, 3)
    assert [(w.window_id, w.cancelled) for w in got] == [
        ("freeze-retail-bf", False),
        ("freeze-retail-cm", False),
        ("freeze-retail-cm", True),
    ]
    assert all(w.kind is WindowKind.FREEZE and w.target == "checkout" for w in got)


def test_servicenow_blackout_schedules_are_imported(
    kafka_settings: Settings, itsm_url: str, tmp_path: Path
) -> None:
    auth = ("pipeline", PASSWORD)
    sched = httpx.post(
        f"{itsm_url}/api/now/table/cmn_schedule_blackout",
        auth=auth,
        json={"name": "Year-end freeze", "time_zone": "Europe/Berlin"},
    ).json()["result"]
    for name, start, end in (
        ("Holidays", "20261224T000000", "20270102T000000"),
        ("Inventory", "20270115T000000", "20270116T000000"),
    ):
        httpx.post(
            f"{itsm_url}/api/now/table/cmn_schedule_span",
            auth=auth,
            json={"schedule": sched["sys_id"], "name": name, "start_date_time": start, "end_date_time": end},
        ).raise_for_status()
    pw = tmp_path / "itsm.password"
    pw.touch(mode=0o600)
    pw.write_text(PASSWORD)
    try:
        result = itsmctl(
            kafka_settings,
            "freeze",
            "import",
            "--from",
            "servicenow",
            "--scope",
            "ENVIRONMENT",
            "--target",
            "production",
            ITSM_SERVICENOW_URL=itsm_url,
            ITSM_SERVICENOW_PASSWORD_FILE=str(pw),
        )
    finally:
        pw.unlink()
    assert (
        result.returncode == 0 and "freeze import from servicenow-blackouts: 2 window(s)" in result.stdout
    ), result.stdout + result.stderr
    got = windows(kafka_settings, 2)
    assert sorted(w.reason for w in got) == ["Year-end freeze - Holidays", "Year-end freeze - Inventory"]
    assert {w.target for w in got} == {"production"} and all(
        w.created_by == "calendar:servicenow-blackouts" for w in got
    )
