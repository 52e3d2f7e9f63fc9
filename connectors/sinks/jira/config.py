"""Jira sink configuration, from Settings at the edge."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from streams.core.settings import Settings


@dataclass(frozen=True)
class JiraConfig:
    base_url: str
    email: str
    api_token: SecretStr
    service_desk_id: str
    incident_request_type_id: str
    change_request_type_id: str
    resolve_transition: str
    reopen_transition: str
    verify: bool | str
    timeout_seconds: float
    deployment: str = "cloud"
    search_lag_seconds: float = 60.0

    @property
    def api_version(self) -> str:
        """The platform REST API version the target speaks: 3 on Jira Cloud, 2 on Data Center."""
        return "3" if self.deployment == "cloud" else "2"

    @classmethod
    def from_settings(cls, settings: Settings) -> JiraConfig:
        if not settings.jira_url or not settings.jira_email or not settings.jira_api_token.get_secret_value():
            raise ValueError("ITSM_JIRA_URL, ITSM_JIRA_EMAIL and ITSM_JIRA_API_TOKEN (or _FILE) are required")
        return cls(
            settings.jira_url.rstrip("/"),
            settings.jira_email,
            settings.jira_api_token,
            settings.jira_service_desk_id,
            settings.jira_incident_request_type_id,
            settings.jira_change_request_type_id,
            settings.jira_resolve_transition,
            settings.jira_reopen_transition,
            settings.tls_verify("jira"),
            settings.http_timeout_seconds,
            settings.jira_deployment,
            settings.jira_search_lag_seconds,
        )
