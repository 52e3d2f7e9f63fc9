"""Topology grouping on the real broker: two incidents on one CI are tracked apart (the first
resolving leaves the second as the CI's incident, which a dependent still joins), and a parent
that opens after its dependents links their incidents (correlation.toml late_parent = "link").
Every input is accounted for."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pytest

from ops.kafka import Broker
from ops.stack import Stack
from streams.core import models as m
from streams.core.settings import Settings
from tests.integration.test_alert_storm import SERDE, alert, ci, outcome_counts
from tests.kafka_util import consume, kafka_env, produce

pytestmark = pytest.mark.integration


def test_several_incidents_per_ci_and_a_late_parent_on_the_real_broker(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    s = kafka_settings
    boot, raw = s.kafka_bootstrap, s.topic("alerts.raw")
    produce(
        boot,
        s.topic("cmdb.ci"),
        [ci("db-9", "db-9"), ci("app-9", "app-9", "db-9"), ci("db-7", "db-7"), ci("app-7", "app-7", "db-7")],
    )
    stack = Stack(
        tmp_path / "stack",
        boot,
        kafka_env=kafka_env(boot),
        topic_prefix=s.topic_prefix,
        app_id=s.app_id,
        lifecycle={"stable_period": 0.5, "tick_interval": 0.2},
    )
    stack.start(["worker"])
    commands = s.topic("itsm.incident.commands")
    seen: dict[str, list[m.IncidentCommand]] = defaultdict(list)

    def wait_for(count: int) -> None:
        """Until the commands topic holds count commands; seen: each incident's, in order (one
        incident's commands are on one partition, keyed by its correlation id)."""
        deadline = time.monotonic() + 60
        while True:
            stack.check_alive()
            records = consume(boot, commands, count, timeout=10)
            if len(records) >= count:
                break
            assert time.monotonic() < deadline, (len(records), count, stack.log_tail("worker"))
        seen.clear()
        for record in records:
            cmd = SERDE.decode(record.value(), m.IncidentCommand)
            seen[cmd.correlation_id].append(cmd)

    try:
        # Two alerts on one CI: two incidents. The first resolves; the second is still open.
        produce(boot, raw, [(b"a1", alert("a1", 0, instance="db-9:9100"), [])])
        wait_for(1)
        produce(boot, raw, [(b"a2", alert("a2", 0, instance="db-9:9100"), [])])
        wait_for(2)
        produce(boot, raw, [(b"a1", alert("a1", 0, "RESOLVED", instance="db-9:9100"), [])])
        wait_for(3)  # the resolve, after the stable period
        produce(boot, raw, [(b"c1", alert("c1", 0, instance="app-9:9100"), [])])
        wait_for(4)
        assert [c.action for c in seen["itsmp-a1"]] == [m.IncidentAction.OPEN, m.IncidentAction.RESOLVE]
        assert [c.action for c in seen["itsmp-a2"]] == [m.IncidentAction.OPEN, m.IncidentAction.UPDATE]
        assert "grouped here" in (seen["itsmp-a2"][1].work_note or "")  # the dependent joined a2
        assert "itsmp-c1" not in seen

        # A late parent: app-7's alert opens first, then its database's.
        produce(boot, raw, [(b"d1", alert("d1", 0, instance="app-7:9100"), [])])
        wait_for(5)
        produce(boot, raw, [(b"p1", alert("p1", 0, instance="db-7:9100"), [])])
        wait_for(8)  # the parent's OPEN, the note on app-7's incident, the list on the parent
        assert [c.action for c in seen["itsmp-d1"]] == [m.IncidentAction.OPEN, m.IncidentAction.UPDATE]
        assert "Caused by incident itsmp-p1" in (seen["itsmp-d1"][1].work_note or "")
        assert [c.action for c in seen["itsmp-p1"]] == [m.IncidentAction.OPEN, m.IncidentAction.UPDATE]
        assert "itsmp-d1 on app-7" in (seen["itsmp-p1"][1].work_note or "")
        # 6 records in: 5 emitted, the resolve absorbed (its RESOLVE came from the timer).
        assert len(consume(boot, commands, 9, timeout=3)) == 8  # and nothing more
        counts = outcome_counts(stack.worker_metrics_port)
        assert counts.get("emitted") == 5 and counts.get("absorbed") == 1, counts
    finally:
        codes = stack.stop()
    assert all(code == 0 for code in codes.values()), codes


def test_group_by_puts_a_groups_alerts_in_one_incident_that_resolves_when_all_cleared(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    from streams.core.rules import default_rules_dir
    from tests.integration.test_silences_and_event_rules import rules_dir

    s = kafka_settings
    boot, raw = s.kafka_bootstrap, s.topic("alerts.raw")
    correlation = (default_rules_dir() / "correlation.toml").read_text()
    assert "group_by = []" in correlation
    rules = rules_dir(
        tmp_path,
        {"stable_period": 0.5, "tick_interval": 0.2},
        correlation=correlation.replace("group_by = []", 'group_by = ["alertname", "cluster"]'),
    )
    stack = Stack(
        tmp_path / "stack",
        boot,
        kafka_env=kafka_env(boot),
        topic_prefix=s.topic_prefix,
        app_id=s.app_id,
        extra_env={"ITSM_RULES_DIR": str(rules)},
    )
    stack.start(["worker"])
    commands = s.topic("itsm.incident.commands")

    def commands_now(count: int) -> list[tuple[str, str]]:
        records = consume(boot, commands, count, timeout=60)
        assert len(records) == count, (len(records), stack.log_tail("worker"))
        return sorted(
            (c.correlation_id, c.action.value)
            for c in (SERDE.decode(r.value(), m.IncidentCommand) for r in records)
        )

    try:
        produce(boot, raw, [(b"g1", alert("g1", 0, instance="n1", cluster="c1"), [])])
        commands_now(1)
        produce(
            boot,
            raw,
            [
                (b"g2", alert("g2", 0, instance="n2", cluster="c1"), []),  # joins g1's incident
                (b"g3", alert("g3", 0, instance="n1", cluster="c2"), []),  # another group
            ],
        )
        assert commands_now(3) == [("itsmp-g1", "OPEN"), ("itsmp-g1", "UPDATE"), ("itsmp-g3", "OPEN")]
        produce(boot, raw, [(b"g1", alert("g1", 0, "RESOLVED", instance="n1", cluster="c1"), [])])
        time.sleep(3)  # far past the stable period: g2 still fires, so nothing resolves
        assert len(consume(boot, commands, 4, timeout=2)) == 3
        produce(boot, raw, [(b"g2", alert("g2", 0, "RESOLVED", instance="n2", cluster="c1"), [])])
        assert commands_now(4)[:3] == [("itsmp-g1", "OPEN"), ("itsmp-g1", "RESOLVE"), ("itsmp-g1", "UPDATE")]
        # 5 records in: 3 emitted (an open, a join, an open), 2 absorbed (the two clears; the
        # RESOLVE came from the timer once the last member had gone).
        counts = outcome_counts(stack.worker_metrics_port)
        assert counts.get("emitted") == 3 and counts.get("absorbed") == 2, counts
    finally:
        codes = stack.stop()
    assert all(code == 0 for code in codes.values()), codes
