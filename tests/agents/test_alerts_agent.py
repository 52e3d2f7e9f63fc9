"""The alerts agent: records become incident commands, suppressions, samples; bad ones dead letters."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from streams.agents.app import create_app
from streams.core.dlq import header_map
from streams.core.messages import Consumed
from streams.core.models import (
    AlertStatus,
    CorrelationSample,
    IncidentAction,
    IncidentCommand,
    MaintenanceWindow,
    SuppressedAlert,
)
from streams.core.rules import load_rules
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.processors.alerts import AlertProcessor, sampled
from streams.processors.indexes import CIIncidentIndex, WindowIndex
from streams.stages.cmdb import CMDBIndex
from tests.agents.common import Clock, Collector, run
from tests.examples import alert, raw_alert_bytes

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
SETTINGS = Settings(topic_prefix="x.")
SERDE = AvroSerde()


def processor(
    out: Collector,
    clock: Clock | None = None,
    windows: WindowIndex | None = None,
    sample_rate: float = 0.0,
    **lifecycle: float,
) -> AlertProcessor:
    rules = load_rules()
    rules = rules.model_copy(
        update={
            "lifecycle": rules.lifecycle.model_copy(update=lifecycle),
            "correlation": rules.correlation.model_copy(
                update={"sampling": rules.correlation.sampling.model_copy(update={"rate": sample_rate})}
            ),
        }
    )
    return AlertProcessor(
        SETTINGS,
        SERDE,
        out,
        rules,
        {},
        CMDBIndex(),
        CIIncidentIndex(),
        windows or WindowIndex(SERDE, "w"),
        clock=clock or (lambda: NOW),
    )


def test_a_good_alert_becomes_one_command_keyed_by_correlation_id_with_the_trace() -> None:
    from streams.core import telemetry

    telemetry.configure_tracing("itsm-worker")  # as the worker does; no OTLP here: not sampled
    out = Collector()
    trace = ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    outcome = run(
        processor(out).handle(
            Consumed(b"fp1", SERDE.encode(alert("fp1")), [trace, ("x", b"y")], "x.alerts.raw", 0, 5)
        )
    )
    assert outcome == "emitted"
    ((topic, key, value, headers),) = out.sent
    assert topic == "x.itsm.incident.commands" and key == b"itsmp-fp1"
    cmd = SERDE.decode(value or b"", IncidentCommand)
    assert cmd.action is IncidentAction.OPEN and cmd.issued_at == NOW
    # The same trace, continued by the worker's own span of this record (a new span id; not
    # sampled, since this process exports no spans); other headers stay behind.
    ((name, value_),) = headers
    version, trace_id, span, flags = value_.decode().split("-")
    assert (name, version, trace_id, flags) == ("traceparent", "00", "0af7651916cd43dd8448eb211c80319c", "00")
    assert span != "b7ad6b7169203331" and len(span) == 16


@pytest.mark.parametrize(
    ("value", "error_class", "reason"),
    [
        (b"garbage", "schema", "unknown framing"),
        (None, "schema", "unknown framing"),
        (b"\xc3\x01" + b"\x01" * 8 + b"\x00", "schema", "unknown schema fingerprint"),
    ],
    ids=["garbage", "tombstone", "foreign-schema"],
)
def test_undecodable_records_are_dead_lettered_with_their_bytes_and_reason(
    value: bytes | None, error_class: str, reason: str
) -> None:
    out = Collector()
    outcome = run(processor(out).handle(Consumed(b"k", value, [("origin", b"test")], "x.alerts.raw", 2, 41)))
    assert outcome == "dead_lettered"
    ((topic, key, dead_value, headers),) = out.sent
    assert topic == "x.alerts.raw.dlq" and key == b"k" and dead_value == (value or b"")
    h = header_map(headers)
    assert h["origin"] == "test"
    assert (h["dlq.topic"], h["dlq.partition"], h["dlq.offset"], h["dlq.stage"]) == (
        "x.alerts.raw",
        "2",
        "41",
        "alerts",
    )
    assert h["dlq.error.class"] == error_class and reason in h["dlq.exception.message"]
    assert h["dlq.attempts"] == "1" and h["dlq.first_failed_at"].startswith("2026-11-27T09:00:00")


def test_a_decodable_but_invalid_record_is_dead_lettered_as_validation() -> None:
    out = Collector()
    outcome = run(processor(out).handle(Consumed(None, raw_alert_bytes(name=""), [], "x.alerts.raw", 0, 1)))
    assert outcome == "dead_lettered"
    h = header_map(out.sent[0][3])
    assert h["dlq.error.class"] == "validation" and "name" in h["dlq.exception.message"]


def test_a_suppressed_alert_goes_to_alerts_suppressed_with_its_window() -> None:
    out = Collector()
    windows = WindowIndex(SERDE, "w")
    window = MaintenanceWindow(
        window_id="mw-1",
        kind="MAINTENANCE",
        scope="GLOBAL",
        starts_at=NOW - timedelta(hours=1),
        ends_at=NOW + timedelta(hours=1),
        change_id="CHG0030007",
        updated_at=NOW,
    )
    windows.apply(b"mw-1", SERDE.encode(window))
    outcome = run(
        processor(out, windows=windows).handle(
            Consumed(b"fp1", SERDE.encode(alert("fp1")), [], "x.alerts.raw", 0, 1)
        )
    )
    assert outcome == "suppressed" and out.on("itsm.incident.commands") == []
    ((_, key, value, _),) = out.on("alerts.suppressed")
    sup = SERDE.decode(value or b"", SuppressedAlert)
    assert key == b"fp1" and sup.window_id == "mw-1" and sup.change_id == "CHG0030007"
    assert sup.alert.fingerprint == "fp1" and sup.window_ends_at == window.ends_at


def test_the_quieted_index_follows_its_states_and_an_early_end_makes_them_due() -> None:
    out, clock = Collector(), Clock(NOW)
    windows = WindowIndex(SERDE, "w")
    window = MaintenanceWindow(
        window_id="mw-2",
        kind="MAINTENANCE",
        scope="GLOBAL",
        starts_at=NOW - timedelta(hours=1),
        ends_at=NOW + timedelta(hours=1),
        updated_at=NOW,
    )
    windows.apply(b"mw-2", SERDE.encode(window))
    p = processor(out, clock, windows=windows)
    for i, fp in enumerate(("fp1", "fp2")):
        assert (
            run(p.handle(Consumed(fp.encode(), SERDE.encode(alert(fp)), [], "x.alerts.raw", 0, i)))
            == "suppressed"
        )
    assert p.quieted == {"mw-2": {(0, "fp1"), (0, "fp2")}}
    # fp2 resolves: it is no longer kept quiet by the window (the index forgets it).
    resolved = alert("fp2", AlertStatus.RESOLVED)
    run(p.handle(Consumed(b"fp2", SERDE.encode(resolved), [], "x.alerts.raw", 0, 2)))
    assert p.quieted == {"mw-2": {(0, "fp1")}}
    # The window ends early: fp1 comes due at once and opens at the next tick.
    windows.drain_changed()
    windows.apply(b"mw-2", SERDE.encode(window.model_copy(update={"ends_at": NOW, "updated_at": NOW})))
    clock.now = NOW + timedelta(seconds=1)
    assert run(p.tick(0)) == 1
    (command,) = [SERDE.decode(v or b"", IncidentCommand) for _, _, v, _ in out.on("itsm.incident.commands")][
        -1:
    ]
    assert command.action is IncidentAction.OPEN and command.correlation_id.endswith("fp1")
    assert p.quieted == {}


def test_ticks_auto_resolve_after_the_stable_period() -> None:
    out, clock = Collector(), Clock(NOW)
    p = processor(out, clock, stable_period=60)
    run(p.handle(Consumed(b"fp1", SERDE.encode(alert("fp1")), [], "x.alerts.raw", 3, 1)))
    clock.now += timedelta(seconds=5)
    resolved = alert("fp1", status=AlertStatus.RESOLVED, ends_at=clock.now)
    assert run(p.handle(Consumed(b"fp1", SERDE.encode(resolved), [], "x.alerts.raw", 3, 2))) == "absorbed"
    assert run(p.tick(3)) == 0
    clock.now += timedelta(seconds=61)
    assert run(p.tick(2)) == 0  # another partition's tick does not touch it
    assert run(p.tick(3)) == 1
    actions = [
        SERDE.decode(v or b"", IncidentCommand).action for _, _, v, _ in out.on("itsm.incident.commands")
    ]
    assert actions == [IncidentAction.OPEN, IncidentAction.RESOLVE]


async def indexed_tick(p: AlertProcessor, partition: int) -> int:
    """Ticks until the background index pass is done; how many states came due in all."""
    ran = await p.tick(partition)
    while p.unindexed:
        await asyncio.sleep(0.01)
    return ran + await p.tick(partition)


def test_the_due_index_is_rebuilt_from_the_table_after_a_rebalance() -> None:
    out, clock = Collector(), Clock(NOW)
    p = processor(out, clock, stable_period=60)
    run(p.handle(Consumed(b"fp1", SERDE.encode(alert("fp1")), [], "x.alerts.raw", 1, 1)))
    run(
        p.handle(
            Consumed(
                b"fp1", SERDE.encode(alert("fp1", status=AlertStatus.RESOLVED)), [], "x.alerts.raw", 1, 2
            )
        )
    )
    p.forget_partitions()
    clock.now += timedelta(seconds=120)

    async def ticks() -> tuple[int, int]:
        # The first tick starts the index pass in the background; once it is done, the recovered
        # state comes due.
        first = await p.tick(1)
        while p.unindexed:
            await asyncio.sleep(0.01)
        return first, await p.tick(1)

    assert run(ticks()) == (0, 1)


def test_the_due_index_of_every_partition_is_built_in_one_pass_over_the_table() -> None:
    out, clock = Collector(), Clock(NOW)
    p = processor(out, clock, stable_period=60)
    for partition in range(6):
        fp = f"fp{partition}"
        run(p.handle(Consumed(fp.encode(), SERDE.encode(alert(fp)), [], "x.alerts.raw", partition, 1)))
        resolved = alert(fp, status=AlertStatus.RESOLVED)
        run(p.handle(Consumed(fp.encode(), SERDE.encode(resolved), [], "x.alerts.raw", partition, 2)))

    class Counting(dict[str, bytes]):
        passes = 0

        def keys(self) -> Any:
            Counting.passes += 1
            return super().keys()

    p.table = p.store.table = Counting(p.table)
    p.forget_partitions()
    clock.now += timedelta(seconds=120)

    async def ticks() -> list[int]:
        for partition in range(6):
            await p.tick(partition)
        while p.unindexed:
            await asyncio.sleep(0.01)
        return [await p.tick(partition) for partition in range(6)]

    assert run(ticks()) == [1] * 6
    assert Counting.passes == 1


def test_correlation_decisions_are_sampled_deterministically() -> None:
    out = Collector()
    p = processor(out, sample_rate=1.0)
    run(p.handle(Consumed(b"fp1", SERDE.encode(alert("fp1")), [], "x.alerts.raw", 0, 1)))
    ((_, _, value, _),) = out.on("alerts.correlation.samples")
    sample = SERDE.decode(value or b"", CorrelationSample)
    assert sample.fingerprint == "fp1" and sample.decision.value == "UNKNOWN" and sample.labels["instance"]
    assert sampled(0.5, "a", "b") == sampled(0.5, "a", "b")
    assert 400 < sum(sampled(0.5, str(i)) for i in range(1000)) < 600


def app_for(out: Collector) -> Any:
    """The worker's Faust app with the processor's test doubles (no broker)."""
    return create_app(
        SETTINGS,
        SERDE,
        load_rules(),
        cmdb=CMDBIndex(),
        incidents=CIIncidentIndex(),
        windows=WindowIndex(SERDE, "w"),
        emit=out,
        table={},
    )


def test_the_faust_agent_runs_the_processor_in_test_context() -> None:
    out = Collector()
    app = app_for(out)
    agent = app.agents["alerts"]

    async def drive() -> None:
        async with agent.test_context() as ctx:
            await ctx.put(key=b"fp9", value=SERDE.encode(alert("fp9")))
            await ctx.put(key=b"bad", value=b"not avro")
            await ctx.put(
                key=b"fp9", value=SERDE.encode(alert("fp9", status=AlertStatus.RESOLVED, ends_at=NOW))
            )

    run(drive())
    topics = [t for t, *_ in out.sent]
    assert topics == ["x.itsm.incident.commands", "x.alerts.raw.dlq"]  # the resolve starts clearing


def test_the_guard_agent_dead_letters_undecodable_cmdb_records() -> None:
    out = Collector()
    app = app_for(out)
    guard = app.agents["guard-cmdb.ci"]

    async def drive() -> None:
        async with guard.test_context() as ctx:
            await ctx.put(key=b"ci-1", value=b"junk")
            await ctx.put(key=b"ci-2", value=None)

    run(drive())
    ((topic, key, _, headers),) = out.sent
    assert topic == "x.cmdb.ci.dlq" and key == b"ci-1" and header_map(headers)["dlq.stage"] == "guard.cmdb.ci"


def test_a_recovered_state_comes_due_even_when_a_record_touches_its_partition_before_the_first_tick() -> None:
    out, clock = Collector(), Clock(NOW)
    first = processor(out, clock, stable_period=60)
    run(first.handle(Consumed(b"fpA", SERDE.encode(alert("fpA")), [], "x.alerts.raw", 1, 1)))
    run(
        first.handle(
            Consumed(
                b"fpA", SERDE.encode(alert("fpA", status=AlertStatus.RESOLVED)), [], "x.alerts.raw", 1, 2
            )
        )
    )
    # A restarted worker: the table came back from its changelog, the due index did not.
    restarted = processor(out, clock, stable_period=60)
    restarted.table.update(first.table)
    clock.now += timedelta(seconds=5)
    run(
        restarted.handle(Consumed(b"fpB", SERDE.encode(alert("fpB")), [], "x.alerts.raw", 1, 3))
    )  # same partition, first
    clock.now += timedelta(seconds=61)
    assert run(indexed_tick(restarted, 1)) == 1
    resolves = [
        c
        for c in (
            SERDE.decode(v or b"", IncidentCommand) for t, _, v, _ in out.sent if t.endswith("commands")
        )
        if c.action is IncidentAction.RESOLVE
    ]
    assert [c.correlation_id for c in resolves] == ["itsmp-fpA"]


def test_the_guard_dead_letters_a_window_whose_time_zone_is_unknown() -> None:
    import io

    from fastavro import schemaless_writer

    from streams.core.models import MaintenanceWindow

    good = MaintenanceWindow(
        window_id="mw-tz",
        kind="MAINTENANCE",
        scope="GLOBAL",
        starts_at=NOW,
        ends_at=NOW + timedelta(days=1),
        updated_at=NOW,
        recurrence={
            "weekdays": ["SAT"],
            "start_time": "02:00",
            "duration_minutes": 60,
            "timezone": "Europe/Berlin",
        },
    )
    raw = good.to_avro()
    raw["recurrence"] = {**raw["recurrence"], "timezone": "Mars/Olympus_Mons"}
    loaded = SERDE.store.for_record(MaintenanceWindow)
    buf = io.BytesIO()
    schemaless_writer(buf, loaded.parsed, raw)
    value = b"\xc3\x01" + loaded.fingerprint + buf.getvalue()
    out = Collector()
    app = app_for(out)

    async def drive() -> None:
        async with app.agents["guard-maintenance.windows"].test_context() as ctx:
            await ctx.put(key=b"mw-tz", value=value)

    run(drive())
    ((topic, _, _, headers),) = out.sent
    h = header_map(headers)
    assert topic == "x.maintenance.windows.dlq" and h["dlq.error.class"] == "validation"
    assert "unknown IANA time zone" in h["dlq.exception.message"]
    view = WindowIndex(SERDE, "w")
    view.apply(b"mw-tz", value)
    assert view.windows() == []  # skipped (and counted), never a window that silently never opens


def test_a_dead_letter_the_broker_refuses_is_counted_and_stops_the_worker() -> None:
    from prometheus_client import REGISTRY

    class Refusing(Collector):
        async def __call__(self, topic: str, key: bytes | None, value: bytes | None, headers: list) -> None:  # type: ignore[type-arg]
            if topic.endswith(".dlq"):
                raise RuntimeError("broker down")
            await super().__call__(topic, key, value, headers)

    def failures() -> float:
        return (
            REGISTRY.get_sample_value("itsm_pipeline_dead_letter_write_failures_total", {"stage": "alerts"})
            or 0.0
        )

    before = failures()
    with pytest.raises(RuntimeError, match="broker down"):
        run(processor(Refusing()).handle(Consumed(b"bad", b"not avro", [], "x.alerts.raw", 0, 7)))
    assert failures() == before + 1


def test_an_alert_at_the_calendars_edges_is_processed_and_a_data_fault_is_dead_lettered() -> None:
    out = Collector()
    p = processor(out, stable_period=300)
    edge = alert("edge", status=AlertStatus.RESOLVED, ends_at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
    run(p.handle(Consumed(b"edge", SERDE.encode(alert("edge")), [], "x.alerts.raw", 0, 1)))
    assert run(p.handle(Consumed(b"edge", SERDE.encode(edge), [], "x.alerts.raw", 0, 2))) == "absorbed"

    # Whatever a stage raises because of a record's values (ValueError, OverflowError) dead-letters
    # that record; the stream goes on.
    def overflow(*_a: object, **_k: object) -> None:
        raise OverflowError("date value out of range")

    p.engine.process = overflow  # type: ignore[method-assign,assignment]
    assert run(p.handle(Consumed(b"edge", SERDE.encode(edge), [], "x.alerts.raw", 0, 3))) == "dead_lettered"
    ((_topic, _, _, headers),) = out.on("alerts.raw.dlq")
    assert header_map(headers)["dlq.error.class"] == "validation"
    assert "OverflowError" in header_map(headers)["dlq.exception.message"]


def test_an_over_long_fingerprint_is_bounded_the_same_way_every_time() -> None:
    from streams.core.models import MAX_FINGERPRINT

    long = "x" * 70_000
    a, b = alert(long), alert(long)
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) <= MAX_FINGERPRINT
    assert (
        a.fingerprint.startswith("sha256-")
        and alert("y" * MAX_FINGERPRINT).fingerprint == "y" * MAX_FINGERPRINT
    )
    out = Collector()
    assert run(processor(out).handle(Consumed(b"k", SERDE.encode(a), [], "x.alerts.raw", 0, 1))) == "emitted"
    ((_, _, value, _),) = out.on("itsm.incident.commands")
    assert len(SERDE.decode(value or b"", IncidentCommand).correlation_id) <= 100


def test_a_failing_due_index_pass_raises_in_the_next_tick_instead_of_vanishing() -> None:
    out, clock = Collector(), Clock(NOW)
    p = processor(out, clock, stable_period=60)
    p.table["broken"] = b"\xc1 not a state"  # a value no codec reads

    async def ticks() -> None:
        await p.tick(0)  # starts the pass in the background
        while p._indexing is not None and not p._indexing.done():
            await asyncio.sleep(0.01)
        await p.tick(0)

    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        run(ticks())


def test_a_running_producer_is_handed_out_without_a_turn_of_the_event_loop() -> None:
    # Faust's own maybe_start_producer (mode's stampede) yields to the loop three times per call,
    # and every record the worker sends calls it: WorkerApp returns a started producer at once.
    app = app_for(Collector())

    async def turns_while_getting_the_producer() -> tuple[int, Any]:
        app.producer._started.set()  # as once the worker runs (no broker needed to hand it out)
        turns: list[int] = []
        loop = asyncio.get_running_loop()
        loop.call_soon(turns.append, 1)
        producer = await app.maybe_start_producer()
        return len(turns), producer

    turns, producer = run(turns_while_getting_the_producer())
    assert producer is app.producer
    assert turns == 0


def test_a_batch_started_before_the_previous_one_finished_reads_its_states_and_writes_after_it() -> None:
    """Batches overlap (the next is processed while the previous one's acknowledgements are on
    their way): a repeat in the second batch sees the first batch's state, and each batch's
    states reach the table only once its own outputs were acknowledged."""
    acks: list[asyncio.Future[None]] = []

    class Acking(Collector):
        async def __call__(self, topic: str, key: bytes | None, value: bytes | None, headers: Any) -> Any:
            await super().__call__(topic, key, value, headers)
            ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            acks.append(ack)
            return ack

    out = Acking()
    p = processor(out)

    def record(offset: int) -> Consumed:
        return Consumed(b"fp1", SERDE.encode(alert("fp1")), [], "x.alerts.raw", 0, offset)

    async def drive() -> tuple[list[str], list[str]]:
        first = await p.start_batch([record(1)])
        second = await p.start_batch([record(2)])  # the first not finished yet
        assert p.table == {}  # nothing written before an acknowledgement
        for ack in acks:
            ack.set_result(None)
        done_first = await first.finish()
        assert set(p.table) == {"fp1"}
        return done_first, await second.finish()

    first, second = run(drive())
    assert first == ["emitted"] and second == ["deduplicated"]
    assert len(out.on("itsm.incident.commands")) == 1  # one incident, not two
    assert p.store.inflight == []
