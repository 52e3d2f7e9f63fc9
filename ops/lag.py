"""Consumer lag of the pipeline's consumer groups, the way SREs know it (kafka_exporter's figures).

Per group, topic and partition: the committed offset, the log-end offset, the lag in records and
the lag in seconds (the age of the oldest record the group has not consumed: the one at its
committed offset). The pipeline's groups are the worker's (the Faust app id) and each sink's
(`<app id>-sink-<name>`); views, the delivery cursor's peek consumers and itsmctl's own readers
commit nothing the pipeline depends on and are left out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from streams.core.kafka import client_config, reader, track
from streams.core.settings import Settings

CHANGELOG_SUFFIX = "-changelog"  # Faust's table changelog topics: <app id>-<table>-changelog
NO_OFFSET = -1001  # librdkafka's OFFSET_INVALID: the group committed nothing on this partition


@dataclass(frozen=True)
class PartitionLag:
    """One partition of one group: where it stands against the end of the log."""

    group: str
    topic: str
    partition: int
    current_offset: int  # the committed offset (-1 when the group committed none here)
    log_end_offset: int
    lag: int
    lag_seconds: float  # age of the oldest unconsumed record; 0 when there is none

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GroupInfo:
    group: str
    state: str
    members: int


def is_pipeline_group(group: str, app_id: str) -> bool:
    """The worker's group and each sink's; not views, peeks or itsmctl's readers."""
    return group == app_id or group.startswith(f"{app_id}-sink-")


def _held_by(desc: Any) -> set[tuple[str, int]]:
    """The partitions a described group's members hold."""
    held: set[tuple[str, int]] = set()
    for member in desc.members or []:
        assignment = getattr(member, "assignment", None)
        for tp in getattr(assignment, "topic_partitions", None) or []:
            # Faust assigns the worker its tables' changelogs too: read for state, never
            # committed, and no backlog of the pipeline's.
            if not tp.topic.endswith(CHANGELOG_SUFFIX):
                held.add((tp.topic, tp.partition))
    return held


class LagReader:
    """Reads consumer lag through one admin client and one (never committing) consumer, reused
    across calls, so a status service can ask every few seconds."""

    def __init__(self, settings: Settings, timeout: float = 10.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self.admin = track(AdminClient(client_config(settings)))
        self._peek: Consumer | None = None
        # What groups() found each group's members holding, for the lag() that follows it: one
        # description of the groups per refresh, not one more per group.
        self._held: dict[str, set[tuple[str, int]]] = {}

    def close(self) -> None:
        if self._peek is not None:
            self._peek.close()
            self._peek = None

    # -- groups -----------------------------------------------------------------------------

    def groups(self, only: Sequence[str] = ()) -> list[GroupInfo]:
        """The pipeline's consumer groups (or exactly `only`), with their state and member count."""
        self._held = {}  # a lag() after this call reads this call's description, never an older one
        if only:
            # Asked for by name: described even when the broker lists no such group (it shows dead).
            names = list(only)
        else:
            listed = self.admin.list_consumer_groups(request_timeout=self.timeout).result()
            names = sorted(
                g.group_id for g in listed.valid if is_pipeline_group(g.group_id, self.settings.app_id)
            )
        if not names:
            return []
        described = self.admin.describe_consumer_groups(names, request_timeout=self.timeout)
        out = []
        for name in names:
            desc = described[name].result()
            state = getattr(desc.state, "name", str(desc.state)).lower()
            out.append(GroupInfo(name, state, len(desc.members)))
            self._held[name] = _held_by(desc)
        return out

    # -- offsets ----------------------------------------------------------------------------

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        from confluent_kafka import ConsumerGroupTopicPartitions

        futures = self.admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=self.timeout
        )
        result = futures[group].result()
        return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions or []}

    def assigned(self, group: str) -> set[tuple[str, int]]:
        """The partitions the group's members hold now (a member that has not committed yet is
        stuck unseen otherwise: a new sink whose ITSM is down from its first command)."""
        return self._assigned([group])[group]

    def _assigned(self, groups: Sequence[str]) -> dict[str, set[tuple[str, int]]]:
        """assigned() of each group: as groups() just described it (taken once), the others
        described now in one request."""
        out = {g: held for g in groups if (held := self._held.pop(g, None)) is not None}
        missing = [g for g in groups if g not in out]
        if not missing:
            return out
        described = self.admin.describe_consumer_groups(missing, request_timeout=self.timeout)
        for group in missing:
            try:
                out[group] = _held_by(described[group].result())
            except KafkaException:
                # No such group, or the broker cannot say: the committed offsets still count.
                out[group] = set()
        return out

    def end_offsets(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return self._offsets(partitions, OffsetSpec.latest())

    def start_offsets(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return self._offsets(partitions, OffsetSpec.earliest())

    def _offsets(self, partitions: Iterable[tuple[str, int]], spec: OffsetSpec) -> dict[tuple[str, int], int]:
        """One batched ListOffsets request for every partition."""
        wanted = {TopicPartition(t, p): spec for t, p in set(partitions)}
        if not wanted:
            return {}
        futures = self.admin.list_offsets(wanted, request_timeout=self.timeout)
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

    def record_times(
        self, positions: dict[tuple[str, int], int], wait: float = 3.0
    ) -> dict[tuple[str, int], float]:
        """The timestamp (epoch seconds) of the first record at or after each position: the oldest
        record not yet consumed. A partition whose record cannot be read in `wait` is left out."""
        if not positions:
            return {}
        if self._peek is None:
            self._peek = reader(
                self.settings, "lag", **{"fetch.max.bytes": 1 << 20, "max.partition.fetch.bytes": 1 << 16}
            )
        consumer = self._peek
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in positions.items()])
        times: dict[tuple[str, int], float] = {}
        deadline = time.monotonic() + wait
        try:
            while len(times) < len(positions) and time.monotonic() < deadline:
                for msg in consumer.consume(num_messages=500, timeout=0.2):
                    err = msg.error()
                    if err is not None and err.code() != KafkaError._PARTITION_EOF:
                        continue
                    key = (msg.topic() or "", msg.partition() or 0)
                    if err is None and key in positions and key not in times:
                        _kind, stamp = msg.timestamp()
                        times[key] = stamp / 1000.0
                        # This partition is answered: stop fetching it.
                        consumer.incremental_unassign([TopicPartition(key[0], key[1])])
        finally:
            consumer.unassign()
        return times

    # -- lag --------------------------------------------------------------------------------

    def lag(self, groups: Sequence[str], now: float | None = None) -> list[PartitionLag]:
        """Every partition each group committed or holds, against the end of its log; one it
        holds without a commit counts from the log's start (auto.offset.reset=earliest)."""
        committed: dict[str, dict[tuple[str, int], int]] = {g: self.committed(g) for g in groups}
        for group, held in self._assigned(groups).items():
            for tp in held:
                committed[group].setdefault(tp, NO_OFFSET)
        parts = {tp for offsets in committed.values() for tp in offsets}
        ends = self.end_offsets(parts)
        uncommitted = {tp for offsets in committed.values() for tp, o in offsets.items() if o < 0}
        starts = self.start_offsets(uncommitted)
        rows: list[tuple[str, str, int, int, int, int, int]] = []
        needed: set[tuple[str, int, int]] = set()
        for group in groups:
            for (topic, partition), offset in sorted(committed[group].items()):
                end = ends.get((topic, partition), 0)
                # Nothing committed: the group starts at the beginning (auto.offset.reset=earliest).
                position = offset if offset >= 0 else starts.get((topic, partition), 0)
                lag = max(0, end - position)
                rows.append((group, topic, partition, offset if offset >= 0 else -1, position, end, lag))
                if lag:
                    needed.add((topic, partition, position))
        stamps = self._stamps(needed)
        clock = time.time() if now is None else now
        out = []
        for group, topic, partition, offset, position, end, lag in rows:
            stamp = stamps.get((topic, partition, position)) if lag else None
            seconds = max(0.0, clock - stamp) if stamp is not None else 0.0
            out.append(PartitionLag(group, topic, partition, offset, end, lag, round(seconds, 3)))
        return out

    def _stamps(self, needed: set[tuple[str, int, int]]) -> dict[tuple[str, int, int], float]:
        """Record times at every (topic, partition, position); sinks of one topic stand at
        different positions of the same partition, read in as many rounds as the most of them."""
        out: dict[tuple[str, int, int], float] = {}
        remaining = sorted(needed)
        while remaining:
            round_: dict[tuple[str, int], int] = {}
            later = []
            for topic, partition, position in remaining:
                if (topic, partition) in round_:
                    later.append((topic, partition, position))
                else:
                    round_[(topic, partition)] = position
            for (topic, partition), stamp in self.record_times(round_).items():
                out[(topic, partition, round_[(topic, partition)])] = stamp
            remaining = later
        return out
