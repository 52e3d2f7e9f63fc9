"""In-order delivery and our own offset commits for the worker's Faust agents.

Why this exists: Faust (faust-streaming 0.15) can hand an agent a record that was prefetched
before a rebalance after it, ahead of the partition's committed position. Its fetch loop then
drops every record below that one (``Consumer._drain_messages`` skips offsets under its read
offset) and counts the skipped range as acknowledged (``Consumer._add_gap``), so the group
commits past records no agent ever saw; and a gap at the head of the acknowledged offsets
freezes a partition's commits (``Consumer._new_offset``). See faust-streaming/faust #216, #221,
#312 and #606. A worker killed mid-stream lost whole blocks of alerts that way.

So the worker declares its input topics with ``acks=False`` (Faust neither tracks, gap-fills nor
commits them) and runs every agent's records through a ``DeliveryCursor``:

- each partition's position starts at the group's committed offset (read from the broker on
  the first record after every rebalance), never at whatever record arrives first;
- a record at the position is processed; one below it was processed already (a redelivery) and
  is skipped; one above it means records were skipped: unless the broker confirms the offsets
  in between do not exist (compaction, transaction markers, retention), the partition is sought
  back to the position and the early record waits for its turn;
- the position moves only after the record's handler returned (its outputs acknowledged and its
  state written), and what is committed is that position, after the producer was flushed (so
  the state changelog is on the broker too), for partitions this member still owns;
- a partition whose position has not moved for stall_seconds while the broker holds records
  beyond it, and none of its records is in hand, is sought back to its position again (Faust
  may have dropped the re-fetched records below a read offset it moved after the seek, and then
  nothing else would ever ask again).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from confluent_kafka import KafkaError

from streams.core import telemetry
from streams.core.follower import TRANSIENT
from streams.core.kafka import PASSING_REFUSALS, renew

log = telemetry.get_logger("worker.delivery")

# The group's coordinator is loading, moving or not known yet (a broker just started, a leader
# moved): a committed offset asked for then is asked again.
COORDINATOR_MOVING = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)

# What a batch handler may return: the rest of its work (waiting for its outputs' acknowledgements
# and writing its state), which the cursor runs after the next batch was handled.
Finish = Callable[[], Awaitable[Any]]


class TopicPartition(NamedTuple):
    """A topic partition (the same shape as Faust's TP)."""

    topic: str
    partition: int


class OffsetOracle(Protocol):
    """What the broker knows about a partition, asked outside the consumer group."""

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset (the next record to process), or None if none."""
        ...

    async def first_at_or_after(self, tp: TopicPartition, offset: int) -> int | None:
        """The offset of the first record at or after offset (the earliest record if offset is
        below the log start), or None if the broker did not answer in time."""
        ...


@dataclass
class Admission:
    """A record the cursor let through; hand it back to ``done`` once it was handled."""

    tp: TopicPartition
    offset: int
    epoch: int
    # The position this record follows: its own offset, or where a confirmed gap began. The
    # position moves past it only from there, so a record whose predecessors were never done
    # (a batch whose handler failed) cannot carry the position over them.
    follows: int = -1

    def __post_init__(self) -> None:
        if self.follows < 0:
            self.follows = self.offset


@dataclass
class DeliveryCursor:
    """Per-partition positions of one consumer-group member: admits records in offset order,
    seeks back over skipped ones, and says what may be committed."""

    oracle: OffsetOracle
    seek: Callable[[TopicPartition, int], Awaitable[None]]
    owned: Callable[[], Iterable[Any]]
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    # The first offset that exists at or after a position, as the broker said (per position).
    _exists: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    epoch: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    stall_seconds: float = 5.0
    clock: Callable[[], float] = time.monotonic
    # Per partition: the position last seen and since when it has not moved.
    _progress: dict[TopicPartition, tuple[int, float]] = field(default_factory=dict)
    # The owned partitions, read from the consumer once per rebalance (not per record).
    _owned_now: frozenset[TopicPartition] | None = None
    # Per partition: the next offset to admit, ahead of the position while a batch is in hand.
    _reading: dict[TopicPartition, int] = field(default_factory=dict)
    # Batches handled whose handler left work to finish (their outputs' acknowledgements), oldest
    # first, with their admissions: done only once finished, in order.
    _unfinished: collections.deque[tuple[Finish, list[Admission]]] = field(default_factory=collections.deque)
    _finishing: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        telemetry.DELIVERY_SKIPS.labels(outcome).inc()

    def reset(self) -> None:
        """Forget every position (on a rebalance): each is read from the broker again."""
        self.positions.clear()
        self.committed.clear()
        self._exists.clear()
        self._progress.clear()
        self._reading.clear()
        self._owned_now = None
        self.epoch += 1

    def _owned(self, fresh: bool = False) -> frozenset[TopicPartition]:
        """The owned partitions: per record from a copy taken once per rebalance, fresh for the
        once-a-second work (commits, stall checks)."""
        if fresh or self._owned_now is None:
            owned = frozenset(TopicPartition(tp.topic, tp.partition) for tp in self.owned())
            if fresh:
                return owned
            self._owned_now = owned
        return self._owned_now

    async def admit(self, topic: str, partition: int, offset: int) -> Admission | None:
        """The record's admission if it is the partition's next record, else None (skip it)."""
        tp = TopicPartition(topic, partition)
        if tp not in self._owned():
            self._count("not_owned")  # its owner processes it
            return None
        epoch = self.epoch
        position = self.positions.get(tp)
        if position is None:
            committed = await self.oracle.committed(tp)
            if epoch != self.epoch:
                return None  # a rebalance happened meanwhile; the record comes again
            position = committed if committed is not None else 0
            self.positions[tp] = position
            self.committed[tp] = position
        # Records admitted but not done yet (a batch in hand) are behind the reading position.
        position = self._reading.get(tp, position)
        if offset == position:
            self._reading[tp] = offset + 1
            return Admission(tp, offset, epoch)
        if offset < position:
            self._count("redelivered")
            return None
        known = self._exists.get(tp)
        if known is None or known[0] != position:
            first = await self.oracle.first_at_or_after(tp, position)
            if epoch != self.epoch:
                return None
            if first is None:
                log.warning("delivery_unverified_gap", topic=topic, partition=partition, position=position)
                await self._seek_back(tp, position)
                return None
            known = (position, first)
            self._exists[tp] = known
        if offset <= known[1]:
            # Nothing exists between the position and this record: compaction, a transaction
            # marker or retention made the gap, not the consumer.
            self._count("gap_confirmed")
            self._reading[tp] = offset + 1
            return Admission(tp, offset, epoch, follows=position)
        log.warning(
            "delivery_out_of_order", topic=topic, partition=partition, position=position, offset=offset
        )
        await self._seek_back(tp, position)
        return None

    async def _seek_back(self, tp: TopicPartition, position: int) -> None:
        self._count("sought_back")
        await self.seek(tp, position)

    def done(self, admission: Admission) -> None:
        """The admitted record was handled: the partition's position moves past it (admissions
        are done in the order they were admitted)."""
        if admission.epoch == self.epoch and self.positions.get(admission.tp) == admission.follows:
            self.positions[admission.tp] = admission.offset + 1
            self._exists.pop(admission.tp, None)

    async def unstick(self, highwater: Callable[[TopicPartition], int | None]) -> list[TopicPartition]:
        """Seek back every owned partition that holds records beyond its position but has not
        moved for stall_seconds; returns those sought."""
        now, sought = self.clock(), []
        for tp in sorted(self._owned(fresh=True)):
            epoch = self.epoch
            position = self.positions.get(tp)
            if position is None:
                committed = await self.oracle.committed(tp)
                if epoch != self.epoch or tp in self.positions:
                    continue
                position = committed if committed is not None else 0
                self.positions[tp] = self.committed[tp] = position
            last = self._progress.get(tp)
            # Records admitted and not done yet (a batch in hand, or one waiting for its outputs'
            # acknowledgements) are the worker's, not lost: a slow batch is no stall, and a seek
            # then only drops what the consumer prefetched (and raced aiokafka's fetcher into a
            # KeyError that stopped the worker, in latency_bench at 1,000 alerts/s).
            if last is None or last[0] != position or self._reading.get(tp, position) > position:
                self._progress[tp] = (position, now)
                continue
            end = highwater(tp)
            if end is not None and end > position and now - last[1] >= self.stall_seconds:
                log.warning(
                    "delivery_stalled", topic=tp.topic, partition=tp.partition, position=position, end=end
                )
                self._count("stalled")
                await self.seek(tp, position)
                self._progress[tp] = (position, now)
                sought.append(tp)
        return sought

    def to_commit(self, only: Iterable[Any] | None = None) -> dict[TopicPartition, int]:
        """Positions that moved since they were last committed, for partitions still owned."""
        owned = self._owned(fresh=True)
        wanted = None if only is None else {TopicPartition(tp.topic, tp.partition) for tp in only}
        return {
            tp: pos
            for tp, pos in self.positions.items()
            if tp in owned and (wanted is None or tp in wanted) and self.committed.get(tp) != pos
        }

    def mark_committed(self, offsets: dict[TopicPartition, int], epoch: int) -> None:
        if epoch == self.epoch:
            self.committed.update(offsets)

    async def consume_batches(
        self,
        stream: Any,
        handle: Callable[[list[Any]], Awaitable[Finish | None]],
        size: int,
        wait: float,
    ) -> None:
        """Run a Faust stream's records through handle in batches (up to size records, or what
        came within wait seconds), in order, each at least once; positions move after the batch.
        handle gets Faust's events (a table write needs its record's event: see app.py).

        A handler may return the rest of its batch's work (a Finish): the cursor runs it once the
        next batch was handled (or on finish_pending: a tick, a commit, a rebalance), so one
        batch is processed while the previous one's acknowledgements are on their way. The
        batch's positions move only once its Finish returned."""
        async for events in stream.take_events(size, wait):
            admitted: list[tuple[Any, Admission]] = []
            for event in events:
                msg = event.message
                admission = await self.admit(msg.topic, msg.partition, msg.offset)
                if admission is not None:
                    admitted.append((event, admission))
            if not admitted:
                continue
            admissions = [admission for _, admission in admitted]
            try:
                finish = await handle([event for event, _ in admitted])
            except BaseException:
                self._not_done(admissions)
                raise
            if finish is None:
                await self.finish_pending()  # done in order: the ones before it first
                for admission in admissions:
                    self.done(admission)
            else:
                self._unfinished.append((finish, admissions))
                await self.finish_pending(keep=1)

    async def finish_pending(self, keep: int = 0) -> None:
        """Finish handled batches, oldest first, until keep are left; their positions move."""
        async with self._finishing:
            while len(self._unfinished) > keep:
                finish, admissions = self._unfinished[0]
                try:
                    await finish()
                except BaseException:
                    # Neither this batch nor any after it is done: their partitions are read from
                    # their positions again.
                    for _, later in self._unfinished:
                        self._not_done(later)
                    self._unfinished.clear()
                    raise
                self._unfinished.popleft()
                for admission in admissions:
                    self.done(admission)

    def _not_done(self, admissions: list[Admission]) -> None:
        # Not done: read these partitions from their positions again, so the records after the
        # batch are held back (sought back) until the batch is processed.
        for admission in admissions:
            self._reading.pop(admission.tp, None)

    async def consume(self, stream: Any, handle: Callable[[Any], Awaitable[Any]]) -> None:
        """Run a Faust stream's records through handle, in order, each at least once."""
        async for event in stream.events():
            msg = event.message
            admission = await self.admit(msg.topic, msg.partition, msg.offset)
            if admission is not None:
                try:
                    await handle(msg)
                except BaseException:
                    self._not_done([admission])  # as for a failed batch: read from the position
                    raise
                self.done(admission)


class BrokerOffsets:
    """An OffsetOracle over a confluent-kafka consumer that never joins the group: it reads the
    group's committed offsets and peeks at a partition (blocking calls, run in a thread)."""

    def __init__(
        self, config: dict[str, Any], group_id: str, timeout: float = 10.0, grace: float = 60.0
    ) -> None:
        from confluent_kafka import Consumer

        from streams.core.kafka import track

        self.timeout = timeout
        # How long a committed offset is asked for again while the broker cannot answer it (a
        # timeout, a broker moving, or a password refused in a rotation's seconds between the
        # broker and the file) before the caller gets the error.
        self.grace = grace
        base = {
            **config,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # What Faust's aiokafka consumer reads, so both see the same offsets.
            "isolation.level": "read_uncommitted",
        }
        # Committed offsets of the worker's group (an OffsetFetch; subscribe is never called, so
        # this consumer never becomes a member), and a peeking consumer in a group of its own.
        self._group = track(Consumer({**base, "group.id": group_id}))
        self._peek = track(Consumer({**base, "group.id": f"{group_id}.peek-{uuid.uuid4().hex[:8]}"}))
        self._lock = threading.Lock()

    def _committed(self, tp: TopicPartition) -> int | None:
        from confluent_kafka import KafkaException
        from confluent_kafka import TopicPartition as CTP

        deadline = time.monotonic() + self.grace
        while True:
            with self._lock:
                renew(self._group)  # the rotated password, when one came meanwhile
                try:
                    (got,) = self._group.committed([CTP(tp.topic, tp.partition)], timeout=self.timeout)
                    break
                except KafkaException as exc:
                    err = exc.args[0]
                    again = (
                        isinstance(err, KafkaError)
                        and not err.fatal()
                        and (
                            err.retriable()
                            or err.code() in TRANSIENT
                            or err.code() in COORDINATOR_MOVING
                            or err.code() in PASSING_REFUSALS
                        )
                    )
                    if not again or time.monotonic() > deadline:
                        raise
            log.warning("committed_offset_retried", topic=tp.topic, partition=tp.partition, error=err.str())
            time.sleep(0.5)
        if got.error is not None:
            raise RuntimeError(f"committed offset of {tp}: {got.error}")
        return got.offset if got.offset >= 0 else None

    def _first_at_or_after(self, tp: TopicPartition, offset: int) -> int | None:
        from confluent_kafka import TopicPartition as CTP

        with self._lock:
            renew(self._peek)
            self._peek.assign([CTP(tp.topic, tp.partition, offset)])
            try:
                msgs = self._peek.consume(1, timeout=self.timeout)
            finally:
                self._peek.unassign()
        for msg in msgs:
            at = msg.offset()
            if msg.error() is None and at is not None:
                return int(at)
        return None

    async def committed(self, tp: TopicPartition) -> int | None:
        return await asyncio.to_thread(self._committed, tp)

    async def first_at_or_after(self, tp: TopicPartition, offset: int) -> int | None:
        return await asyncio.to_thread(self._first_at_or_after, tp, offset)

    def close(self) -> None:
        self._group.close()
        self._peek.close()
