"""The worker's DeliveryCursor: records in offset order from the committed position, skipped ones
sought back, confirmed gaps crossed, and only processed positions committed."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from streams.agents.delivery import DeliveryCursor, TopicPartition

TP0 = TopicPartition("x.alerts.raw", 0)


@dataclass
class Log:
    """What the broker holds: the offsets that exist per partition, and the group's commits."""

    offsets: dict[TopicPartition, list[int]] = field(default_factory=dict)
    commits: dict[TopicPartition, int] = field(default_factory=dict)
    asked: int = 0

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.commits.get(tp)

    async def first_at_or_after(self, tp: TopicPartition, offset: int) -> int | None:
        self.asked += 1
        return next((o for o in self.offsets.get(tp, []) if o >= offset), None)


def cursor(
    log: Log, owned: set[TopicPartition] | None = None
) -> tuple[DeliveryCursor, list[tuple[TopicPartition, int]]]:
    seeks: list[tuple[TopicPartition, int]] = []

    async def seek(tp: TopicPartition, offset: int) -> None:
        seeks.append((tp, offset))

    return DeliveryCursor(log, seek, lambda: owned if owned is not None else {TP0}), seeks


def deliver(c: DeliveryCursor, offsets: list[int], tp: TopicPartition = TP0) -> list[int]:
    """Offer records in this order; returns the offsets processed."""

    async def run() -> list[int]:
        done = []
        for off in offsets:
            admission = await c.admit(tp.topic, tp.partition, off)
            if admission is not None:
                done.append(off)
                c.done(admission)
        return done

    return asyncio.run(run())


def test_records_start_at_the_committed_offset_and_go_in_order() -> None:
    log = Log({TP0: list(range(100))}, {TP0: 10})
    c, seeks = cursor(log)
    assert deliver(c, [10, 11, 12]) == [10, 11, 12]
    assert c.to_commit() == {TP0: 13} and seeks == [] and log.asked == 0


def test_a_record_prefetched_ahead_of_the_position_is_sought_back_not_skipped() -> None:
    # Faust issue #221: after a rebalance a record from before it (offset 225) arrives first,
    # while the committed position is 173. Processing it would skip 173..224 for good.
    log = Log({TP0: list(range(600))}, {TP0: 173})
    c, seeks = cursor(log)
    assert deliver(c, [225, 226]) == []
    assert seeks == [(TP0, 173), (TP0, 173)] and c.counts == {"sought_back": 2}
    assert c.to_commit() == {}  # nothing processed: nothing to commit
    # After the seek the partition comes again from 173: every record, in order.
    assert deliver(c, [173, 174, *range(175, 226)]) == list(range(173, 226))
    assert c.to_commit() == {TP0: 226}


def test_records_below_the_position_were_processed_already_and_are_skipped() -> None:
    log = Log({TP0: list(range(50))}, {TP0: 20})
    c, _ = cursor(log)
    assert deliver(c, [20, 21, 18, 19, 20, 22]) == [20, 21, 22]
    assert c.counts == {"redelivered": 3}


def test_a_gap_the_broker_confirms_is_crossed_once_verified() -> None:
    # Compaction (or a transaction marker) removed offsets 5..8: they do not exist.
    log = Log({TP0: [0, 1, 2, 3, 4, 9, 10]}, {})
    c, seeks = cursor(log)
    assert deliver(c, [0, 1, 2, 3, 4, 9, 10]) == [0, 1, 2, 3, 4, 9, 10]
    assert seeks == [] and c.counts == {"gap_confirmed": 1} and log.asked == 1


def test_a_committed_offset_below_the_log_start_moves_to_the_first_record() -> None:
    log = Log({TP0: list(range(500, 510))}, {TP0: 7})  # retention deleted 7..499
    c, seeks = cursor(log)
    assert deliver(c, [500, 501]) == [500, 501] and seeks == []


def test_records_of_partitions_another_member_owns_are_left_to_it() -> None:
    log = Log({TP0: list(range(10))}, {})
    c, _ = cursor(log, owned=set())
    assert deliver(c, [0, 1]) == [] and c.counts == {"not_owned": 2}


def test_a_rebalance_forgets_positions_and_a_late_done_moves_nothing() -> None:
    log = Log({TP0: list(range(100))}, {TP0: 40})
    c, _ = cursor(log)

    async def run() -> None:
        first = await c.admit(TP0.topic, TP0.partition, 40)
        assert first is not None
        c.reset()  # a rebalance while offset 40 was in the handler
        log.commits[TP0] = 60  # meanwhile another member processed up to 59
        c.done(first)
        again = await c.admit(TP0.topic, TP0.partition, 60)
        assert again is not None and again.offset == 60

    asyncio.run(run())
    assert c.positions == {TP0: 60}


def test_only_moved_positions_of_owned_partitions_are_committed() -> None:
    tp1 = TopicPartition("x.alerts.raw", 1)
    owned = {TP0, tp1}
    log = Log({TP0: list(range(10)), tp1: list(range(10))}, {TP0: 0, tp1: 0})
    c, _ = cursor(log, owned)
    deliver(c, [0, 1])
    deliver(c, [0], tp1)
    due = c.to_commit()
    assert due == {TP0: 2, tp1: 1}
    c.mark_committed(due, c.epoch)
    assert c.to_commit() == {}
    deliver(c, [2])
    owned.discard(tp1)
    assert c.to_commit() == {TP0: 3}
    assert c.to_commit(only={tp1}) == {}


def test_a_partition_stalled_below_the_end_is_sought_back_again() -> None:
    # After a seek, Faust may drop the re-fetched records (its read offset moved on again) and no
    # later record arrives to notice: the cursor asks again once the position stood still.
    log = Log({TP0: list(range(400))}, {TP0: 369})
    c, seeks = cursor(log)
    now = [1000.0]
    c.clock = lambda: now[0]
    ends = {TP0: 383}

    async def unstick() -> list[TopicPartition]:
        return await c.unstick(ends.get)

    assert asyncio.run(unstick()) == []  # first look: remembers position 369 and when
    now[0] += 4.9
    assert asyncio.run(unstick()) == []  # not stalled long enough
    now[0] += 0.2
    assert asyncio.run(unstick()) == [TP0] and seeks == [(TP0, 369)]
    assert deliver(c, [369, 370]) == [369, 370]
    now[0] += 60
    assert asyncio.run(unstick()) == []  # it moved: a new wait starts
    ends[TP0] = 371
    now[0] += 60
    assert asyncio.run(unstick()) == []  # at the end: nothing waits, nothing to seek
    assert seeks == [(TP0, 369)]


def test_a_partition_whose_records_are_in_hand_is_not_stalled_however_long_they_take() -> None:
    # A slow batch (its outputs waiting for acknowledgements) holds the position still; seeking
    # then would only drop the consumer's prefetched records. Once done, the wait starts again.
    log = Log({TP0: list(range(400))}, {TP0: 369})
    c, seeks = cursor(log)
    now = [1000.0]
    c.clock = lambda: now[0]
    ends = {TP0: 383}

    async def admit(offset: int) -> Any:
        return await c.admit(TP0.topic, TP0.partition, offset)

    async def unstick() -> list[TopicPartition]:
        return await c.unstick(ends.get)

    in_hand = [asyncio.run(admit(369)), asyncio.run(admit(370))]
    assert asyncio.run(unstick()) == []
    now[0] += 60
    assert asyncio.run(unstick()) == [] and seeks == []  # in hand for a minute: not stalled
    for admission in in_hand:
        c.done(admission)
    now[0] += 60
    assert asyncio.run(unstick()) == []  # it moved: a new wait starts
    now[0] += 5.1
    assert asyncio.run(unstick()) == [TP0] and seeks == [(TP0, 371)]


class Msg:
    def __init__(self, offset: int, tp: TopicPartition = TP0) -> None:
        self.topic, self.partition, self.offset = tp.topic, tp.partition, offset


class Event:
    def __init__(self, offset: int) -> None:
        self.message = Msg(offset)


class Stream:
    """Faust's take_events: the batches given, in order."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    async def take_events(self, size: int, wait: float) -> object:
        for batch in self.batches:
            yield [Event(o) for o in batch]


def test_a_batch_moves_the_position_only_after_its_handler_returned() -> None:
    log = Log({TP0: list(range(100))}, {TP0: 0})
    c, seeks = cursor(log)
    handled: list[tuple[list[int], dict[TopicPartition, int]]] = []

    async def handle(events: list[Event]) -> None:
        # What may be committed while the batch is in hand: only what came before it.
        handled.append(([e.message.offset for e in events], c.to_commit()))

    asyncio.run(c.consume_batches(Stream([[0, 1, 2], [3, 4]]), handle, 500, 0.01))
    assert handled == [([0, 1, 2], {}), ([3, 4], {TP0: 3})]
    assert c.to_commit() == {TP0: 5} and seeks == []


def test_after_a_failed_batch_later_records_cannot_carry_the_position_past_it() -> None:
    """A Faust agent that raises is restarted with a new stream that goes on after the failed
    batch: those later records must be held back (sought back) and the failed batch's offsets
    never committed, or a crash-looping agent would lose them."""
    log = Log({TP0: list(range(100))}, {TP0: 0})
    c, seeks = cursor(log)

    async def failing(events: list[Event]) -> None:
        raise RuntimeError("broker down")

    async def fine(events: list[Event]) -> None:
        return None

    async def run() -> None:
        try:
            await c.consume_batches(Stream([[0, 1, 2]]), failing, 500, 0.01)
        except RuntimeError:
            pass
        # The restarted agent's stream continues after the failed batch.
        await c.consume_batches(Stream([[3, 4]]), fine, 500, 0.01)

    asyncio.run(run())
    assert c.to_commit() == {}  # nothing past offset 0 is committed
    assert seeks and set(seeks) == {(TP0, 0)}  # sought back to the failed batch
    asyncio.run(c.consume_batches(Stream([[0, 1, 2, 3, 4]]), fine, 500, 0.01))
    assert c.to_commit() == {TP0: 5}


class Records:
    """Faust's events(): the records given, in order."""

    def __init__(self, offsets: list[int]) -> None:
        self.offsets = offsets

    async def events(self) -> object:
        for offset in self.offsets:
            yield Event(offset)


def test_after_a_record_failed_one_by_one_later_records_cannot_carry_the_position_past_it() -> None:
    # The record-by-record path (change inputs, record guards) like the batch path above: the
    # failed record is read again, never skipped as "redelivered", and nothing past it commits.
    log = Log({TP0: list(range(100))}, {TP0: 0})
    c, seeks = cursor(log)
    handled: list[int] = []

    async def failing(msg: Msg) -> None:
        raise RuntimeError("broker down")

    async def fine(msg: Msg) -> None:
        handled.append(msg.offset)

    async def run() -> None:
        with contextlib.suppress(RuntimeError):
            await c.consume(Records([0, 1]), failing)
        await c.consume(Records([1, 2]), fine)  # the restarted agent goes on after it

    asyncio.run(run())
    assert handled == [] and c.to_commit() == {} and set(seeks) == {(TP0, 0)}
    asyncio.run(c.consume(Records([0, 1, 2]), fine))
    assert handled == [0, 1, 2] and c.to_commit() == {TP0: 3}


def test_a_batch_left_to_finish_is_finished_after_the_next_one_was_handled_and_only_then_done() -> None:
    log = Log({TP0: list(range(100))}, {TP0: 0})
    c, _ = cursor(log)
    trail: list[str] = []

    async def handle(events: list[Event]) -> object:
        first = events[0].message.offset
        trail.append(f"handled {first} (committable {c.to_commit()})")

        async def finish() -> None:
            trail.append(f"finished {first}")

        return finish

    async def run() -> None:
        await c.consume_batches(Stream([[0, 1, 2], [3, 4], [5]]), handle, 500, 0.01)
        trail.append(f"stream over (committable {c.to_commit()})")
        await c.finish_pending()  # as the commit timer does

    asyncio.run(run())
    assert trail == [
        "handled 0 (committable {})",
        "handled 3 (committable {})",  # batch 0 still in flight: nothing to commit
        "finished 0",
        "handled 5 (committable {TopicPartition(topic='x.alerts.raw', partition=0): 3})",
        "finished 3",
        "stream over (committable {TopicPartition(topic='x.alerts.raw', partition=0): 5})",
        "finished 5",
    ]
    assert c.to_commit() == {TP0: 6}


def test_a_batch_whose_finish_fails_is_not_done_and_neither_is_any_after_it() -> None:
    log = Log({TP0: list(range(100))}, {TP0: 0})
    c, seeks = cursor(log)

    async def handle(events: list[Event]) -> object:
        first = events[0].message.offset

        async def finish() -> None:
            if first == 3:
                raise RuntimeError("the broker refused an output")

        return finish

    async def run() -> None:
        try:
            await c.consume_batches(Stream([[0, 1, 2], [3, 4], [5, 6], [7]]), handle, 500, 0.01)
        except RuntimeError:
            pass

    asyncio.run(run())
    assert c.to_commit() == {TP0: 3}  # batch 0 finished; 3 and 5 (handled after it) are not
    # The restarted agent's stream goes on after them: held back and sought back to 3.
    asyncio.run(c.consume_batches(Stream([[7, 8]]), handle, 500, 0.01))
    assert (TP0, 3) in seeks and c.to_commit() == {TP0: 3}
