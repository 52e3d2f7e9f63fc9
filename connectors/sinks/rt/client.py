"""RT REST 2 client: tickets by id and by TicketSQL, create, status, comment; the status table applied."""

from __future__ import annotations

from typing import Any

import httpx

from connectors.sinks.http import HttpCaller, RetryPolicy, SinkError
from connectors.sinks.ratelimit import RateLimiter
from connectors.sinks.rt.config import RTConfig
from connectors.tls import tls
from streams.core.secrets import basic_auth


class RTClient:
    """HTTP attempts of the current command are counted by the caller (reset per command by the sink)."""

    def __init__(
        self,
        config: RTConfig,
        policy: RetryPolicy,
        limiter: RateLimiter | None = None,
        transport: httpx.BaseTransport | None = None,
        target: str = "rt",
    ) -> None:
        self.http = httpx.Client(
            base_url=config.base_url,
            auth=basic_auth(config.user, config.password),
            timeout=config.timeout_seconds,
            verify=tls(config.verify),
            transport=transport,
            headers={"Accept": "application/json"},
        )
        self.caller = HttpCaller(self.http, target, policy, limiter)

    @property
    def attempts(self) -> int:
        return self.caller.attempts

    def call(self, method: str, url: str, retry: bool = True, **kw: Any) -> httpx.Response:
        return self.caller.call(method, url, retry=retry, **kw)[0]

    def ticket(self, ticket_id: str) -> dict[str, Any] | None:
        try:
            return dict(self.call("GET", f"/ticket/{ticket_id}").json())
        except SinkError as exc:
            if exc.status == 404:
                return None
            raise

    def search(self, query: str) -> list[dict[str, Any]]:
        """Newest first."""
        params = {"query": query, "fields": "Status,Subject", "orderby": "id", "order": "DESC"}
        return list(self.call("GET", "/tickets", params=params).json()["items"])

    def create(self, body: dict[str, Any]) -> str:
        # Not retried blindly: the sink searches for the correlation id again first.
        return str(self.call("POST", "/ticket", retry=False, json=body).json()["id"])

    def set_status(self, ticket_id: str, status: str) -> None:
        self.call("PUT", f"/ticket/{ticket_id}", json={"Status": status})

    def comment(self, ticket_id: str, text: str) -> None:
        self.call("POST", f"/ticket/{ticket_id}/comment", json={"Content": text, "ContentType": "text/plain"})

    def close(self) -> None:
        self.http.close()
