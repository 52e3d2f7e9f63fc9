"""ServiceNow sink configuration, taken from the process Settings at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from pydantic import SecretStr

from connectors.sinks.oauth import ClientCredentials
from streams.core.secrets import basic_auth
from streams.core.settings import Settings


@dataclass(frozen=True)
class ServiceNowConfig:
    """Where the instance is and how to authenticate; the password never leaves SecretStr until use."""

    base_url: str
    user: str
    password: SecretStr
    verify: bool | str
    timeout_seconds: float
    auth: str = "basic"
    client_id: str = ""
    client_secret: SecretStr = field(default_factory=lambda: SecretStr(""))
    token_url: str | None = None
    scope: str | None = None
    caller: str = ""  # user_name of the incidents' caller; default: user
    ci_lookup_field: str = "name"
    reference_ttl_seconds: float = 600.0
    reference_miss_ttl_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceNowConfig:
        base = settings.servicenow_url.rstrip("/")
        return cls(
            base,
            settings.servicenow_user,
            settings.servicenow_password,
            settings.servicenow_verify(),
            settings.http_timeout_seconds,
            settings.servicenow_auth,
            settings.servicenow_client_id,
            settings.servicenow_client_secret,
            settings.servicenow_token_url or f"{base}/oauth_token.do",
            settings.servicenow_scope,
            settings.servicenow_caller,
            settings.servicenow_ci_lookup_field,
            settings.servicenow_reference_ttl_seconds,
            settings.servicenow_reference_miss_ttl_seconds,
        )

    def http_auth(self) -> httpx.Auth | tuple[str, str]:
        """Basic credentials, or an OAuth client-credentials flow."""
        if self.auth == "oauth":
            if not self.client_id or not self.client_secret.get_secret_value():
                raise ValueError(
                    "ITSM_SERVICENOW_AUTH=oauth needs ITSM_SERVICENOW_CLIENT_ID and _CLIENT_SECRET"
                )
            return ClientCredentials(
                self.token_url or f"{self.base_url}/oauth_token.do",
                self.client_id,
                self.client_secret,
                self.scope,
                self.timeout_seconds,
                self.verify,
            )
        return basic_auth(self.user, self.password)
