"""The status table over every HTTP status code, Retry-After parsing, and retry within a budget."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import httpx
import pytest

from connectors.sinks.http import HttpCaller, RetryPolicy, SinkError, Verdict, classify, retry_after_seconds
from streams.core.dlq import ErrorClass


def expected(status: int) -> Verdict | None:
    if 200 <= status <= 299:
        return None
    if status == 429:
        return Verdict(True, ErrorClass.RATE_LIMIT)
    if status == 408 or 500 <= status <= 599:
        return Verdict(True, ErrorClass.NETWORK)
    if status in (401, 403):
        return Verdict(False, ErrorClass.AUTH)
    if status == 409:
        return Verdict(False, ErrorClass.CONFLICT)
    if status in (400, 404, 405, 410, 413, 415, 422):
        return Verdict(False, ErrorClass.VALIDATION)
    return Verdict(False, ErrorClass.UNKNOWN)


@pytest.mark.parametrize("status", range(100, 600))
def test_status_table(status: int) -> None:
    assert classify(status) == expected(status)


def test_every_4xx_but_408_and_429_is_permanent() -> None:
    assert [s for s in range(400, 500) if classify(s).retryable] == [408, 429]  # type: ignore[union-attr]


def test_retry_after_in_seconds_and_as_http_date() -> None:
    assert retry_after_seconds(httpx.Headers({"Retry-After": "7"})) == 7.0
    date = httpx.Headers({"Retry-After": "Fri, 27 Nov 2026 09:00:10 GMT"})
    nine = datetime(2026, 11, 27, 9, 0, tzinfo=UTC).timestamp()
    assert retry_after_seconds(date, now=nine) == 10.0
    assert retry_after_seconds(httpx.Headers({"Retry-After": "soon"})) is None


def test_servicenow_rate_limit_reset_header_counts_when_nothing_remains() -> None:
    h = httpx.Headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1000"})
    assert retry_after_seconds(h, now=990.0) == 10.0
    assert (
        retry_after_seconds(
            httpx.Headers({"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": "1000"}), now=990.0
        )
        is None
    )


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s

    def now(self) -> float:
        return self.t


def caller(
    responses: list[httpx.Response | Exception], budget: float = 60.0
) -> tuple[HttpCaller, FakeClock, list[int]]:
    clock = FakeClock()
    seen: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        item = responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    client = httpx.Client(transport=httpx.MockTransport(handle), base_url="http://itsm.test")
    policy = RetryPolicy(budget, 0.2, 10.0, sleep=clock.sleep, clock=clock.now, rng=random.Random(1))
    return HttpCaller(client, "test", policy), clock, seen


def test_retryable_answers_are_retried_until_success() -> None:
    c, clock, seen = caller(
        [
            httpx.Response(503),
            httpx.ConnectError("refused"),
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(201, json={"result": {}}),
        ]
    )
    resp, attempts = c.call("POST", "/x")
    assert resp.status_code == 201 and attempts == 4 and len(seen) == 4
    assert clock.sleeps[2] == 3.0  # honoured Retry-After
    assert 0.1 <= clock.sleeps[0] <= 0.2 and 0.2 <= clock.sleeps[1] <= 0.4  # jittered exponential


def test_a_permanent_answer_is_not_retried() -> None:
    c, _, seen = caller([httpx.Response(400, json={"error": {"message": "bad"}})])
    with pytest.raises(SinkError) as info:
        c.call("POST", "/x")
    assert info.value.error_class is ErrorClass.VALIDATION and not info.value.retryable
    assert info.value.attempts == 1 and len(seen) == 1
    assert "HTTP 400" in str(info.value)


def test_the_retry_budget_bounds_the_attempts() -> None:
    c, clock, seen = caller([httpx.Response(500)] * 100, budget=5.0)
    with pytest.raises(SinkError) as info:
        c.call("GET", "/x")
    assert info.value.retryable and "retry budget" in str(info.value)
    assert clock.t <= 5.0
    assert info.value.attempts == len(seen) > 2


def test_one_deadline_spans_every_call_and_lookup_round_of_a_command() -> None:
    # A slow ITSM: every answer is a 503 after 4 s. Before, each call and each lookup round had the
    # whole budget of its own, and one command ran past it (204 s with a 120 s budget).
    from connectors.sinks.http import with_lookup_retries

    clock = FakeClock()

    def handle(request: httpx.Request) -> httpx.Response:
        clock.t += 4.0
        return httpx.Response(503)

    client = httpx.Client(transport=httpx.MockTransport(handle), base_url="http://itsm.test")
    policy = RetryPolicy(30.0, 0.2, 10.0, sleep=clock.sleep, clock=clock.now, rng=random.Random(1))
    c = HttpCaller(client, "test", policy)
    c.reset()

    def lookup_then_create() -> None:
        c.call("GET", "/lookup")
        c.call("POST", "/create", retry=False)

    with pytest.raises(SinkError) as info:
        with_lookup_retries(policy, lookup_then_create, c.deadline)
    assert info.value.retryable
    assert clock.t <= 30.0 + 4.0  # the budget, plus at most the one request in flight when it ran out


def test_a_limiter_honours_retry_after_as_an_http_date() -> None:
    from connectors.sinks.ratelimit import RateLimiter

    clock = FakeClock()
    wall = datetime(2026, 11, 27, 9, 0, tzinfo=UTC).timestamp()
    limiter = RateLimiter(0, 1, 1, clock=clock.now, sleep=clock.sleep, wall=lambda: wall)
    limiter.observe(429, httpx.Headers({"Retry-After": "Fri, 27 Nov 2026 09:00:30 GMT"}))
    assert limiter.acquire() == 30.0  # not the 1 s it fell back to before
