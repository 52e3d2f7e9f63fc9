"""Inhibition rules (ops/rules/inhibit.toml) with Alertmanager's semantics, through the engine:
which targets a firing source keeps quiet, the two-sided exclusion, and what happens when the
source resolves, times out or goes quiet."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from streams.core import models as m
from streams.core.rules import RuleError, default_rules_dir, load_rules
from streams.stages.alerts.state import IncidentPhase, Outcome
from tests.alerting import T0, Harness

DC_DOWN = """
[[rule]]
name = "dc-down"
source_matchers = ['alertname="DatacenterDown"']
target_matchers = ['severity=~"warning|critical"']
equal = ["datacenter"]
"""

# Both sides match severity="critical": Alertmanager's two-sided case.
CRITICAL_OVER_WARNING = """
[[rule]]
name = "crit-over-warn"
source_matchers = ['severity="critical"']
target_matchers = ['severity=~"critical|warning"']
equal = ["instance"]
"""


def alert(fp: str, status: str = "FIRING", **labels: str) -> m.Alert:
    """An Alertmanager alert whose labels are exactly these (severity among them)."""
    return m.Alert(
        fingerprint=fp,
        source=m.AlertSource.ALERTMANAGER,
        status=m.AlertStatus(status),
        name=labels.get("alertname", "X"),
        severity=labels.get("severity", "warning"),
        summary=fp,
        labels=labels,
        starts_at=T0,
        received_at=T0,
    )


def opened(fx: object) -> list[str]:
    return [c.correlation_id for c in fx.commands if c.action is m.IncidentAction.OPEN]  # type: ignore[attr-defined]


DC = {"alertname": "DatacenterDown", "datacenter": "fra"}
DISK = {"alertname": "DiskFull", "severity": "warning", "datacenter": "fra"}
CRIT = {"alertname": "A", "severity": "critical", "instance": "db-1"}
WARN = {"alertname": "B", "severity": "warning", "instance": "db-1"}


def but(labels: dict[str, str], **changes: str | None) -> dict[str, str]:
    """labels with some changed (None: removed)."""
    out = {**labels, **changes}
    return {k: v for k, v in out.items() if v is not None}


@pytest.mark.parametrize(
    ("rules", "source", "target", "inhibited"),
    [
        # equal labels with the same value: inhibited
        (DC_DOWN, DC, DISK, True),
        # another datacenter: not
        (DC_DOWN, DC, but(DISK, datacenter="ams"), False),
        # absent on both sides counts as equal (Alertmanager compares "" with "")
        (DC_DOWN, but(DC, datacenter=None), but(DISK, datacenter=None, severity="critical"), True),
        # absent on the target only: not equal
        (DC_DOWN, DC, but(DISK, datacenter=None), False),
        # the target side does not match (info is no target)
        (DC_DOWN, DC, but(DISK, severity="info"), False),
        # a source that is no source (another alert name) inhibits nothing
        (DC_DOWN, but(DC, alertname="RackDown"), DISK, False),
        # two-sided rule: a warning under a critical on the same instance is inhibited ...
        (CRITICAL_OVER_WARNING, CRIT, WARN, True),
        # ... a critical under a critical is not: it matches the source side, and the source
        # matches both sides (inhibit.go: hasEqual's excludeTwoSidedMatch)
        (CRITICAL_OVER_WARNING, CRIT, but(WARN, severity="critical"), False),
    ],
)
def test_a_firing_source_inhibits_exactly_what_alertmanager_would(
    rules: str, source: dict[str, str], target: dict[str, str], inhibited: bool
) -> None:
    h = Harness(inhibit=rules)
    first = h.send(alert("src", **source))
    assert opened(first) == ["itsmp-src"]  # the source itself opens its incident
    fx = h.send(alert("tgt", **target))
    if inhibited:
        assert fx.outcome is Outcome.INHIBITED and fx.commands == []
        (sup,) = fx.suppressed
        assert sup.window is not None and sup.window.kind is m.WindowKind.INHIBITION
        assert "src" in sup.reason and "(rule " in sup.reason  # which source, which rule
        assert h.state("tgt").suppressed_by == sup.window.window_id
    else:
        assert opened(fx) == ["itsmp-tgt"]


def test_a_source_never_inhibits_itself_nor_its_peers_on_a_two_sided_rule() -> None:
    h = Harness(inhibit=CRITICAL_OVER_WARNING)
    h.send(alert("a", alertname="A", severity="critical", instance="db-1"))
    (window,) = h.windows.items.values()
    assert [str(x) for x in window.except_matchers] == ['severity="critical"']
    h.advance(400)  # past the dedup window: the source's own repeat is processed in full
    again = h.send(alert("a", alertname="A", severity="critical", instance="db-1"))
    assert again.outcome is not Outcome.INHIBITED and h.state("a").phase is IncidentPhase.OPEN


def test_when_the_source_resolves_targets_still_firing_open_and_resolved_ones_stay_quiet() -> None:
    h = Harness(inhibit=DC_DOWN)
    h.send(alert("dc", alertname="DatacenterDown", datacenter="fra"))
    for fp in ("t1", "t2"):
        assert h.send(alert(fp, **DISK)).outcome is Outcome.INHIBITED
    gone = h.send(alert("t2", "RESOLVED", alertname="Disk", severity="warning", datacenter="fra"))
    assert gone.commands[0].action is m.IncidentAction.RESOLVE  # a NOOP at the sink: nothing was opened
    h.advance(30)
    fx = h.send(alert("dc", "RESOLVED", alertname="DatacenterDown", datacenter="fra"))
    assert fx.windows_gone == ["inhibit:dc-down:dc"] and h.windows.items == {}
    assert h.state("dc").inhibiting == []
    ticked = h.tick("t1")
    assert ticked is not None and opened(ticked) == ["itsmp-t1"]  # still firing: opens now
    assert h.tick("t2") is None  # resolved while inhibited: ends quietly


def test_a_target_with_an_open_incident_keeps_it_when_a_source_fires_later() -> None:
    h = Harness(inhibit=DC_DOWN)
    assert opened(h.send(alert("t1", alertname="Disk", severity="warning", datacenter="fra"))) == ["itsmp-t1"]
    h.send(alert("dc", alertname="DatacenterDown", datacenter="fra"))
    h.advance(400)
    fx = h.send(alert("t1", alertname="Disk", severity="warning", datacenter="fra"))
    assert fx.outcome is not Outcome.INHIBITED and h.state("t1").phase is IncidentPhase.OPEN


def test_a_silenced_source_still_inhibits() -> None:
    from tests.unit.test_alert_engine import silence

    h = Harness(inhibit=DC_DOWN)
    silence(h, "s-1", 'alertname="DatacenterDown"')
    assert h.send(alert("dc", alertname="DatacenterDown", datacenter="fra")).outcome is Outcome.SUPPRESSED
    fx = h.send(alert("t1", alertname="Disk", severity="warning", datacenter="fra"))
    assert fx.outcome is Outcome.INHIBITED  # Alertmanager: a silenced alert still inhibits


def test_a_source_that_goes_quiet_lets_go_after_the_window_lifetime_and_a_notification_renews() -> None:
    h = Harness(inhibit=DC_DOWN, signal_timeout=1000)
    h.send(alert("dc", alertname="DatacenterDown", datacenter="fra"))
    assert h.windows.items["inhibit:dc-down:dc"].ends_at == T0 + timedelta(seconds=1000)
    h.advance(100)
    assert h.send(alert("t1", **DISK)).outcome is Outcome.INHIBITED
    h.advance(300)  # 400 s in: under half the lifetime, a repeat republishes nothing
    assert h.send(alert("dc", alertname="DatacenterDown", datacenter="fra")).windows == []
    h.advance(200)  # 600 s in: past half, the next notification renews the window to 1,600 s
    renewed = h.send(alert("dc", alertname="DatacenterDown", datacenter="fra"))
    (window,) = renewed.windows
    assert window.ends_at == h.now + timedelta(seconds=1000)
    h.advance(500)  # 1,100 s in: the first window's end, but the renewed one holds
    fx = h.tick("t1")
    assert fx is None or fx.commands == []
    assert h.state("t1").suppressed_by == "inhibit:dc-down:dc"
    h.advance(501)  # the source said nothing more: the window lapsed, the target opens
    fx = h.tick("t1")
    assert fx is not None and opened(fx) == ["itsmp-t1"]


def test_a_source_resolved_by_the_signal_timeout_lets_its_windows_go() -> None:
    h = Harness(inhibit=DC_DOWN, signal_timeout=600)
    h.send(alert("dc", alertname="DatacenterDown", datacenter="fra"))
    h.advance(601)
    fx = h.tick("dc")
    assert fx is not None and fx.windows_gone == ["inhibit:dc-down:dc"]
    assert h.state("dc").inhibiting == []


def test_the_shipped_inhibit_file_loads_and_bad_rules_are_refused(tmp_path: Path) -> None:
    import shutil

    assert load_rules().inhibit.version >= 1
    for path in default_rules_dir().glob("*.toml"):
        shutil.copy(path, tmp_path / path.name)
    head = 'version = 1\n[[rule]]\nname = "x"\n'
    pair = "source_matchers = ['a=\"b\"']\ntarget_matchers = ['b=\"c\"']\n"
    for text, problem in (
        (head + "source_matchers = ['a=~\"(\"']\ntarget_matchers = ['b=\"c\"']\n", "RE2"),
        (head + "source_matchers = []\ntarget_matchers = ['b=\"c\"']\n", "source_matchers"),
        (head + pair + 'equal = ["no-dash"]\n', "label name"),
        ("version = 1\n" + ('[[rule]]\nname = "x"\n' + pair) * 2, "unique"),
    ):
        (tmp_path / "inhibit.toml").write_text(text)
        with pytest.raises(RuleError, match=r"inhibit\.toml") as err:
            load_rules(tmp_path)
        assert problem in str(err.value)
