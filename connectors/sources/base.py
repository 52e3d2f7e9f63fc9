"""What a webhook source is: a name, a pure payload -> Alerts mapping, optional signature check."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streams.core.models import Alert


def default_response(alerts: list[Alert]) -> dict[str, Any]:
    return {"accepted": len(alerts), "fingerprints": [a.fingerprint for a in alerts]}


def default_error(message: str, problems: list[str] | None) -> Any:
    body: dict[str, object] = {"error": message}
    if problems:
        body["problems"] = problems
    return body


@dataclass(frozen=True)
class WebhookSource:
    """A webhook the ingest gateway accepts at POST /v1/alerts/<name> (or its own route, when it
    speaks another product's API)."""

    name: str
    to_alerts: Callable[[Any, datetime], list[Alert]]
    doc: str = ""
    # (raw body, headers) -> None if authentic, else what is wrong (answered with 401).
    verify: Callable[[bytes, Mapping[str, str]], str | None] | None = None
    # The answer's JSON body once published (None: no body), its status, and an error's body.
    respond: Callable[[list[Alert]], dict[str, Any] | None] = default_response
    accepted: int = 202
    error_body: Callable[[str, list[str] | None], Any] = default_error
    route: str | None = None
    # A credential the sender's API puts in the body rather than a header (PagerDuty's routing
    # key): (parsed body) -> the credential, checked like a bearer token when none is sent.
    credential: Callable[[Any], str | None] | None = None

    @property
    def path(self) -> str:
        return self.route or f"/v1/alerts/{self.name}"
