"""What a webhook source is: a name, a path, and a pure payload -> Alerts mapping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streams.core.models import Alert


@dataclass(frozen=True)
class WebhookSource:
    """A webhook the ingest gateway accepts at POST /v1/alerts/<name>."""

    name: str
    to_alerts: Callable[[Any, datetime], list[Alert]]
    doc: str = ""

    @property
    def path(self) -> str:
        return f"/v1/alerts/{self.name}"
