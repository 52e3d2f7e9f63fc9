"""What a webhook source is: a name, a pure payload -> Alerts mapping, optional signature check."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streams.core.models import Alert


def default_response(alerts: list[Alert]) -> dict[str, Any]:
    return {"accepted": len(alerts), "fingerprints": [a.fingerprint for a in alerts]}


@dataclass(frozen=True)
class WebhookSource:
    """A webhook the ingest gateway accepts at POST /v1/alerts/<name>."""

    name: str
    to_alerts: Callable[[Any, datetime], list[Alert]]
    doc: str = ""
    # (raw body, headers) -> None if authentic, else what is wrong (answered with 401).
    verify: Callable[[bytes, Mapping[str, str]], str | None] | None = None
    respond: Callable[[list[Alert]], dict[str, Any]] = default_response

    @property
    def path(self) -> str:
        return f"/v1/alerts/{self.name}"
