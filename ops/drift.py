"""One CMDB drift reconciliation pass: read the CMDB (cmdb.ci), what monitoring saw (alerts.raw
over the period, Prometheus' `up` series), classify (streams/stages/drift.py), publish the drift
to the compacted cmdb.drift (tombstones for drift that is gone) and, when asked, the proposed
corrections to cmdb.ci.updates."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ops.dlq import read_all
from ops.runtime import CommandError
from streams.core.models import Alert, CMDBDrift, ConfigurationItem
from streams.core.serde import AvroSerde, SerdeError
from streams.core.settings import Settings
from streams.stages.drift import Observation, carry, classify, from_alert, from_target, proposal


@dataclass
class Pass:
    """What one pass found and did."""

    cis: int = 0
    alerts: int = 0
    undecodable: int = 0
    targets: int = 0
    drift: list[CMDBDrift] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    proposed: int = 0


def latest(settings: Settings, topic: str) -> Iterator[tuple[bytes, bytes | None]]:
    """(key, value) of the newest record per key of a compacted topic (value None: deleted)."""
    newest: dict[bytes, bytes | None] = {}
    for msg in read_all(settings, topic):
        key = msg.key()
        if key is not None:
            newest[key] = msg.value()
    yield from newest.items()


def prometheus_targets(url: str, now: datetime, timeout: float = 10.0) -> list[Observation]:
    """Every series of `up` a Prometheus has now (its scrape targets, up or down), as observations."""
    import httpx

    try:
        reply = httpx.get(f"{url.rstrip('/')}/api/v1/query", params={"query": "up"}, timeout=timeout)
        reply.raise_for_status()
        body = reply.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise CommandError(f"Prometheus at {url}: {exc}; is --prometheus right and is it running?") from None
    if body.get("status") != "success":
        raise CommandError(f"Prometheus at {url} answered {body.get('status')}: {body.get('error', '')}")
    out = []
    for series in body.get("data", {}).get("result", []):
        seen = from_target(series.get("metric", {}), now)
        if seen is not None:
            out.append(seen)
    return out


def run_pass(
    settings: Settings,
    serde: AvroSerde,
    producer: Any,
    now: datetime,
    period: timedelta,
    prometheus: str | None,
    propose: bool,
) -> Pass:
    from streams.core.kafka import publish_batch
    from streams.core.messages import Output, encoded
    from streams.core.topics import ALERTS_RAW, CMDB_CI, CMDB_CI_UPDATES, CMDB_DRIFT

    result = Pass()
    cis: dict[str, ConfigurationItem] = {}
    for _key, value in latest(settings, settings.topic(CMDB_CI)):
        if value is None:
            continue
        try:
            ci = serde.decode(value, ConfigurationItem)
        except SerdeError:
            result.undecodable += 1
            continue
        cis[ci.ci_id] = ci
    result.cis = len(cis)
    observations: list[Observation] = []
    owners: dict[str, str] = {}
    for msg in read_all(settings, settings.topic(ALERTS_RAW), since=now - period):
        try:
            alert = serde.decode(msg.value() or b"", Alert)
        except SerdeError:
            result.undecodable += 1
            continue
        result.alerts += 1
        seen = from_alert(alert)
        if seen is not None:
            observations.append(seen)
            if seen.owner:
                owners[seen.host] = seen.owner
    if prometheus:
        targets = prometheus_targets(prometheus, now)
        result.targets = len(targets)
        observations += targets
        owners.update({t.host: t.owner for t in targets if t.owner})
    found = classify(cis.values(), observations, now, period.total_seconds())
    previous: dict[str, CMDBDrift] = {}
    for key, value in latest(settings, settings.topic(CMDB_DRIFT)):
        if value is not None:
            try:
                previous[key.decode()] = serde.decode(value, CMDBDrift)
            except SerdeError:
                result.undecodable += 1
    result.drift, result.resolved = carry(found, previous)
    drift_topic = settings.topic(CMDB_DRIFT)
    outputs: list[Output] = [encoded(serde, drift_topic, d.drift_id, d) for d in result.drift]
    outputs += [Output(drift_topic, key.encode(), None) for key in result.resolved]
    if propose:
        updates = settings.topic(CMDB_CI_UPDATES)
        for d in result.drift:
            fix = proposal(d, cis.get(d.ci_id or ""), owners.get(d.host or ""), now)
            if fix is not None:
                outputs.append(encoded(serde, updates, fix.ci_id, fix))
                result.proposed += 1
    publish_batch(producer, outputs)
    if result.undecodable:
        print(f"({result.undecodable} undecodable record(s) skipped)", file=sys.stderr)
    return result


def current(settings: Settings, serde: AvroSerde) -> list[CMDBDrift]:
    """The drift cmdb.drift holds now."""
    from streams.core.topics import CMDB_DRIFT

    out = []
    for _key, value in latest(settings, settings.topic(CMDB_DRIFT)):
        if value is not None:
            out.append(serde.decode(value, CMDBDrift))
    return sorted(out, key=lambda d: d.drift_id)
