"""The alerts agent's work without Faust: decode, run the engine, publish every effect, or dead-letter."""

from __future__ import annotations

import asyncio
import collections
import time
import zlib
from collections.abc import Callable, MutableMapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
from opentelemetry.trace import SpanKind

from streams.core import telemetry
from streams.core.dlq import ErrorClass
from streams.core.messages import Consumed, Output, encoded
from streams.core.models import (
    Alert,
    CorrelationDecisionKind,
    CorrelationSample,
    MaintenanceWindow,
    SuppressedAlert,
)
from streams.core.rules import Rules
from streams.core.serde import AvroSerde, SerdeError
from streams.core.settings import Settings
from streams.core.topics import (
    ALERTS_CI_INCIDENTS,
    ALERTS_CORRELATION_SAMPLES,
    ALERTS_RAW,
    ALERTS_SUPPRESSED,
    AUDIT_EVENTS,
    INCIDENT_COMMANDS,
    MAINTENANCE_WINDOWS,
    dlq_name,
)
from streams.processors.effects import (
    DATA_FAULTS,
    Emitter,
    send_dead_letter,
    send_outputs,
    settle,
    settle_dead_letter,
)
from streams.processors.indexes import index_key
from streams.stages.alerts.causes import DeploySource, NoDeploys
from streams.stages.alerts.engine import AlertEngine
from streams.stages.alerts.lifecycle import fingerprints_of
from streams.stages.alerts.state import (
    AlertState,
    Effects,
    ItsmIncidents,
    NoItsmIncidents,
    copy_state,
    decode_state,
    encode_state,
)
from streams.stages.cmdb import CIIndex

STAGE = "alerts"
COMMAND_LATENCY = telemetry.LATENCY.labels("ingest_to_command", "worker", "")


class IncidentIndexWriter(Protocol):
    def get(self, ci_id: str) -> str | None: ...

    def entries(self, ci_id: str) -> list[str]: ...

    def set(self, ci_id: str, incident: str, entry: str | None) -> None: ...


class WindowWriter(Protocol):
    """The window calendar the worker reads and writes (processors/indexes.py WindowIndex): it
    publishes a source alert's inhibitions, and looks again at what a changed window keeps quiet."""

    def windows(self) -> list[MaintenanceWindow]: ...

    def put(self, record: MaintenanceWindow) -> None: ...

    def delete(self, window_id: str) -> None: ...

    def drain_changed(self) -> list[str]: ...


class TableStore:
    """AlertState in a mapping of fingerprint -> MessagePack bytes (the Faust table, or a dict in
    tests). While a batch is processed, its states are staged here and read back from the stage
    (as copies: a stage that fails half-way must not leave its changes behind); they reach the
    table only once the batch's outputs are acknowledged. Batches processed but not yet
    acknowledged (inflight, oldest first) are read before the table, newest first.

    The last firing alert a state keeps goes to the table's changelog with its sensitive fields
    encrypted (`serde.seal`), like the alert on alerts.raw.
    """

    def __init__(self, table: MutableMapping[str, bytes], serde: AvroSerde | None = None) -> None:
        self.table = table
        self.staged: dict[str, AlertState] | None = None
        self.inflight: list[dict[str, AlertState]] = []
        # Only with keys configured: without them nothing is encrypted, and a get per record
        # should not pay for looking.
        crypt = serde.crypt if serde is not None else None
        self.serde = serde if crypt is not None and crypt.keys is not None else None
        self.log = telemetry.get_logger("worker.alerts")

    def get(self, fingerprint: str) -> AlertState | None:
        if self.staged is not None and fingerprint in self.staged:
            return copy_state(self.staged[fingerprint])
        for batch in reversed(self.inflight):
            if fingerprint in batch:
                return copy_state(batch[fingerprint])
        raw = self.table.get(fingerprint)
        if not raw:
            return None
        state = decode_state(raw)
        if self.serde is not None and state.alert is not None:
            try:
                state.alert = self.serde.open(Alert, state.alert)
            except SerdeError as exc:
                # Kept as it is: an incident it opens carries the ciphertext, which the sink
                # dead-letters with this reason (replayable once the key is back).
                self.log.error("state_decrypt_failed", fingerprint=fingerprint, error=str(exc))
        return state

    def settled(self, batch: dict[str, AlertState]) -> None:
        """A batch's states are in the table now (or its batch failed): no longer read from it."""
        self.inflight = [b for b in self.inflight if b is not batch]

    def put(self, state: AlertState) -> None:
        if self.serde is not None and state.alert is not None:
            state = msgspec.structs.replace(state, alert=self.serde.seal(Alert, state.alert))
        self.table[state.fingerprint] = encode_state(state)


def sampled(rate: float, *parts: str | None) -> bool:
    """Deterministic sampling: the same decision is always sampled, or never."""
    if rate <= 0:
        return False
    return zlib.crc32("|".join(p or "" for p in parts).encode()) % 10_000 < rate * 10_000


def _observe_command_latency(entered: float) -> Callable[[Any], None]:
    def observe(ack: Any) -> None:
        if not ack.cancelled() and ack.exception() is None:
            COMMAND_LATENCY.observe(max(0.0, time.time() - entered))

    return observe


@dataclass
class InFlight:
    """A processed batch whose outputs are on their way to the broker (AlertProcessor.start_batch)."""

    processor: AlertProcessor
    now: datetime
    staged: dict[str, AlertState] = field(default_factory=dict)
    acks: list[Any] = field(default_factory=list)
    letters: list[tuple[Any, ErrorClass]] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)

    def time_command(self, acks: list[Any], entered: float) -> None:
        """ingest_to_command for a record that made a command: when its last output is acknowledged."""
        last = acks[-1] if acks else None
        if isinstance(last, asyncio.Future):
            last.add_done_callback(_observe_command_latency(entered))
        else:  # an emitter without acknowledgements (tests): the command is out now
            COMMAND_LATENCY.observe(max(0.0, time.time() - entered))

    async def finish(self) -> list[str]:
        """Wait for every acknowledgement of the batch, then write its states to the table (only
        then: a crash before re-processes the batch); returns how each record was accounted for."""
        p = self.processor
        try:
            for ack in self.acks:
                await settle(ack)
            for ack, error_class in self.letters:
                await settle_dead_letter(ack, STAGE, error_class)
            for state in self.staged.values():
                p._put(state)
                p._track(state, self.now)
        finally:
            # Written, or failed (the worker crashes and re-processes from the last commit).
            p.store.settled(self.staged)
        return self.outcomes


@dataclass
class AlertProcessor:
    """Everything the alerts agent does per record and per tick."""

    settings: Settings
    serde: AvroSerde
    emit: Emitter
    rules: Rules
    table: MutableMapping[str, bytes]
    cmdb: CIIndex
    incidents: IncidentIndexWriter
    windows: WindowWriter
    itsm: ItsmIncidents = field(default_factory=NoItsmIncidents)
    deploys: DeploySource = field(default_factory=NoDeploys)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # Per owned partition: fingerprint -> when its state is due (POSIX seconds; a float is a
    # third of a datetime's memory, and a million open alerts each have a due time).
    due: dict[int, dict[str, float]] = field(default_factory=dict)
    # Partitions whose recovered states are not indexed yet (after an assignment).
    unindexed: set[int] = field(default_factory=set)
    # States decoded per event-loop turn while the due index is built (others run in between).
    index_chunk: int = 5000
    # The context a table write of a partition's state is made in (the worker's Faust table
    # writes to the changelog partition of the current event: agents/app.py).
    in_partition: Callable[[int], AbstractContextManager[Any]] = lambda _partition: nullcontext()
    # window id -> the states it keeps quiet (partition, fingerprint), so a window that ends early
    # (a silence expired, a maintenance cancelled) makes them due at once.
    quieted: dict[str, set[tuple[int, str]]] = field(default_factory=dict)
    _quieted_by: dict[str, str] = field(default_factory=dict)  # fingerprint -> its window id
    _indexing: asyncio.Future[None] | None = None

    def __post_init__(self) -> None:
        t = self.settings.topic
        self.topics = {
            name: t(name)
            for name in (
                INCIDENT_COMMANDS,
                ALERTS_SUPPRESSED,
                ALERTS_CORRELATION_SAMPLES,
                ALERTS_CI_INCIDENTS,
                ALERTS_RAW,
                MAINTENANCE_WINDOWS,
                AUDIT_EVENTS,
            )
        }
        self.dlq_topic = dlq_name(t(ALERTS_RAW))
        self.store = TableStore(self.table, self.serde)
        self.engine = AlertEngine(
            self.rules, self.store, self.cmdb, self.incidents, self.windows, self.itsm, self.deploys
        )
        self.log = telemetry.get_logger("worker.alerts")
        self.tracer = telemetry.tracer("worker.alerts")

    def switch_rules(self, rules: Rules) -> None:
        """Run the next record under another rule set (called between records, never within)."""
        self.rules = rules
        self.engine = AlertEngine(
            rules, self.store, self.cmdb, self.incidents, self.windows, self.itsm, self.deploys
        )

    async def handle(self, record: Consumed) -> str:
        """Process one alerts.raw record; returns how it was accounted for."""
        return (await self.handle_batch([record]))[0]

    async def handle_batch(self, records: Sequence[Consumed]) -> list[str]:
        """Process alerts.raw records in order and finish them; returns how each was accounted for."""
        return await (await self.start_batch(records)).finish()

    async def start_batch(self, records: Sequence[Consumed]) -> InFlight:
        """Process alerts.raw records in order and send every output (and dead letter) of the
        batch, without waiting for the broker: the returned InFlight's finish() waits for every
        acknowledgement at once, then writes the batch's states to the table. Until then later
        batches read those states from the store's overlay, so the next batch is processed while
        this one's acknowledgements are on their way; a crash before finish re-processes the batch
        from the last commit (its offsets move only after finish), it never loses a command.
        """
        now = self.clock()
        flight = InFlight(self, now)
        staged = flight.staged
        self.store.staged = staged
        try:
            for record in records:
                # One span per record, continuing the trace its headers carry (the gateway's); the
                # engine's stages are its events, and the outputs carry it on to the sinks.
                with self.tracer.start_as_current_span(
                    f"{STAGE} process",
                    context=telemetry.extract_context(record.headers),
                    kind=SpanKind.CONSUMER,
                ) as span:
                    span.set_attribute("messaging.kafka.partition", record.partition)
                    span.set_attribute("messaging.kafka.offset", record.offset)
                    try:
                        alert = self.serde.decode(record.value or b"", Alert)
                        with self.in_partition(record.partition):  # the table reads its partition first
                            fx, state = self.engine.process(alert, now, record.partition)
                        outputs = self._encode(fx, now)
                    except SerdeError as exc:
                        error = ErrorClass(exc.error_class)
                        flight.letters.append(await self._letter(record, now, error, str(exc)))
                        flight.outcomes.append("dead_lettered")
                        continue
                    except DATA_FAULTS as exc:
                        message = f"{type(exc).__name__}: {exc}"
                        flight.letters.append(await self._letter(record, now, ErrorClass.VALIDATION, message))
                        flight.outcomes.append("dead_lettered")
                        continue
                    self._apply_index(fx)
                    carried = telemetry.inject_headers(record.trace())  # this span now the parent
                    acks = await send_outputs(self.emit, outputs, carried)
                    flight.acks.extend(acks)
                    if state is not None:  # None: an event rule dropped it, nothing to keep
                        staged[state.fingerprint] = state
                    flight.outcomes.append(fx.outcome.value)
                    span.set_attribute("outcome", fx.outcome.value)
                    if fx.commands and (entered := record.ingested_at()) is not None:
                        flight.time_command(acks, entered)
        except BaseException:
            self.store.staged = None
            raise
        self.store.staged = None
        self.store.inflight.append(staged)
        # Counted as decided (a batch that fails later is processed, and counted, again).
        for outcome, count in collections.Counter(flight.outcomes).items():
            telemetry.ALERT_OUTCOMES.labels(outcome).inc(count)
        return flight

    async def tick(self, partition: int) -> int:
        """Time-driven transitions of this partition's alerts that came due; returns how many ran."""
        now = self.clock()
        if partition not in self.due:
            self.due[partition] = {}
            self.unindexed.add(partition)
        if self._indexing is not None and self._indexing.done() and not self._indexing.cancelled():
            # A pass that failed raises here, in the agent, instead of being lost in its task.
            self._indexing.result()
        if self.unindexed and (self._indexing is None or self._indexing.done()):
            # In the background: alerts keep flowing while a large table is indexed (a state
            # not indexed yet comes due on a later tick, once the pass has reached it).
            self._indexing = asyncio.ensure_future(self._index(now))
        self._itsm_changes(now)
        self._window_changes(now)
        due = self.due[partition]
        stamp = now.timestamp()
        ready = [fp for fp, at in due.items() if at <= stamp]
        acks: list[Any] = []
        written: list[AlertState] = []
        for fp in ready:
            del due[fp]
            fx, state = self.engine.tick(fp, now)
            if fx is not None and state is not None:
                self._apply_index(fx)
                acks.extend(await send_outputs(self.emit, self._encode(fx, now), []))
                written.append(state)
            elif state is not None:
                self._track(state, now)
        for ack in acks:
            await settle(ack)
        for state in written:
            self._put(state)
            self._track(state, now)
        return len(ready)

    def _itsm_changes(self, now: datetime) -> None:
        """Incidents the ITSM changed (itsm.incidents): their states' due times are computed again
        (a person resolving an incident while its alert fires makes it due)."""
        drain = getattr(self.itsm, "drain_changed", None)
        if drain is None:
            return
        for incident in drain():
            for fingerprint in fingerprints_of(incident):
                state = self.store.get(fingerprint)
                if state is not None and state.incident_id == incident and state.partition in self.due:
                    self._track(state, now)

    def _window_changes(self, now: datetime) -> None:
        """Windows that changed (maintenance.windows): the states they keep quiet come due now, so
        one that ended early lets its alerts open (the engine checks the window again)."""
        stamp = now.timestamp()
        for window_id in self.windows.drain_changed():
            for partition, fingerprint in self.quieted.pop(window_id, set()):
                self._quieted_by.pop(fingerprint, None)
                bucket = self.due.get(partition)
                if bucket is not None:
                    bucket[fingerprint] = min(bucket.get(fingerprint, stamp), stamp)

    def forget_partitions(self) -> None:
        """After a rebalance: index the recovered states again on the next tick."""
        if self._indexing is not None and not self._indexing.done():
            self._indexing.cancel()
        self._indexing = None
        self.due = {}
        self.unindexed.clear()
        self.quieted.clear()  # rebuilt from the recovered states by the next index pass
        self._quieted_by.clear()

    async def _index(self, now: datetime) -> None:
        """Index the due times of every recovered state of the partitions not indexed yet, in one
        pass over the table for all of them (not one per partition), yielding to the event loop
        every index_chunk states so alerts, heartbeats and commits go on meanwhile."""
        wanted = set(self.unindexed)
        building: dict[int, dict[str, float]] = {p: {} for p in wanted}
        keys = list(self.table.keys())  # a snapshot: the table changes while the pass yields
        started = time.monotonic()
        for i, fingerprint in enumerate(keys, 1):
            if i % self.index_chunk == 0:
                await asyncio.sleep(0)
            raw = self.table.get(fingerprint)
            if not raw:
                continue
            state = decode_state(raw)
            bucket = building.get(state.partition)
            if bucket is not None:
                self._quiet(state)
                at = self.engine.due(state, now)
                if at is not None:
                    bucket[fingerprint] = at.timestamp()
        epoch = self.due
        for partition, bucket in building.items():
            if partition not in epoch:
                continue  # revoked meanwhile
            # States tracked while the pass ran are newer than what it read.
            bucket.update(epoch[partition])
            epoch[partition] = bucket
        self.unindexed -= wanted
        self.log.info(
            "due_index_built",
            partitions=sorted(wanted),
            states=len(keys),
            seconds=round(time.monotonic() - started, 3),
        )

    def _quiet(self, state: AlertState) -> None:
        """Keep quieted current: a state leaves its old window's set when it is no longer kept
        quiet by it (opened, resolved, or another window took over), so the sets stay bounded."""
        member = (state.partition, state.fingerprint)
        previous = self._quieted_by.get(state.fingerprint)
        if previous is not None and previous != state.suppressed_by:
            members = self.quieted.get(previous)
            if members is not None:
                members.discard(member)
                if not members:
                    del self.quieted[previous]
            del self._quieted_by[state.fingerprint]
        if state.suppressed_by:
            self.quieted.setdefault(state.suppressed_by, set()).add(member)
            self._quieted_by[state.fingerprint] = state.suppressed_by

    def _track(self, state: AlertState, now: datetime) -> None:
        self._quiet(state)
        at = self.engine.due(state, now)
        if state.partition not in self.due:
            # First touch of this partition since (re)assignment: its recovered states are indexed
            # from the next tick on.
            self.due[state.partition] = {}
            self.unindexed.add(state.partition)
        bucket = self.due[state.partition]
        if at is None:
            bucket.pop(state.fingerprint, None)
        else:
            bucket[state.fingerprint] = at.timestamp()

    def _encode(self, fx: Effects, now: datetime) -> list[Output]:
        """Every output record of fx, encoded first: a record that cannot be encoded fails the input."""
        t, serde = self.topics, self.serde
        out = [encoded(serde, t[INCIDENT_COMMANDS], cmd.correlation_id, cmd) for cmd in fx.commands]
        for sup in fx.suppressed:
            record = SuppressedAlert(
                alert=sup.alert,
                reason=sup.reason,
                window_id=sup.window.window_id if sup.window else None,
                change_id=sup.window.change_id if sup.window else None,
                window_ends_at=sup.window.ends_at if sup.window else None,
                suppressed_at=now,
            )
            out.append(encoded(serde, t[ALERTS_SUPPRESSED], sup.alert.fingerprint, record))
        rate = self.rules.correlation.sampling.rate
        for d in fx.decisions:
            if not sampled(rate, d.fingerprint, d.incident_id, d.ci_id):
                continue
            sample_id = f"{d.fingerprint}:{int(now.timestamp() * 1000)}"
            sample = CorrelationSample(
                sample_id=sample_id,
                fingerprint=d.fingerprint,
                rule=d.rule,
                decision=CorrelationDecisionKind(d.decision.upper()),
                ci_id=d.ci_id,
                incident_id=d.incident_id,
                labels=d.labels,
                decided_at=now,
            )
            out.append(encoded(serde, t[ALERTS_CORRELATION_SAMPLES], sample_id, sample))
        for (ci_id, incident), entry in fx.index_updates.items():
            out.append(
                Output(t[ALERTS_CI_INCIDENTS], index_key(ci_id, incident), entry.encode() if entry else None)
            )
        for event in fx.audits:  # probable causes and restores (changes report)
            out.append(encoded(serde, t[AUDIT_EVENTS], event.subject_id, event))
        for window in fx.windows:  # a source alert's inhibitions
            out.append(encoded(serde, t[MAINTENANCE_WINDOWS], window.window_id, window))
        for window_id in fx.windows_gone:
            out.append(Output(t[MAINTENANCE_WINDOWS], window_id.encode(), None))
        return out

    async def _letter(
        self, record: Consumed, now: datetime, error_class: ErrorClass, message: str
    ) -> tuple[Any, ErrorClass]:
        ack = await send_dead_letter(
            self.emit, STAGE, record, error_class, message, now, self.log, self.dlq_topic
        )
        return ack, error_class

    def _put(self, state: AlertState) -> None:
        with self.in_partition(state.partition):
            self.store.put(state)

    def _apply_index(self, fx: Effects) -> None:
        # Read-your-writes: later records see these index and window updates before the topics
        # echo them.
        for (ci_id, incident), entry in fx.index_updates.items():
            self.incidents.set(ci_id, incident, entry)
        for window in fx.windows:
            self.windows.put(window)
        for window_id in fx.windows_gone:
            self.windows.delete(window_id)
