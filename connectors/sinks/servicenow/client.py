"""ServiceNow Table API client: find by correlation id, create, update; the status table applied."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from connectors.sinks.http import HttpCaller, RetryPolicy, SinkError
from connectors.sinks.ratelimit import RateLimiter
from connectors.sinks.servicenow.config import ServiceNowConfig
from connectors.sinks.servicenow.mapping import LOOKUP_FIELDS, lookup_query
from connectors.sinks.servicenow.values import READ_PARAMS
from connectors.tls import tls
from streams.core import telemetry
from streams.core.dlq import ErrorClass


class ServiceNowClient:
    """Calls /api/now/table/{table} with basic auth, explicit timeouts and TLS verification."""

    def __init__(
        self,
        config: ServiceNowConfig,
        policy: RetryPolicy,
        target: str = "servicenow",
        transport: httpx.BaseTransport | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.http = httpx.Client(
            base_url=config.base_url,
            auth=config.http_auth(),
            timeout=httpx.Timeout(config.timeout_seconds),
            verify=tls(config.verify),
            headers={"Accept": "application/json", "Content-Type": "application/json"},
            transport=transport,
        )
        self.caller = HttpCaller(self.http, target, policy, limiter)
        self.config = config

    def _result(self, resp: httpx.Response) -> Any:
        try:
            return resp.json()["result"]
        except (ValueError, KeyError) as exc:
            raise SinkError(
                f"ServiceNow answered {resp.status_code} without a result envelope: {resp.text[:200]}",
                ErrorClass.UNKNOWN,
                self.last_attempts,
                False,
                resp.status_code,
            ) from exc

    @property
    def last_attempts(self) -> int:
        """HTTP attempts since the sink started the current command."""
        return self.caller.attempts

    def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            resp, _ = self.caller.call(method, url, **kwargs)
        except SinkError as exc:
            if exc.status == 403 and "Data Policy Exception" in str(exc):
                # A data policy refuses the record's content (a mandatory field), not the account.
                exc.error_class = ErrorClass.VALIDATION
            raise
        return self._result(resp)

    def get(self, table: str, sys_id: str) -> dict[str, Any] | None:
        """One record by sys_id (LOOKUP_FIELDS), or None if the instance does not have it."""
        try:
            return dict(
                self._call(
                    "GET", f"/api/now/table/{table}/{sys_id}", params={"sysparm_fields": LOOKUP_FIELDS}
                )
            )
        except SinkError as exc:
            if exc.status == 404:
                return None
            raise

    def find(self, table: str, correlation_id: str, known_id: str | None = None) -> dict[str, Any] | None:
        """The newest record carrying this correlation id, or None; by its known sys_id when given."""
        if known_id:
            rec = self.get(table, known_id)
            if rec is not None and rec.get("correlation_id") == correlation_id:
                telemetry.SINK_LOOKUPS.labels(self.caller.target, "known").inc()
                return rec
        telemetry.SINK_LOOKUPS.labels(self.caller.target, "search").inc()
        try:
            params = lookup_query(correlation_id)
        except ValueError as exc:
            # Data the ITSM query language cannot express safely: dead-letter, never crash.
            raise SinkError(str(exc), ErrorClass.VALIDATION, self.last_attempts, False) from exc
        rows = self._call("GET", f"/api/now/table/{table}", params=params)
        return rows[0] if rows else None

    def rows(self, table: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """One page of a Table API query (sysparm_query, sysparm_fields, sysparm_limit, sysparm_offset)."""
        return [dict(r) for r in self._call("GET", f"/api/now/table/{table}", params=params)]

    def every_row(self, table: str, query: str, fields: str, page: int = 200) -> Iterator[dict[str, Any]]:
        """Every row of a query, page by page (sysparm_offset), in every field's value and
        display value (READ_PARAMS)."""
        offset = 0
        while True:
            params = {
                "sysparm_query": query,
                "sysparm_fields": fields,
                "sysparm_limit": str(page),
                "sysparm_offset": str(offset),
                **READ_PARAMS,
            }
            rows = self.rows(table, params)
            yield from rows
            if len(rows) < page:
                return
            offset += page

    def create(self, table: str, fields: dict[str, Any]) -> dict[str, Any]:
        # Not retried here: the record may exist although the answer was lost (see ServiceNowSink).
        return dict(self._call("POST", f"/api/now/table/{table}", json=fields, retry=False))

    def update(self, table: str, sys_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("PATCH", f"/api/now/table/{table}/{sys_id}", json=fields))

    def close(self) -> None:
        self.http.close()
