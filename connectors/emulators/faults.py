"""Fault injection for the emulators: queue answers (any status, Retry-After) or delays for the
next API calls."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from aiohttp import web


class Faults:
    """POST /__faults {"status": 503, "count": 2, "retry_after": 1} makes the next 2 API calls answer
    503; {"delay": 2, "count": 50} makes the next 50 answer normally, each 2 seconds late (a slow ITSM)."""

    def __init__(self, api_prefixes: tuple[str, ...]) -> None:
        self.prefixes = api_prefixes
        self.queue: deque[tuple[int | None, str | None, float]] = deque()
        self.injected = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/__faults" and request.method == "POST":
            spec = await request.json()
            for _ in range(int(spec.get("count", 1))):
                self.queue.append(
                    (
                        int(spec["status"]) if "status" in spec else None,
                        str(spec["retry_after"]) if "retry_after" in spec else None,
                        float(spec.get("delay", 0)),
                    )
                )
            return web.json_response({"queued": len(self.queue)})
        if self.queue and request.path.startswith(self.prefixes):
            status, retry_after, delay = self.queue.popleft()
            self.injected += 1
            if delay:
                await asyncio.sleep(delay)
            if status is None:
                return await handler(request)
            headers = {"Retry-After": retry_after} if retry_after else {}
            return web.json_response(
                {
                    "error": {"message": f"injected {status}", "detail": "fault injection"},
                    "status": "failure",
                },
                status=status,
                headers=headers,
            )
        return await handler(request)
