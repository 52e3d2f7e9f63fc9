"""The Prometheus poller's contract with the HTTP API where a real Prometheus cannot be made to
answer so (it never rate-limits): a 429/503 with Retry-After holds the next request and keeps the
cursor; an error answer is named; nothing is resolved by a failed pass."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.sources.prometheus import PollError, PrometheusPoller
from streams.core.models import Alert, AlertStatus

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
FIRING = {
    "status": "success",
    "data": {
        "alerts": [
            {
                "labels": {"alertname": "A", "instance": "h:1"},
                "annotations": {},
                "state": "firing",
                "activeAt": "2026-12-02T11:59:00Z",
                "value": "1e+00",
            }
        ]
    },
}


def poller(tmp_path: Path, answers: list[httpx.Response], published: list[list[Alert]]) -> PrometheusPoller:
    replies = iter(answers)

    def handler(_request: httpx.Request) -> httpx.Response:
        return next(replies)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    return PrometheusPoller(
        "http://prom:9090", published.append, tmp_path / "c.json", min_interval=0.0, client=client
    )


def test_retry_after_holds_the_next_request_and_a_failed_pass_resolves_nothing(tmp_path: Path) -> None:
    published: list[list[Alert]] = []
    p = poller(
        tmp_path,
        [
            httpx.Response(200, json=FIRING),
            httpx.Response(429, headers={"Retry-After": "2"}),
            httpx.Response(200, json={"status": "error", "errorType": "timeout", "error": "query timed out"}),
        ],
        published,
    )
    assert p.poll_once(NOW).published == 1
    with pytest.raises(PollError, match="429; next request in 2s"):
        p.poll_once(NOW)
    assert p._next_request > 0  # the server's wait is kept for the next request
    p._next_request = 0.0
    with pytest.raises(PollError, match="timeout: query timed out"):
        p.poll_once(NOW)
    assert len(published) == 1 and list(p.cursor)  # still firing as far as we know


def test_an_unreadable_alert_is_skipped_and_the_rest_published(tmp_path: Path) -> None:
    body: dict[str, Any] = {
        "status": "success",
        "data": {"alerts": [*FIRING["data"]["alerts"], {"labels": {}, "state": "firing"}]},
    }
    published: list[list[Alert]] = []
    done = poller(tmp_path, [httpx.Response(200, json=body)], published).poll_once(NOW)
    assert (done.firing, done.published, done.skipped) == (1, 1, 1)
    assert published[0][0].status is AlertStatus.FIRING and published[0][0].starts_at < NOW
