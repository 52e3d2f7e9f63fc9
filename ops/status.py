"""The pipeline's status in one place: every integration's health, throughput and last error (from
its /metrics and /readyz), consumer lag, dead-letter depth and the latest dead letters, and SLO
compliance. `itsmctl status` prints one snapshot; `itsmctl status serve` refreshes it on an
interval, serves it as JSON and as a live page, and exports the lag in kafka_exporter's names.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from ops import slo as slo_file
from ops.lag import GroupInfo, LagReader, PartitionLag
from streams.core.dlq import header_map
from streams.core.kafka import reader as kafka_reader
from streams.core.settings import Settings

Sample = tuple[str, Mapping[str, str], float]

# Per kind of integration: the counters whose sum is its throughput (records it finished).
THROUGHPUT = {
    "gateway": ("itsm_pipeline_webhook_alerts_total",),
    "worker": ("itsm_pipeline_alert_outcomes_total", "itsm_pipeline_change_inputs_total"),
    "sink": ("itsm_pipeline_sink_commands_total",),
    "gate": ("itsm_pipeline_gate_decisions_total",),
    "changes-sync": ("itsm_pipeline_itsm_changes_synced_total",),
    "incidents-sync": ("itsm_pipeline_records_in_total",),
}
ERRORS = ("itsm_pipeline_dead_letters_total",)  # labels: stage, error_class
RECENT_LETTERS = 5  # per DLQ partition


def kind_of(name: str) -> str:
    """An integration's kind from its name: sink-servicenow is a sink, and so on."""
    return "sink" if name.startswith("sink") else name if name in THROUGHPUT else "other"


def parse_targets(text: str) -> dict[str, str]:
    """NAME=URL[,NAME=URL...] (ITSM_STATUS_SCRAPE or --scrape): the processes to watch."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, url = part.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise ValueError(f"scrape target {part!r} is not NAME=http://host:port")
        out[name.strip()] = url.strip().rstrip("/")
    return out


def samples_of(text: str) -> list[Sample]:
    out: list[Sample] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append((s.name, s.labels, float(s.value)))
    return out


@dataclass
class Integration:
    """One watched process, as of its last scrape."""

    name: str
    url: str
    kind: str
    health: str = "unknown"  # up | not_ready | down | unknown
    checks: dict[str, str] = field(default_factory=dict)
    processed: float = 0.0
    throughput: float = 0.0  # records per second between the last two scrapes
    last_error: dict[str, Any] | None = None
    scraped_at: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)  # a gateway's, per source
    _errors: dict[tuple[str, str], float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "url": self.url,
            "health": self.health,
            "checks": self.checks,
            "processed": self.processed,
            "throughput_per_second": round(self.throughput, 2),
            "last_error": self.last_error,
            "routes": sorted(self.routes.values(), key=lambda r: str(r["source"])),
        }

    def observe(self, samples: list[Sample], at: float) -> None:
        """A new scrape: throughput from the counters' growth, the last error from the error
        counters that grew (by class and stage)."""
        names = THROUGHPUT.get(self.kind, ("itsm_pipeline_records_in_total",))
        processed = sum(v for n, _l, v in samples if n in names)
        first = not self.scraped_at
        if self.scraped_at and at > self.scraped_at:
            # A counter that went down: the process restarted; its rate since is unknown yet.
            grew = processed - self.processed
            self.throughput = grew / (at - self.scraped_at) if grew >= 0 else 0.0
        if self.kind == "gateway":
            self._observe_routes(samples, at)
        self.processed, self.scraped_at, self.samples = processed, at, samples
        for name, labels, value in samples:
            if name not in ERRORS:
                continue
            key = (labels.get("stage", ""), labels.get("error_class", ""))
            # A counter that grew since the last scrape is news; at the first scrape, what the
            # process counted before shows too (one of them), seen then.
            if value > self._errors.get(key, 0.0) and (not first or not self.last_error):
                self.last_error = {
                    "class": key[1],
                    "stage": key[0],
                    "count": value,
                    "seen_at": datetime.fromtimestamp(at, UTC).isoformat(),
                }
            self._errors[key] = value

    def _observe_routes(self, samples: list[Sample], at: float) -> None:
        """Each webhook source of a gateway: alerts published, their rate, requests refused."""
        alerts: dict[str, float] = {}
        refused: dict[str, float] = {}
        for name, labels, value in samples:
            source = labels.get("source", "")
            if name == "itsm_pipeline_webhook_alerts_total":
                alerts[source] = alerts.get(source, 0.0) + value
            elif name == "itsm_pipeline_webhook_requests_total" and labels.get("outcome") != "accepted":
                refused[source] = refused.get(source, 0.0) + value
        for source in sorted(set(alerts) | set(refused)):
            before = self.routes.get(source)
            count = alerts.get(source, 0.0)
            rate = 0.0
            if before is not None and at > self.scraped_at and count >= before["processed"]:
                rate = (count - before["processed"]) / (at - self.scraped_at)
            self.routes[source] = {
                "source": source,
                "processed": count,
                "throughput_per_second": round(rate, 2),
                "refused": refused.get(source, 0.0),
            }

    def unreachable(self, why: str, at: float) -> None:
        self.health, self.throughput, self.checks = "down", 0.0, {}
        self.last_error = {
            "class": "network",
            "stage": "scrape",
            "message": why,
            "seen_at": datetime.fromtimestamp(at, UTC).isoformat(),
        }


class StatusService:
    """Keeps the latest status; refresh() takes a new one (scrapes, lag, dead letters)."""

    def __init__(self, settings: Settings, targets: Mapping[str, str], slos: list[slo_file.Slo]) -> None:
        self.settings = settings
        self.integrations = {n: Integration(n, u, kind_of(n)) for n, u in targets.items()}
        self.slos = slos
        self.lag = LagReader(settings)
        self.groups: list[GroupInfo] = []
        self.partitions: list[PartitionLag] = []
        self.dlq: list[dict[str, Any]] = []
        self.letters: list[dict[str, Any]] = []
        self.broker_error: str | None = None
        self.at = 0.0
        self.lock = threading.Lock()
        self._http = httpx.Client(timeout=3.0)
        self._dlq_reader: Consumer | None = None

    def close(self) -> None:
        self.lag.close()
        self._http.close()
        if self._dlq_reader is not None:
            self._dlq_reader.close()

    # -- one refresh ------------------------------------------------------------------------

    def refresh(self) -> None:
        at = time.time()
        for item in self.integrations.values():
            self._scrape(item, at)
        try:
            groups = self.lag.groups()
            partitions = self.lag.lag([g.group for g in groups])
            dlq, letters = self._dead_letters()
            broker_error = None
        except Exception as exc:  # noqa: BLE001 - a broker that does not answer is a status to show
            groups, partitions, dlq, letters = self.groups, self.partitions, self.dlq, self.letters
            broker_error = f"{type(exc).__name__}: {exc}"
        with self.lock:
            self.groups, self.partitions, self.dlq, self.letters = groups, partitions, dlq, letters
            self.broker_error = broker_error
            self.at = at

    def _scrape(self, item: Integration, at: float) -> None:
        try:
            metrics = self._http.get(f"{item.url}/metrics")
            metrics.raise_for_status()
            ready = self._http.get(f"{item.url}/readyz")
        except httpx.HTTPError as exc:
            item.unreachable(f"{type(exc).__name__}: {exc}"[:300], at)
            return
        try:
            body = ready.json()
            item.checks = {str(k): str(v) for k, v in (body.get("checks") or {}).items()}
        except ValueError:
            item.checks = {}
        item.health = "up" if ready.status_code == 200 else "not_ready"
        if item.last_error and item.last_error.get("stage") == "scrape":
            item.last_error = None  # reached again: the outage was ours to see, not its error
        item.observe(samples_of(metrics.text), at)

    def _dead_letters(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        from ops.dlq import dlq_topics

        if self._dlq_reader is None:
            self._dlq_reader = kafka_reader(self.settings, "status")
        reader = self._dlq_reader
        depth: list[dict[str, Any]] = []
        wanted: list[TopicPartition] = []
        ends: dict[tuple[str, int], int] = {}
        meta = reader.list_topics(timeout=5)
        parts: dict[str, list[tuple[str, int]]] = {}
        for topic in dlq_topics(self.settings):
            info = meta.topics.get(topic)
            if info is not None and info.error is None:
                parts[topic] = [(topic, p) for p in info.partitions]
        every = [tp for tps in parts.values() for tp in tps]
        # Two batched requests for every DLQ partition's first and next offset.
        lows, highs = self.lag.start_offsets(every), self.lag.end_offsets(every)
        for topic, tps in parts.items():
            kept = 0
            for tp in tps:
                low, high = lows.get(tp, 0), highs.get(tp, 0)
                kept += high - low
                if high > low:
                    wanted.append(TopicPartition(tp[0], tp[1], max(low, high - RECENT_LETTERS)))
                    ends[tp] = high
            depth.append({"topic": topic, "depth": kept})
        letters: list[dict[str, Any]] = []
        if wanted:
            reader.assign(wanted)
            deadline = time.monotonic() + 3.0
            try:
                while ends and time.monotonic() < deadline:
                    for msg in reader.consume(num_messages=100, timeout=0.2):
                        if msg.error() is not None:
                            continue
                        key = (msg.topic() or "", msg.partition() or 0)
                        letters.append(_letter(msg))
                        if (msg.offset() or 0) + 1 >= ends.get(key, 0):
                            ends.pop(key, None)
            finally:
                reader.unassign()
        letters.sort(key=lambda x: x["time"], reverse=True)
        newest: dict[str, float] = {}
        for letter in letters:
            newest.setdefault(letter["topic"], letter["time"])
        now = time.time()
        for row in depth:
            at = newest.get(row["topic"])
            row["newest_age_seconds"] = round(now - at, 1) if at is not None else None
        return depth, letters[:20]

    # -- what it shows ----------------------------------------------------------------------

    def samples(self) -> Iterator[Sample]:
        for item in self.integrations.values():
            yield from item.samples

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            samples = list(self.samples())
            lag_by_group: dict[str, dict[str, float]] = {}
            for row in self.partitions:
                entry = lag_by_group.setdefault(row.group, {"lag": 0, "lag_seconds": 0.0})
                entry["lag"] += row.lag
                entry["lag_seconds"] = max(entry["lag_seconds"], row.lag_seconds)
            return {
                "at": datetime.fromtimestamp(self.at or time.time(), UTC).isoformat(),
                "broker_error": self.broker_error,
                "integrations": [i.as_dict() for i in self.integrations.values()],
                "groups": [
                    {**vars(g), **lag_by_group.get(g.group, {"lag": 0, "lag_seconds": 0.0})}
                    for g in self.groups
                ],
                "partitions": [p.as_dict() for p in self.partitions],
                "dlq": self.dlq,
                "recent_dead_letters": self.letters,
                "slos": [s.evaluate(samples) for s in self.slos],
            }

    # -- as Prometheus metrics (kafka_exporter's names) --------------------------------------

    def collect(self) -> Iterable[GaugeMetricFamily]:
        labels = ["consumergroup", "topic", "partition"]
        current = GaugeMetricFamily(
            "kafka_consumergroup_current_offset",
            "Current offset of a consumer group at topic/partition",
            labels=labels,
        )
        lag = GaugeMetricFamily(
            "kafka_consumergroup_lag",
            "Current approximate lag of a consumer group at topic/partition",
            labels=labels,
        )
        seconds = GaugeMetricFamily(
            "kafka_consumergroup_lag_seconds",
            "Age of the oldest record a consumer group has not consumed, at topic/partition",
            labels=labels,
        )
        total = GaugeMetricFamily(
            "kafka_consumergroup_lag_sum",
            "Current approximate lag of a consumer group at topic",
            labels=["consumergroup", "topic"],
        )
        end = GaugeMetricFamily(
            "kafka_topic_partition_current_offset",
            "Current offset of a broker at topic/partition",
            labels=["topic", "partition"],
        )
        members = GaugeMetricFamily(
            "kafka_consumergroup_members", "Amount of members in a consumer group", labels=["consumergroup"]
        )
        depth = GaugeMetricFamily(
            "itsm_pipeline_dlq_records",
            "Dead letters kept in a DLQ topic (its records within retention).",
            labels=["topic"],
        )
        age = GaugeMetricFamily(
            "itsm_pipeline_dlq_newest_age_seconds",
            "Age of the newest dead letter of a DLQ topic.",
            labels=["topic"],
        )
        up = GaugeMetricFamily(
            "itsm_pipeline_integration_up",
            "1 when an integration's process answers and is ready, 0 otherwise.",
            labels=["integration", "kind"],
        )
        with self.lock:
            sums: dict[tuple[str, str], int] = {}
            ends: dict[tuple[str, str], int] = {}
            for row in self.partitions:
                key = [row.group, row.topic, str(row.partition)]
                # -1 where the group holds the partition but never committed there, as
                # kafka_exporter exports it: PipelineStalled's "the committed offset stands still"
                # then holds for a consumer stuck on its very first record too.
                current.add_metric(key, row.current_offset)
                lag.add_metric(key, row.lag)
                seconds.add_metric(key, row.lag_seconds)
                sums[(row.group, row.topic)] = sums.get((row.group, row.topic), 0) + row.lag
                ends[(row.topic, str(row.partition))] = row.log_end_offset
            for (group, topic), value in sums.items():
                total.add_metric([group, topic], value)
            for (topic, partition), value in ends.items():
                end.add_metric([topic, partition], value)
            for g in self.groups:
                members.add_metric([g.group], g.members)
            for kept in self.dlq:
                depth.add_metric([kept["topic"]], kept["depth"])
                if kept.get("newest_age_seconds") is not None:
                    age.add_metric([kept["topic"]], kept["newest_age_seconds"])
            for item in self.integrations.values():
                up.add_metric([item.name, item.kind], 1.0 if item.health == "up" else 0.0)
        return [current, lag, seconds, total, end, members, depth, age, up]


def _letter(msg: Any) -> dict[str, Any]:
    raw = msg.headers() or []
    info = header_map([(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in raw])
    _kind, stamp = msg.timestamp()
    return {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "stage": info.get("dlq.stage"),
        "error_class": info.get("dlq.error.class"),
        "reason": (info.get("dlq.exception.message") or "")[:300],
        "failed_at": info.get("dlq.first_failed_at"),
        "time": stamp / 1000.0,
    }
