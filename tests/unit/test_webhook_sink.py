"""The webhook sink against a receiver on loopback: signed, retried safely, refusals permanent."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from connectors.sinks.http import RetryPolicy, SinkError
from connectors.sinks.webhook.config import WebhookConfig
from connectors.sinks.webhook.sink import WebhookSink
from streams.core.dlq import ErrorClass
from streams.core.models import ChangeCommand, IncidentAction, IncidentCommand, SinkOutcome
from streams.core.settings import Settings
from tests.servers import serve

SECRET = b"wh-secret"


class Receiver:
    """Verifies the signature like a receiver must; answers from a script of statuses."""

    def __init__(self, script: list[int]) -> None:
        self.script = script
        self.seen: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        ts = request.headers["X-ITSM-Timestamp"]
        expected = "sha256=" + hmac.new(SECRET, ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers["X-ITSM-Signature"]):
            return web.json_response({"error": "bad signature"}, status=401)
        self.seen.append({"key": request.headers["Idempotency-Key"], "body": json.loads(raw)})
        status = self.script.pop(0) if self.script else 200
        return web.json_response({"id": f"T-{len(self.seen)}"}, status=status)


@pytest.fixture
def receiver() -> Iterator[tuple[str, Receiver]]:
    r = Receiver([])
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    with serve(app) as url:
        yield f"{url}/hook", r


def sink(url: str, secret: bytes = SECRET) -> WebhookSink:
    cfg = WebhookConfig(url, SecretStr(secret.decode()), True, 5.0)
    return WebhookSink(cfg, RetryPolicy(budget_seconds=3, initial_seconds=0.01))


def incident(action: IncidentAction = IncidentAction.OPEN) -> IncidentCommand:
    return IncidentCommand(
        command_id="cmd-1",
        correlation_id="itsmp-f1",
        action=action,
        short_description="Disk full",
        issued_at=datetime(2026, 11, 27, tzinfo=UTC),
    )


def test_a_command_is_posted_signed_with_its_idempotency_key(receiver: tuple[str, Receiver]) -> None:
    url, r = receiver
    result = sink(url).handle_incident(incident())
    assert result.outcome is SinkOutcome.CREATED and result.itsm_id == "T-1"
    (seen,) = r.seen
    assert seen["key"] == "cmd-1" and seen["body"]["kind"] == "incident"
    assert seen["body"]["command"]["correlation_id"] == "itsmp-f1"


def test_a_5xx_is_retried_with_the_same_key_and_a_4xx_is_permanent(receiver: tuple[str, Receiver]) -> None:
    url, r = receiver
    r.script[:] = [503, 200]
    assert sink(url).handle_incident(incident(IncidentAction.RESOLVE)).outcome is SinkOutcome.RESOLVED
    assert [s["key"] for s in r.seen] == ["cmd-1", "cmd-1"]
    r.script[:] = [400]
    with pytest.raises(SinkError) as info:
        sink(url).handle_change(
            ChangeCommand(
                command_id="cc-1",
                correlation_id="chg-1",
                action="CREATE",
                change_type="NORMAL",
                short_description="x",
                issued_at=datetime(2026, 11, 27, tzinfo=UTC),
            )
        )
    assert info.value.error_class is ErrorClass.VALIDATION and not info.value.retryable


def test_a_wrong_secret_is_refused_by_the_receiver_as_auth(receiver: tuple[str, Receiver]) -> None:
    url, r = receiver
    with pytest.raises(SinkError) as info:
        sink(url, b"other").handle_incident(incident())
    assert info.value.error_class is ErrorClass.AUTH and r.seen == []


def test_webhooks_are_always_signed_and_tls_verification_stays_on() -> None:
    with pytest.raises(ValueError, match="ITSM_WEBHOOK_SECRET"):
        WebhookConfig.from_settings(Settings(webhook_url="https://example.invalid/hook"))
    with pytest.raises(ValueError, match="cannot turn TLS verification off"):
        WebhookConfig.from_settings(
            Settings(webhook_url="https://x.invalid", webhook_secret="s", webhook_verify_tls=False)
        )
