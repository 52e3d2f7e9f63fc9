"""A Stack of pipeline processes for one test, on the session broker with the test's topic prefix;
every process must exit 0 when the test is over."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ops.kafka import Broker
from ops.stack import Stack
from streams.core.settings import Settings


@contextmanager
def pipeline_stack(broker: Broker, settings: Settings, workdir: Path, **kw: Any) -> Iterator[Stack]:
    s = Stack(
        workdir,
        broker.bootstrap,
        kafka_env=broker.env(),
        topic_prefix=settings.topic_prefix,
        app_id=settings.app_id,
        **kw,
    )
    try:
        yield s
    finally:
        codes = s.stop()
        assert all(code == 0 for code in codes.values()), (codes, {n: s.log_tail(n) for n in codes})
