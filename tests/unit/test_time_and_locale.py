"""Time and locale: every source's offset kept next to the UTC instant (table-driven over the
mappings), and the text each ITSM shows renders times in that target's zone and locale."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.sources.alertmanager import api, mapping
from connectors.sources.canonical.mapping import to_alerts as canonical
from connectors.sources.pagerduty.mapping import to_alerts as pagerduty
from connectors.sources.prometheus import to_alert as polled
from ops.cmdb_import import rows
from streams.core import models as m
from streams.core.rules import Display, TemplateRules, load_rules
from streams.core.timeutil import localized, offset_text
from tests.alerting import Harness, am

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def webhook(starts: str) -> dict[str, Any]:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "r",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://am",
        "alerts": [{"status": "firing", "labels": {"alertname": "A"}, "annotations": {}, "startsAt": starts}],
    }


@pytest.mark.parametrize(
    ("source", "alert", "zone", "utc"),
    [
        (
            "alertmanager webhook",
            lambda: mapping.to_alerts(webhook("2026-12-02T13:00:00+01:00"), NOW)[0],
            "+01:00",
            "12:00",
        ),
        (
            "alertmanager api",
            lambda: api.to_alerts(
                [{"labels": {"alertname": "A"}, "startsAt": "2026-12-02T07:00:00-05:00"}], NOW
            )[0],
            "-05:00",
            "12:00",
        ),
        (
            "alertmanager, UTC",
            lambda: mapping.to_alerts(webhook("2026-12-02T12:00:00Z"), NOW)[0],
            "+00:00",
            "12:00",
        ),
        (
            "pagerduty",
            lambda: pagerduty(
                {
                    "routing_key": "k",
                    "event_action": "trigger",
                    "payload": {
                        "summary": "s",
                        "source": "h",
                        "severity": "error",
                        "timestamp": "2026-12-02T17:30:00+05:30",
                    },
                },
                NOW,
            )[0],
            "+05:30",
            "12:00",
        ),
        (
            "canonical",
            lambda: canonical(
                {
                    "fingerprint": "f",
                    "status": "FIRING",
                    "name": "A",
                    "starts_at": "2026-12-02T14:00:00+02:00",
                },
                NOW,
            )[0],
            "+02:00",
            "12:00",
        ),
        (
            "canonical naming its zone",
            lambda: canonical(
                {
                    "fingerprint": "f",
                    "status": "FIRING",
                    "name": "A",
                    "starts_at": "2026-12-02T13:00:00+01:00",
                    "source_zone": "Europe/Berlin",
                },
                NOW,
            )[0],
            "Europe/Berlin",
            "12:00",
        ),
        (
            "prometheus poll",
            lambda: polled(
                {"labels": {"alertname": "A"}, "state": "firing", "activeAt": "2026-12-02T21:00:00+09:00"},
                "http://p",
                NOW,
            ),
            "+09:00",
            "12:00",
        ),
    ],
)
def test_every_source_keeps_its_offset_next_to_the_utc_instant(
    source: str, alert: Any, zone: str, utc: str
) -> None:
    a: m.Alert = alert()
    assert a.source_zone == zone, source
    assert a.starts_at.tzinfo == UTC and a.starts_at.strftime("%H:%M") == utc
    # The zone survives the Avro round trip.
    from streams.core.serde import AvroSerde

    serde = AvroSerde()
    assert serde.decode(serde.encode(a), m.Alert).source_zone == zone


def test_a_ci_import_keeps_the_offset_of_its_updated_at(tmp_path: Path) -> None:
    export = tmp_path / "cis.csv"
    export.write_text(
        "ci_id,name,ci_class,owner_group,updated_at\nweb-1,web-1,server,team,2026-12-02T09:00:00-03:00\n"
    )
    (row,) = rows(export, "discovery", NOW)
    assert row.ci is not None and row.ci.source_zone == "-03:00" and row.ci.updated_at.hour == 12


@pytest.mark.parametrize(
    ("zone", "locale", "text"),
    [
        ("UTC", "en_US", "December 2, 2026, 12:00:00 PM UTC"),
        ("Europe/Berlin", "de_DE", "2. Dezember 2026, 13:00:00 MEZ"),
        ("America/New_York", "en_US", "December 2, 2026, 7:00:00 AM EST"),
        ("Asia/Tokyo", "ja_JP", "2026年12月2日 21:00:00 JST"),
    ],
)
def test_times_render_in_a_zone_and_locale(zone: str, locale: str, text: str) -> None:
    assert (
        localized(NOW, zone, locale).replace("\u202f", " ").replace(" um ", ", ").replace(" at ", ", ")
        == text
    )


def test_offsets_are_written_as_rfc_3339_offsets() -> None:
    from datetime import timedelta, timezone

    assert offset_text(datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-3, minutes=-30)))) == "-03:30"
    assert offset_text(datetime(2026, 1, 1)) is None


@pytest.mark.parametrize(("field", "value"), [("time_zone", "Mars/Olympus"), ("locale", "xx_NOPE")])
def test_a_bad_zone_or_locale_is_refused_when_the_rules_load(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=value.split("_")[0]):
        Display.model_validate({field: value})
    with pytest.raises(ValueError, match="unknown targets"):
        TemplateRules.model_validate({"version": 1, "display": {"remedy": {}}})


def test_each_itsm_shows_times_in_its_zone_and_locale_default_text_and_templates() -> None:
    """servicenow in Berlin, German; jira in New York with a template; rt without display: UTC."""
    rules = load_rules()
    templates = TemplateRules.model_validate(
        {
            "version": 2,
            "jira": {
                "description": "Seit {{ alert.starts_at_local }} (Quelle {{ alert.source_zone }}); "
                "jetzt {{ local('2026-12-02T18:00:00+00:00') }}"
            },
            "display": {
                "servicenow": {"time_zone": "Europe/Berlin", "locale": "de_DE"},
                "jira": {"time_zone": "America/New_York"},
            },
        }
    )
    h = Harness(rules.model_copy(update={"templates": templates}))
    alert = am("f1", starts_at=NOW).model_copy(update={"source_zone": "+01:00"})
    (cmd,) = h.send(alert).commands
    # CLDR's long format joins date and time with "," or " at "/" um " depending on its version.
    sn = cmd.target_fields["servicenow"]["description"].replace(" um ", ", ")
    assert "Started: 2. Dezember 2026, 13:00:00 MEZ (source time zone +01:00)" in sn
    jira = cmd.target_fields["jira"]["description"].replace("\u202f", " ").replace(" at ", ", ")
    assert (
        jira
        == "Seit December 2, 2026, 7:00:00 AM EST (Quelle +01:00); jetzt December 2, 2026, 1:00:00 PM EST"
    )
    assert "rt" not in cmd.target_fields  # no display: the default text, in UTC (RFC 3339)
    assert "Started: 2026-12-02T12:00:00+00:00 (source time zone +01:00)" in cmd.description
    json.dumps(cmd.target_fields)


def test_windows_keep_the_zone_of_their_source() -> None:
    """A silence posted with an offset, a calendar's TZID (or UTC, or its declared default zone)."""
    from connectors.sources.freeze.mapping import freeze_windows
    from streams.stages.silences import from_am_silence

    silence = from_am_silence(
        {
            "matchers": [{"name": "alertname", "value": "A"}],
            "startsAt": "2026-12-02T13:00:00+01:00",
            "endsAt": "2026-12-02T15:00:00+01:00",
            "createdBy": "ops",
            "comment": "patching",
        },
        NOW,
    )
    assert silence.source_zone == "+01:00" and silence.starts_at == NOW
    body = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
        "BEGIN:VEVENT\r\nUID:a\r\nDTSTART;TZID=Europe/Berlin:20261231T180000\r\nDURATION:PT8H\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:b\r\nDTSTART:20261227T000000Z\r\nDURATION:PT1H\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:c\r\nDTSTART;VALUE=DATE:20261224\r\nDTEND;VALUE=DATE:20261225\r\nEND:VEVENT\r\n"
        "END:VCALENDAR\r\n"
    )
    zones = {
        w.window_id: w.source_zone for w in freeze_windows(body, "c", NOW, default_zone="America/Chicago")
    }
    assert zones == {"freeze-c-a": "Europe/Berlin", "freeze-c-b": "+00:00", "freeze-c-c": "America/Chicago"}
