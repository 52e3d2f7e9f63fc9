"""The loop of every polling sync (change sync, incident sync): pass after pass until stopped."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from opentelemetry.trace import StatusCode

from connectors.sinks.http import SinkError
from streams.core import telemetry


def every(stop: threading.Event, interval: float, one_pass: Callable[[], Any], log: Any, failed: str) -> None:
    """one_pass until stop, interval apart; a retryable ITSM error is logged (as `failed`) and
    waits for the next pass, any other raises."""
    tracer = telemetry.tracer("sync")
    name = failed.removesuffix("_failed")
    while not stop.is_set():
        # One span per pass: the ITSM reads (client spans) and what the pass published.
        with tracer.start_as_current_span(f"{name} pass") as span:
            try:
                span.set_attribute("published", int(one_pass() or 0))
            except SinkError as exc:
                span.set_status(StatusCode.ERROR, exc.error_class.value)
                if not exc.retryable:
                    raise
                log.warning(failed, error=str(exc)[:300], error_class=exc.error_class.value)
        stop.wait(interval)
