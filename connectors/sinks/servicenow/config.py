"""ServiceNow sink configuration, taken from the process Settings at the edge."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from streams.core.settings import Settings


@dataclass(frozen=True)
class ServiceNowConfig:
    """Where the instance is and how to authenticate; the password never leaves SecretStr until use."""

    base_url: str
    user: str
    password: SecretStr
    verify: bool | str
    timeout_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceNowConfig:
        return cls(
            settings.servicenow_url.rstrip("/"),
            settings.servicenow_user,
            settings.servicenow_password,
            settings.servicenow_verify(),
            settings.http_timeout_seconds,
        )
