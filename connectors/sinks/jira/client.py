"""Jira Service Management client: requests, comments, transitions, JQL; the status table applied."""

from __future__ import annotations

from typing import Any

import httpx

from connectors.sinks.http import HttpCaller, RetryPolicy, SinkError
from connectors.sinks.jira.config import JiraConfig
from connectors.sinks.ratelimit import RateLimiter
from connectors.tls import tls
from streams.core.secrets import basic_auth

SEARCH_FIELDS = "labels,status,summary"


class JiraClient:
    """HTTP attempts of the current command are counted by the caller (reset per command by the sink)."""

    def __init__(
        self,
        config: JiraConfig,
        policy: RetryPolicy,
        limiter: RateLimiter | None = None,
        transport: httpx.BaseTransport | None = None,
        target: str = "jira",
    ) -> None:
        self.http = httpx.Client(
            base_url=config.base_url,
            auth=basic_auth(config.email, config.api_token),
            timeout=config.timeout_seconds,
            verify=tls(config.verify),
            transport=transport,
            headers={"Accept": "application/json"},
        )
        self.caller = HttpCaller(self.http, target, policy, limiter)
        self.service_desk_id = config.service_desk_id
        self.api = config.api_version

    @property
    def attempts(self) -> int:
        return self.caller.attempts

    def call(self, method: str, url: str, retry: bool = True, **kw: Any) -> httpx.Response:
        return self.caller.call(method, url, retry=retry, **kw)[0]

    def issue(self, key: str) -> dict[str, Any] | None:
        """The issue read at its current state (not through the search index), or None."""
        try:
            return dict(self.call("GET", f"/rest/api/{self.api}/issue/{key}").json())
        except SinkError as exc:
            if exc.status == 404:
                return None
            raise

    def search_label(self, label: str, reconcile: list[str] | None = None) -> list[dict[str, Any]]:
        """Issues carrying the label, newest first, with the fields the sink reads.

        Jira Cloud: GET /rest/api/3/search/jql (the old /search answers 410); eventually consistent,
        so issues named in reconcile (ids) are read at their current state. Data Center:
        GET /rest/api/2/search.
        """
        params: dict[str, Any] = {
            "jql": f'labels = "{label}" ORDER BY created DESC',
            "fields": SEARCH_FIELDS,
            "maxResults": 50,
        }
        if self.api == "2":
            return list(self.call("GET", "/rest/api/2/search", params=params).json()["issues"])
        if reconcile:
            params["reconcileIssues"] = ",".join(reconcile)
        return list(self.call("GET", "/rest/api/3/search/jql", params=params).json()["issues"])

    def create_request(
        self, request_type: str, fields: dict[str, Any], service_desk: str | None = None
    ) -> dict[str, Any]:
        body = {
            "serviceDeskId": service_desk or self.service_desk_id,
            "requestTypeId": request_type,
            "requestFieldValues": fields,
        }
        # Not retried blindly: the sink searches for the label again first.
        data = self.call("POST", "/rest/servicedeskapi/request", retry=False, json=body).json()
        return {"id": data["issueId"], "key": data["issueKey"], "fields": {"status": {"name": "open"}}}

    def comment(self, key: str, text: str) -> None:
        self.call("POST", f"/rest/servicedeskapi/request/{key}/comment", json={"body": text, "public": False})

    def transitions(self, key: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/rest/servicedeskapi/request/{key}/transition").json()["values"])

    def transition(self, key: str, transition_id: str, comment: str) -> None:
        self.call(
            "POST",
            f"/rest/servicedeskapi/request/{key}/transition",
            json={"id": transition_id, "additionalComment": {"body": comment}},
        )

    def close(self) -> None:
        self.http.close()
