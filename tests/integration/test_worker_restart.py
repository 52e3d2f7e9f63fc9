"""Alert state survives a worker restart: the Faust table recovers from its changelog."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ops.kafka import Broker
from ops.stack import Stack
from streams.core import models as m
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.kafka_util import consume, kafka_env, produce

pytestmark = pytest.mark.integration
SERDE = AvroSerde()


def alert(fp: str, status: str = "FIRING") -> bytes:
    now = datetime.now(UTC)
    return SERDE.encode(
        m.Alert(
            fingerprint=fp,
            source=m.AlertSource.ALERTMANAGER,
            status=m.AlertStatus(status),
            name="Restart",
            severity="warning",
            labels={"alertname": "Restart"},
            starts_at=now,
            received_at=now,
        )
    )


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_dedup_and_clearing_continue_across_a_worker_restart(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path, store: str
) -> None:
    """The table comes back after a restart: from its changelog (memory), or from local disk plus
    the changelog's tail (rocksdb)."""
    s = kafka_settings
    raw, commands = s.topic("alerts.raw"), s.topic("itsm.incident.commands")
    stack = Stack(
        tmp_path / "stack",
        kafka_broker.bootstrap,
        kafka_env=kafka_env(kafka_broker.bootstrap),
        topic_prefix=s.topic_prefix,
        app_id=s.app_id,
        lifecycle={"dedup_window": 3600, "stable_period": 3, "tick_interval": 0.2},
        extra_env={"ITSM_WORKER_STORE": store, "ITSM_WORKER_DATA_DIR": str(tmp_path / "worker-data")},
    )
    produce(s.kafka_bootstrap, raw, [(f"r{i}".encode(), alert(f"r{i}"), []) for i in range(10)])
    stack.start(["worker"])
    try:
        assert len(consume(s.kafka_bootstrap, commands, 10, timeout=90)) == 10
        # Clearing starts before the restart; the stable period ends after it.
        produce(s.kafka_bootstrap, raw, [(b"r0", alert("r0", "RESOLVED"), [])])
        assert stack.stop() == {"worker": 0}
        stack.start(["worker"])
        # Repeats of the open alerts are still duplicates: the state came back.
        produce(s.kafka_bootstrap, raw, [(f"r{i}".encode(), alert(f"r{i}"), []) for i in range(1, 10)])
        msgs = consume(s.kafka_bootstrap, commands, 11, timeout=90)
        actions = Counter(SERDE.decode(x.value(), m.IncidentCommand).action.value for x in msgs)
        assert actions == Counter({"OPEN": 10, "RESOLVE": 1}), stack.log_tail("worker")
        assert len(consume(s.kafka_bootstrap, commands, 12, timeout=5)) == 11
    finally:
        codes = stack.stop()
    assert set(codes.values()) <= {0}
    # The rocksdb store kept the table on local disk (a RocksDB database per partition).
    databases = list((tmp_path / "worker-data").rglob("CURRENT"))
    assert bool(databases) == (store == "rocksdb")
