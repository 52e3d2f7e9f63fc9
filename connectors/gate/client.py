"""The pipeline's side of the change gate: check, or submit and poll until a person decided."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from connectors.tls import tls

ALLOW, DENY, ERROR = 0, 1, 2


class GateUnavailable(Exception):
    """The gate could not give an answer (network, authentication, server error)."""


@dataclass
class Answer:
    """What the gate said, and the exit code a pipeline step should end with."""

    exit_code: int
    status: str
    reasons: list[str]
    body: dict[str, Any] = field(default_factory=dict)


class GateClient:
    def __init__(
        self,
        url: str,
        token: str,
        verify: bool | str,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            verify=tls(verify),
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        try:
            resp = self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise GateUnavailable(f"cannot reach the gate at {self.http.base_url}: {exc}") from exc
        try:
            data = resp.json()
        except ValueError:
            data = {"error": resp.text[:200]}
        if resp.status_code in (200, 202):
            return resp.status_code, dict(data)
        problems = "; ".join(data.get("problems", []))
        raise GateUnavailable(
            f"the gate answered {resp.status_code}: {data.get('error', '')}"
            + (f" ({problems})" if problems else "")
        )

    def check(self, **body: Any) -> Answer:
        _, data = self._call("POST", "/v1/gate/check", body)
        return Answer(ALLOW if data["allowed"] else DENY, data["decision"], list(data["reasons"]), data)

    def submit(self, **body: Any) -> Answer:
        _, data = self._call("POST", "/v1/gate/requests", body)
        return Answer(DENY, data["status"], list(data.get("reasons", [])), data)

    def poll(self, request_id: str) -> Answer:
        _, data = self._call("GET", f"/v1/gate/requests/{request_id}")
        code = {"allowed": ALLOW, "denied": DENY}.get(data["status"], DENY)
        return Answer(code, data["status"], list(data.get("reasons", [])), data)

    def wait(
        self,
        request_id: str,
        timeout: float,
        interval: float,
        progress: Callable[[Answer], None] = lambda a: None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Answer:
        """Poll until the request is allowed or denied, or the timeout passes (then a denial)."""
        deadline = time.monotonic() + timeout
        last: list[str] = []
        while True:
            answer = self.poll(request_id)
            if answer.status != "pending":
                return answer
            if answer.reasons != last:
                progress(answer)
                last = answer.reasons
            if time.monotonic() + interval > deadline:
                return Answer(
                    DENY, "timeout", [f"no decision within {timeout:.0f}s", *answer.reasons], answer.body
                )
            sleep(interval)

    def close(self) -> None:
        self.http.close()
