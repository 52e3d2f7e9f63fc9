"""RT sink configuration, from Settings at the edge."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from streams.core.settings import Settings


@dataclass(frozen=True)
class RTConfig:
    base_url: str  # up to and including /REST/2.0
    user: str
    password: SecretStr
    incident_queue: str
    change_queue: str
    correlation_field: str
    ci_field: str
    verify: bool | str
    timeout_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RTConfig:
        if not settings.rt_url or not settings.rt_password.get_secret_value():
            raise ValueError("ITSM_RT_URL and ITSM_RT_PASSWORD (or _FILE) are required")
        return cls(
            settings.rt_url.rstrip("/") + "/REST/2.0",
            settings.rt_user,
            settings.rt_password,
            settings.rt_incident_queue,
            settings.rt_change_queue,
            settings.rt_correlation_field,
            settings.rt_ci_field,
            settings.tls_verify("rt"),
            settings.http_timeout_seconds,
        )
