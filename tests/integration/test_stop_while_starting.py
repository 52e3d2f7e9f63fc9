"""SIGTERM while a long-running process is still starting (a worker waiting for its views, Faust
not yet running) stops it cleanly: exit 0 and one line saying so, not death by the signal."""

from __future__ import annotations

import time

import pytest

from ops.kafka import Broker
from streams.core.settings import Settings
from tests.stacks import pipeline_stack

pytestmark = pytest.mark.integration


def test_a_worker_told_to_stop_while_it_starts_exits_0(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path
) -> None:
    with pipeline_stack(kafka_broker, kafka_settings, tmp_path / "stack") as stack:
        stack.start(["worker"])
        log = stack.workdir / "logs" / "worker.log"
        deadline = time.monotonic() + 60
        # Its first line comes once itsmctl runs the command; Faust starts seconds later.
        while "kafka_secured" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, stack.log_tail("worker")
            time.sleep(0.05)
        codes = stack.stop()
        assert codes == {"worker": 0}, stack.log_tail("worker")
    assert "Starting..." not in log.read_text()  # told to stop before Faust started: the case tested
    assert "itsmctl worker: stopped (SIGTERM) while starting" in log.read_text()
