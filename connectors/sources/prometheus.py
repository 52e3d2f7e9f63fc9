"""A polling source for a Prometheus that cannot push (no Alertmanager to point at the gateway):
its active alerts from `GET /api/v1/alerts`, as canonical Alerts on alerts.raw.

Follows the Prometheus HTTP API (prometheus.io/docs/prometheus/latest/querying/api/, "Alerts"):
the answer is `{"status": "success", "data": {"alerts": [...]}}`, each alert with `labels`,
`annotations`, `state` ("pending" or "firing"; inactive alerts are not listed), `activeAt` (RFC 3339,
when the alert became pending) and `value`. An error answer has `status: "error"`, `errorType` and
`error`. Prometheus lists only active alerts: one that is gone has resolved (or its rule was
removed), so an alert this poller published as firing and no longer sees is published RESOLVED
with `ends_at` = the time of the poll that missed it ("resolved when gone").

The cursor is the set of alerts published as firing, with when each was last published, in a JSON
state file written only after the broker acknowledged the pass's records: a crash re-publishes
(the worker deduplicates), never loses a resolution. Firing alerts are published again every
`repeat` seconds, as Alertmanager repeats them, so the worker's no-signal timeout does not resolve
an alert that is still firing. Requests are spaced by `min_interval` (the rate limit), and a 429 or
503 answer's Retry-After is honoured before the next one."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from connectors.sinks.ratelimit import retry_after_seconds
from connectors.sources.alertmanager.mapping import labelset_fingerprint
from streams.core.models import Alert, AlertSource, AlertStatus, bounded_fingerprint, to_utc
from streams.core.timeutil import parse_rfc3339, zone_of_text


class PollError(Exception):
    """The Prometheus could not be read this pass (the message says why); the cursor is kept."""


def to_alert(raw: dict[str, Any], url: str, now: datetime) -> Alert:
    """One active alert of /api/v1/alerts as a canonical Alert (fingerprinted like Alertmanager's,
    so the same alert pushed through an Alertmanager and polled here is one alert)."""
    labels = {k: v for k, v in (raw.get("labels") or {}).items() if v != ""}
    if not labels:
        raise ValueError("an alert without labels")
    annotations = raw.get("annotations") or {}
    active = raw.get("activeAt")
    starts = to_utc(parse_rfc3339(active, "activeAt")) if active else now
    return Alert(
        fingerprint=bounded_fingerprint(labelset_fingerprint(labels)),
        source=AlertSource.PROMETHEUS,
        source_instance=url,
        status=AlertStatus.FIRING,
        name=(labels.get("alertname") or ",".join(f"{k}={v}" for k, v in sorted(labels.items())))[:250],
        severity=labels.get("severity", ""),
        summary=annotations.get("summary", annotations.get("message", "")),
        description=annotations.get("description", ""),
        labels=labels,
        annotations=annotations,
        starts_at=min(starts, now),
        received_at=now,
        source_zone=zone_of_text(active),
    )


@dataclass
class Pass:
    firing: int = 0  # active alerts seen
    published: int = 0  # new or changed, or repeated
    resolved: int = 0
    skipped: int = 0  # unreadable alerts (named in the log)


class PrometheusPoller:
    """One Prometheus' alerts onto alerts.raw, pass by pass."""

    def __init__(
        self,
        url: str,
        publish: Callable[[list[Alert]], None],
        state_file: Path,
        *,
        include_pending: bool = False,
        repeat: float = 3600.0,
        min_interval: float = 1.0,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
        log: Any = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.publish = publish
        self.state_file = state_file
        self.include_pending = include_pending
        self.repeat = repeat
        self.min_interval = min_interval
        self.client = client or httpx.Client(timeout=timeout)  # TLS verified (httpx's default)
        self.log = log
        self._next_request = 0.0
        self.cursor: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise PollError(f"state file {self.state_file}: {exc}; move it aside to start afresh") from None
        if data.get("url") != self.url:
            raise PollError(
                f"state file {self.state_file} belongs to {data.get('url')}, not {self.url}: "
                "one state file per Prometheus"
            )
        return dict(data.get("alerts", {}))

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": self.url, "alerts": self.cursor}, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.state_file)

    def fetch(self) -> list[dict[str, Any]]:
        """The active alerts, after the rate limit's spacing and any Retry-After the server asked for."""
        wait = self._next_request - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._next_request = time.monotonic() + self.min_interval
        try:
            reply = self.client.get(f"{self.url}/api/v1/alerts")
        except httpx.HTTPError as exc:
            raise PollError(f"{self.url}: {type(exc).__name__}: {exc}") from None
        if reply.status_code in (429, 503):
            delay = retry_after_seconds(reply.headers) or self.min_interval
            self._next_request = time.monotonic() + delay
            raise PollError(f"{self.url} answered {reply.status_code}; next request in {delay:.0f}s")
        try:
            body = reply.json()
        except ValueError:
            raise PollError(f"{self.url} answered {reply.status_code} without JSON") from None
        if reply.status_code != 200 or body.get("status") != "success":
            raise PollError(
                f"{self.url} answered {reply.status_code}: {body.get('errorType')}: {body.get('error')}"
            )
        return list(body.get("data", {}).get("alerts", []))

    def poll_once(self, now: datetime) -> Pass:
        """One pass: publish what is new, changed or due a repeat, and what is gone as resolved; the
        cursor moves only once publish returned (the broker acknowledged)."""
        result = Pass()
        seen: dict[str, Alert] = {}
        for raw in self.fetch():
            if raw.get("state") != "firing" and not (self.include_pending and raw.get("state") == "pending"):
                continue
            try:
                alert = to_alert(raw, self.url, now)
            except ValueError as exc:
                result.skipped += 1
                if self.log is not None:
                    self.log.warning("poll_alert_skipped", url=self.url, error=str(exc)[:200])
                continue
            seen[alert.fingerprint] = alert
        result.firing = len(seen)
        out: list[Alert] = []
        cursor: dict[str, dict[str, Any]] = {}
        stamp = now.timestamp()
        for fp, alert in seen.items():
            digest = json.dumps(
                [alert.labels, alert.annotations, alert.starts_at.isoformat()], sort_keys=True
            )
            known = self.cursor.get(fp)
            due = known is None or known["digest"] != digest or stamp - known["published_at"] >= self.repeat
            if due:
                out.append(alert)
            cursor[fp] = {
                "digest": digest,
                "published_at": stamp if due else known["published_at"],  # type: ignore[index]
                "alert": alert.model_dump(mode="json"),
            }
        result.published = len(out)
        for fp, known in self.cursor.items():
            if fp in seen:
                continue
            gone = Alert.model_validate(known["alert"])
            out.append(
                gone.model_copy(update={"status": AlertStatus.RESOLVED, "ends_at": now, "received_at": now})
            )
            result.resolved += 1
        if out:
            self.publish(out)
        self.cursor = cursor
        self._save()
        return result
