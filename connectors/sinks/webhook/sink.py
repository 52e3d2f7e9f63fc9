"""WebhookSink: POST each command as signed JSON; the receiver deduplicates by Idempotency-Key."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from connectors.sinks.http import HttpCaller, RetryPolicy
from connectors.sinks.ratelimit import RateLimiter
from connectors.sinks.webhook.config import WebhookConfig
from connectors.sinks.webhook.mapping import SIGNATURE_HEADER, TIMESTAMP_HEADER, body, signature
from connectors.tls import tls
from streams.core.models import (
    ChangeAction,
    ChangeCommand,
    IncidentAction,
    IncidentCommand,
    RecordType,
    SinkOutcome,
    SinkResult,
)

OUTCOME = {
    IncidentAction.OPEN: SinkOutcome.CREATED,
    IncidentAction.UPDATE: SinkOutcome.UPDATED,
    IncidentAction.RESOLVE: SinkOutcome.RESOLVED,
    ChangeAction.CREATE: SinkOutcome.CREATED,
    ChangeAction.UPDATE: SinkOutcome.UPDATED,
    ChangeAction.CLOSE: SinkOutcome.RESOLVED,
}


class WebhookSink:
    """Retries are safe: the same command always carries the same Idempotency-Key."""

    name = "webhook"

    def __init__(
        self,
        config: WebhookConfig,
        policy: RetryPolicy,
        limiter: RateLimiter | None = None,
        transport: httpx.BaseTransport | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.http = httpx.Client(
            timeout=config.timeout_seconds, verify=tls(config.verify), transport=transport
        )
        self.caller = HttpCaller(self.http, self.name, policy, limiter)
        self.wall = wall

    def _deliver(self, cmd: IncidentCommand | ChangeCommand, record_type: RecordType) -> SinkResult:
        payload = body(cmd)
        ts = str(int(self.wall()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": cmd.command_id,
            TIMESTAMP_HEADER: ts,
            SIGNATURE_HEADER: signature(self.config.secret.get_secret_value().encode(), ts, payload),
        }
        resp, attempts = self.caller.call("POST", self.config.url, content=payload, headers=headers)
        itsm_id = None
        if resp.headers.get("content-type", "").startswith("application/json"):
            data = resp.json()
            itsm_id = str(data["id"]) if isinstance(data, dict) and "id" in data else None
        return SinkResult(
            command_id=cmd.command_id,
            correlation_id=cmd.correlation_id,
            target=self.name,
            record_type=record_type,
            outcome=OUTCOME[cmd.action],
            itsm_id=itsm_id,
            attempts=attempts,
            message=f"HTTP {resp.status_code}",
            completed_at=datetime.now(UTC),
        )

    def handle_incident(self, cmd: IncidentCommand) -> SinkResult:
        return self._deliver(cmd, RecordType.INCIDENT)

    def handle_change(self, cmd: ChangeCommand) -> SinkResult:
        return self._deliver(cmd, RecordType.CHANGE)

    def close(self) -> None:
        self.http.close()
