"""The client-side limiter (token bucket, concurrency, server pauses) and the emulator's limit."""

from __future__ import annotations

import httpx

from connectors.devitsm.server import FixedWindowLimit
from connectors.sinks.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def test_the_bucket_spaces_requests_at_the_configured_rate() -> None:
    c = Clock()
    lim = RateLimiter(10, burst=1, clock=c.now, sleep=c.sleep, wall=c.now)
    for _ in range(11):
        lim.acquire()
    assert abs((c.t - 1000.0) - 1.0) < 1e-9  # 11 requests at 10/s: the first free, ten more in 1 s


def test_burst_allows_that_many_at_once() -> None:
    c = Clock()
    lim = RateLimiter(5, burst=5, clock=c.now, sleep=c.sleep, wall=c.now)
    for _ in range(5):
        assert lim.acquire() == 0.0
    assert lim.acquire() > 0


def test_a_429_retry_after_pauses_every_caller() -> None:
    c = Clock()
    lim = RateLimiter(0, clock=c.now, sleep=c.sleep, wall=c.now)
    lim.observe(429, httpx.Headers({"Retry-After": "3"}))
    assert lim.acquire() == 3.0


def test_servicenow_headers_pause_before_the_server_refuses() -> None:
    c = Clock()
    lim = RateLimiter(0, clock=c.now, sleep=c.sleep, wall=c.now)
    lim.observe(200, httpx.Headers({"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": "1002"}))
    assert lim.acquire() == 0.0
    lim.observe(200, httpx.Headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1002"}))
    assert lim.acquire() == 2.0


def test_the_emulator_allows_limit_per_second_then_refuses_with_retry_after() -> None:
    now = [5000.25]
    limit = FixedWindowLimit(3, wall=lambda: now[0])
    answers = [limit.take() for _ in range(4)]
    assert [ok for ok, _ in answers] == [True, True, True, False]
    assert answers[0][1] == {
        "X-RateLimit-Limit": "3",
        "X-RateLimit-Remaining": "2",
        "X-RateLimit-Reset": "5001",
    }
    assert answers[3][1]["Retry-After"] == "1" and answers[3][1]["X-RateLimit-Remaining"] == "0"
    now[0] = 5001.0
    assert limit.take()[0] is True
