"""A view that stopped following its topic makes its process stop, loudly."""

from __future__ import annotations

import threading

import pytest

from connectors.sinks.runner import SinkRunner
from ops.kafka.broker import free_port
from streams.core.follower import TopicFollower
from streams.core.serde import AvroSerde
from streams.core.settings import Settings


def test_check_raises_once_the_view_has_failed() -> None:
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    view = TopicFollower(settings, "cmdb.ci", lambda k, v: None)
    view.check()  # healthy: nothing happens
    view.failure = RuntimeError("broker said: fatal")
    with pytest.raises(RuntimeError, match=r"view of cmdb\.ci failed: broker said: fatal"):
        view.check()


def test_the_sink_loop_stops_when_its_health_check_fails() -> None:
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")

    class NeverCalled:
        name = "never"

        def handle_incident(self, cmd: object) -> object:
            raise AssertionError("no command should be handled")

        handle_change = handle_incident

    def failing() -> None:
        raise RuntimeError("results view failed")

    runner = SinkRunner(settings, AvroSerde(), NeverCalled())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="results view failed"):
        runner.run(threading.Event(), check=failing)
