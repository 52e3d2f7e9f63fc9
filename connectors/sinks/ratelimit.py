"""A client-side rate limiter per ITSM target: requests per second, concurrency, and server hints."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime

import httpx

from streams.core import telemetry


def retry_after_seconds(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: Retry-After as delay-seconds or an HTTP-date (RFC 9110
    section 10.2.3), else ServiceNow's X-RateLimit-Reset once X-RateLimit-Remaining is 0."""
    wall = now if now is not None else time.time()
    value = (headers.get("Retry-After") or "").strip()
    if value:
        if value.isdigit():
            return float(value)
        try:
            when = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            return max(0.0, when - wall)
    reset = headers.get("X-RateLimit-Reset")
    if reset and reset.strip().isdigit() and headers.get("X-RateLimit-Remaining", "").strip() == "0":
        # ServiceNow sends the epoch second at which the window resets.
        return max(0.0, float(reset) - wall)
    return None


class RateLimiter:
    """Token bucket (rate, burst) plus a concurrency cap, and pauses the server asks for.

    A 429's Retry-After, or ServiceNow's X-RateLimit-Remaining: 0 with X-RateLimit-Reset, hold
    every caller until then, so the next request is not refused too: the server should rarely
    have to say no.
    """

    def __init__(
        self,
        rate_per_second: float,
        burst: int = 1,
        concurrency: int = 4,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
        target: str = "",
    ) -> None:
        if rate_per_second < 0 or burst < 1 or concurrency < 1:
            raise ValueError("rate must be >= 0 (0: unlimited), burst and concurrency >= 1")
        self.rate = rate_per_second
        self.burst = burst
        self.clock, self.sleep, self.wall = clock, sleep, wall
        self.target = target
        self._tokens = float(burst)
        self._last = clock()
        self._paused_until = 0.0
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrency)

    def _wait_time(self) -> float:
        now = self.clock()
        pause = self._paused_until - now
        if self.rate == 0:
            return max(pause, 0.0)
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if pause > 0:
            return pause
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    def acquire(self) -> float:
        """Block until a request may go; returns how long it waited."""
        waited = 0.0
        while True:
            with self._lock:
                wait = self._wait_time()
            if wait <= 0:
                if waited:
                    telemetry.SINK_THROTTLED_SECONDS.labels(self.target).inc(waited)
                return waited
            self.sleep(wait)
            waited += wait

    @contextmanager
    def slot(self) -> Iterator[None]:
        """One request: a concurrency slot and a token."""
        with self._slots:
            self.acquire()
            yield

    def observe(self, status: int, headers: httpx.Headers) -> None:
        """Learn from an answer: pause everyone when the server says the budget is spent."""
        asked = retry_after_seconds(headers, self.wall())
        pause = asked if asked is not None else (1.0 if status == 429 else 0.0)
        if pause > 0:
            with self._lock:
                self._paused_until = max(self._paused_until, self.clock() + pause)
