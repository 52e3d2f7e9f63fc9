"""Fault injection for the emulators: queue answers (any status, Retry-After) or delays for the
next API calls."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Fault:
    status: int | None
    retry_after: str | None
    delay: float
    lost: bool
    method: str | None
    path: str | None

    def matches(self, request: web.Request) -> bool:
        return (self.method is None or request.method == self.method) and (
            self.path is None or request.path == self.path
        )


class Faults:
    """POST /__faults {"status": 503, "count": 2, "retry_after": 1} makes the next 2 API calls answer
    503; {"delay": 2, "count": 50} makes the next 50 answer normally, each 2 seconds late (a slow ITSM);
    {"status": 504, "lost": true} lets the next call take effect and then answers 504 (an answer lost
    on its way back, as a proxy timing out after the ITSM did the work). "method" and "path" aim a
    fault at the calls that match them exactly; other calls pass."""

    def __init__(self, api_prefixes: tuple[str, ...]) -> None:
        self.prefixes = api_prefixes
        self.queue: list[Fault] = []
        self.injected = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/__faults" and request.method == "POST":
            spec = await request.json()
            fault = Fault(
                int(spec["status"]) if "status" in spec else None,
                str(spec["retry_after"]) if "retry_after" in spec else None,
                float(spec.get("delay", 0)),
                bool(spec.get("lost", False)),
                spec.get("method"),
                spec.get("path"),
            )
            self.queue.extend([fault] * int(spec.get("count", 1)))
            return web.json_response({"queued": len(self.queue)})
        if not request.path.startswith(self.prefixes):
            return await handler(request)
        due = next((f for f in self.queue if f.matches(request)), None)
        if due is None:
            return await handler(request)
        self.queue.remove(due)
        self.injected += 1
        if due.delay:
            await asyncio.sleep(due.delay)
        if due.status is None:
            return await handler(request)
        if due.lost:
            await handler(request)
        headers = {"Retry-After": due.retry_after} if due.retry_after else {}
        return web.json_response(
            {
                "error": {"message": f"injected {due.status}", "detail": "fault injection"},
                "status": "failure",
            },
            status=due.status,
            headers=headers,
        )
