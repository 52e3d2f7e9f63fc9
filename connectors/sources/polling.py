"""The loop of every polling sync (change sync, incident sync): pass after pass until stopped."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from connectors.sinks.http import SinkError


def every(stop: threading.Event, interval: float, one_pass: Callable[[], Any], log: Any, failed: str) -> None:
    """one_pass until stop, interval apart; a retryable ITSM error is logged (as `failed`) and
    waits for the next pass, any other raises."""
    while not stop.is_set():
        try:
            one_pass()
        except SinkError as exc:
            if not exc.retryable:
                raise
            log.warning(failed, error=str(exc)[:300], error_class=exc.error_class.value)
        stop.wait(interval)
