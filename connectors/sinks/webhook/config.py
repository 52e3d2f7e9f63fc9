"""Webhook sink configuration, from Settings at the edge."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from streams.core.settings import Settings


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    secret: SecretStr
    verify: bool | str
    timeout_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookConfig:
        if not settings.webhook_url:
            raise ValueError("ITSM_WEBHOOK_URL is not set")
        if not settings.webhook_secret.get_secret_value():
            raise ValueError("ITSM_WEBHOOK_SECRET (or _FILE) is required: webhooks are always signed")
        return cls(
            settings.webhook_url,
            settings.webhook_secret,
            settings.tls_verify("webhook"),
            settings.http_timeout_seconds,
        )
