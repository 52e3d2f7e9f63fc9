"""What the agent tests share: an emitter that keeps what it was given, a settable clock."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from streams.core.dlq import Headers


class Collector:
    """An Emitter that keeps what it was given."""

    def __init__(self, prefix: str = "x.") -> None:
        self.prefix = prefix
        self.sent: list[tuple[str, bytes | None, bytes | None, Headers]] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> Any:
        self.sent.append((topic, key, value, headers))

    def on(self, suffix: str) -> list[tuple[str, bytes | None, bytes | None, Headers]]:
        return [s for s in self.sent if s[0] == self.prefix + suffix]


class Clock:
    """ctx.now for tests: starts at `now`, moved by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def run(coro: Any) -> Any:
    return asyncio.run(coro)
