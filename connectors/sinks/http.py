"""The HTTP status table every sink shares, and retry with backoff and jitter within a deadline."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
from opentelemetry.trace import SpanKind, StatusCode

from connectors.sinks.oauth import TokenError
from connectors.sinks.ratelimit import RateLimiter, retry_after_seconds
from streams.core import telemetry
from streams.core.dlq import ErrorClass

_TRACER = telemetry.tracer("sink.http")

T = TypeVar("T")


@dataclass(frozen=True)
class Verdict:
    """What to do about one HTTP answer."""

    retryable: bool
    error_class: ErrorClass


def classify(status: int) -> Verdict | None:
    """None for success; otherwise whether to retry and the error class (DESIGN.md's table)."""
    if 200 <= status < 300:
        return None
    if status == 429:
        return Verdict(True, ErrorClass.RATE_LIMIT)
    if status == 408 or status >= 500:
        # 5xx response codes are assumed to be recoverable, as is a request timeout.
        return Verdict(True, ErrorClass.NETWORK)
    if status in (401, 403):
        return Verdict(False, ErrorClass.AUTH)
    if status == 409:
        return Verdict(False, ErrorClass.CONFLICT)
    if status in (400, 404, 405, 410, 413, 415, 422):
        return Verdict(False, ErrorClass.VALIDATION)
    return Verdict(False, ErrorClass.UNKNOWN)


class SinkError(Exception):
    """A command could not be delivered; permanent, or retryable but the budget is spent."""

    def __init__(
        self, message: str, error_class: ErrorClass, attempts: int, retryable: bool, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.attempts = attempts
        self.retryable = retryable
        self.status = status


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by a total deadline per command."""

    budget_seconds: float = 120.0
    initial_seconds: float = 0.2
    max_seconds: float = 10.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rng: random.Random | None = None

    def delay(self, attempt: int, asked: float | None) -> float:
        """Wait before attempt+1: the server's ask if any, else jittered exponential."""
        if asked is not None:
            return min(asked, self.max_seconds * 6)
        cap = min(self.max_seconds, self.initial_seconds * (2 ** (attempt - 1)))
        return (self.rng or random).uniform(cap / 2, cap)


class HttpCaller:
    """Runs one logical request with the status table and retry policy; counts every attempt."""

    def __init__(
        self, client: httpx.Client, target: str, policy: RetryPolicy, limiter: RateLimiter | None = None
    ) -> None:
        self.client = client
        self.target = target
        self.policy = policy
        self.limiter = limiter
        self.log = telemetry.get_logger(f"sink.{target}")
        # Attempts since reset(): one command may take several calls (lookup, create, ...).
        self.attempts = 0
        # When the current command's retry budget ends: one deadline across all its calls and
        # lookup rounds (None: each call has the whole budget, outside a command).
        self.deadline: float | None = None

    def reset(self) -> None:
        """A new command: attempts from zero, and its retry budget starts now."""
        self.attempts = 0
        self.deadline = self.policy.clock() + self.policy.budget_seconds

    def _request(self, method: str, url: str, attempt: int, kwargs: dict[str, object]) -> httpx.Response:
        """One HTTP request in a client span of its own (a child of the command's span)."""
        with _TRACER.start_as_current_span(f"{self.target} {method}", kind=SpanKind.CLIENT) as span:
            span.set_attribute("http.request.method", method)
            span.set_attribute("url.path", httpx.URL(url).path if "://" in url else url.split("?", 1)[0])
            span.set_attribute("http.request.resend_count", attempt - 1)
            resp = self.client.request(method, url, **kwargs)  # type: ignore[arg-type]
            span.set_attribute("http.response.status_code", resp.status_code)
            if resp.status_code >= 400:
                span.set_status(StatusCode.ERROR)
            return resp

    def call(self, method: str, url: str, retry: bool = True, **kwargs: object) -> tuple[httpx.Response, int]:
        """The successful response and the attempts it took, or SinkError.

        retry=False for a request that is not idempotent (a create): a retryable failure is
        raised at once, so the caller can look again before repeating it.
        """
        deadline = (
            self.deadline if self.deadline is not None else self.policy.clock() + self.policy.budget_seconds
        )
        attempt = 0
        verdict: Verdict | None
        while True:
            attempt += 1
            t0 = time.perf_counter()
            try:
                if self.limiter is not None:
                    with self.limiter.slot():
                        resp = self._request(method, url, attempt, kwargs)
                    self.limiter.observe(resp.status_code, resp.headers)
                else:
                    resp = self._request(method, url, attempt, kwargs)
            except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError) as exc:
                # The command's data cannot make a request at all (an over-long or unencodable URL
                # or header): no retry can help, and it must not stop the sink.
                self.attempts += attempt
                raise SinkError(
                    f"cannot build {method} request: {type(exc).__name__}: {str(exc)[:200]}",
                    ErrorClass.VALIDATION,
                    self.attempts,
                    False,
                ) from exc
            except TokenError as exc:
                # The credentials were refused: permanent. The token endpoint is down: retry.
                telemetry.SINK_REQUESTS.labels(self.target, "token").inc()
                refused = exc.status is not None and exc.status < 500
                if refused:
                    telemetry.AUTH_FAILURES.labels(f"sink-{self.target}", "oauth_token").inc()
                verdict = Verdict(not refused, ErrorClass.AUTH if refused else ErrorClass.NETWORK)
                asked, detail, status = None, f"OAuth token: {exc}", exc.status
            except httpx.TransportError as exc:
                telemetry.SINK_REQUESTS.labels(self.target, "network").inc()
                verdict, asked, detail, status = (
                    Verdict(True, ErrorClass.NETWORK),
                    None,
                    f"{type(exc).__name__}: {exc}",
                    None,
                )
            else:
                telemetry.SINK_REQUEST_SECONDS.labels(self.target).observe(time.perf_counter() - t0)
                telemetry.SINK_REQUESTS.labels(self.target, f"{resp.status_code // 100}xx").inc()
                if resp.status_code in (401, 403):
                    telemetry.AUTH_FAILURES.labels(f"sink-{self.target}", f"itsm_{resp.status_code}").inc()
                verdict = classify(resp.status_code)
                if verdict is None:
                    self.attempts += attempt
                    return resp, attempt
                asked, status = retry_after_seconds(resp.headers), resp.status_code
                detail = f"HTTP {resp.status_code} from {method} {url}: {resp.text[:300]}"
            if not verdict.retryable or not retry:
                self.attempts += attempt
                raise SinkError(detail, verdict.error_class, self.attempts, verdict.retryable, status)
            # A limiter already holds every caller for the server's Retry-After: no double wait.
            wait = (
                0.0 if self.limiter is not None and asked is not None else self.policy.delay(attempt, asked)
            )
            # With a limiter the next attempt waits out the server's whole ask: that counts too.
            needed = asked if self.limiter is not None and asked is not None else wait
            if self.policy.clock() + needed > deadline:
                self.attempts += attempt
                raise SinkError(
                    f"retry budget of {self.policy.budget_seconds}s spent after "
                    f"{attempt} attempts; last: {detail}",
                    verdict.error_class,
                    self.attempts,
                    True,
                    status,
                )
            self.log.warning("retrying", attempt=attempt, wait_s=round(wait, 3), reason=detail[:200])
            self.policy.sleep(wait)


def with_lookup_retries(policy: RetryPolicy, once: Callable[[], T], deadline: float | None = None) -> T:
    """Run a lookup-then-write step; after a retryable failure, start over from the lookup.

    A create whose answer was lost may have happened: repeating the POST blindly would make a
    second record, looking again first never does. Bounded by the command's deadline (the
    caller's, shared with every call inside), else the policy's budget from now.
    """
    end = deadline if deadline is not None else policy.clock() + policy.budget_seconds
    rounds = 0
    while True:
        try:
            return once()
        except SinkError as exc:
            rounds += 1
            wait = policy.delay(rounds, None)
            if not exc.retryable or policy.clock() + wait > end:
                raise
            policy.sleep(wait)
