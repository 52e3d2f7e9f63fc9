"""Baselines for the worker bench: the least a stream processor can do with each record, copying
it from one topic to another, three ways.

    python -m bench.passthrough {faust-await,faust,confluent,processor} BOOTSTRAP INPUT OUTPUT GROUP

- faust-await: a bare Faust agent that sends each record and awaits the broker's acknowledgement
  before the next (what the worker did per record before it batched);
- faust: the same agent, not awaiting acknowledgements (Faust's usual way);
- confluent: a confluent-kafka consume/produce loop (librdkafka batches everything);
- processor: not a passthrough but the worker's own work per record without Faust: the alert
  processor (decode, the engine's stages under the default rules, encoding every output, the
  state in MessagePack) on that confluent-kafka loop, up to 500 records a batch, each batch's
  outputs and states (to OUTPUT, standing in for a changelog) acknowledged before its offsets are
  committed. What the worker could reach if alerts.raw were read without Faust's per-event
  machinery (issue #12's remedy), not a product path: no ticks, no rebalance handling.

Each commits its consumer group's offsets every 0.2 s, like the worker in the bench, and runs
until terminated. Same Faust settings as the worker (memory store, acks=all, earliest).
"""

from __future__ import annotations

import signal
import sys
from typing import Any

COMMIT_SECONDS = 0.2


def run_faust(bootstrap: str, source: str, target: str, group: str, await_acks: bool) -> None:
    import faust

    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_disable_leader=True,
        broker_commit_interval=COMMIT_SECONDS,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    src, dst = app.topic(source, **raw), app.topic(target, **raw)

    @app.agent(src, name="passthrough")
    async def passthrough(stream: Any) -> None:
        async for event in stream.events():
            ack = await dst.send(key=event.key, value=event.value)
            if await_acks:
                await ack

    worker = faust.Worker(app, loglevel="WARN", quiet=True)
    worker.spinner = None
    worker.execute_from_commandline()


def run_confluent(bootstrap: str, source: str, target: str, group: str) -> None:
    from confluent_kafka import Consumer, Producer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": int(COMMIT_SECONDS * 1000),
            # Offsets are stored only once the record was handed to the producer.
            "enable.auto.offset.store": False,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    consumer.subscribe([source])
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        for msg in consumer.consume(500, 0.1):
            if msg.error() is None:
                producer.produce(target, key=msg.key(), value=msg.value())
                consumer.store_offsets(msg)
        producer.poll(0)
    producer.flush(10)
    consumer.close()


def run_processor(bootstrap: str, source: str, target: str, group: str, prefix: str) -> None:
    import asyncio
    from collections.abc import Iterator, MutableMapping

    from confluent_kafka import Consumer, Producer, TopicPartition

    from streams.core.messages import Consumed
    from streams.core.rules import load_rules
    from streams.core.serde import AvroSerde
    from streams.core.settings import Settings
    from streams.processors.alerts import AlertProcessor
    from streams.processors.indexes import CIIncidentIndex, WindowIndex
    from streams.stages.cmdb import CMDBIndex

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    failed: list[Any] = []
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            # Python is called only for a record the broker did not take: the batch then fails.
            "delivery.report.only.error": True,
            "on_delivery": lambda err, _msg: failed.append(err),
        }
    )

    def acknowledged() -> None:
        left = producer.flush(30)
        if left or failed:
            raise RuntimeError(f"{left} records unacknowledged, {len(failed)} refused: {failed[:3]}")

    class Changelogged(MutableMapping[str, bytes]):
        """A dict whose writes also go to a topic, as a Faust table's go to its changelog."""

        def __init__(self) -> None:
            self.data: dict[str, bytes] = {}

        def __getitem__(self, key: str) -> bytes:
            return self.data[key]

        def __setitem__(self, key: str, value: bytes) -> None:
            self.data[key] = value
            producer.produce(target, key=key.encode(), value=value)

        def __delitem__(self, key: str) -> None:
            del self.data[key]
            producer.produce(target, key=key.encode(), value=None)

        def __iter__(self) -> Iterator[str]:
            return iter(self.data)

        def __len__(self) -> int:
            return len(self.data)

    async def emit(topic: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
        producer.produce(topic, key=key, value=value, headers=headers)
        producer.poll(0)

    serde = AvroSerde()
    windows = WindowIndex(serde, f"{prefix}maintenance.windows")
    settings = Settings(topic_prefix=prefix)
    processor = AlertProcessor(
        settings, serde, emit, load_rules(), Changelogged(), CMDBIndex(), CIIncidentIndex(), windows
    )
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer.subscribe([source])

    async def loop() -> None:
        while not stopping:
            batch = [m for m in consumer.consume(500, 0.1) if m.error() is None]
            if not batch:
                continue
            flight = await processor.start_batch([Consumed.from_confluent(m) for m in batch])
            acknowledged()  # every output (the worker awaits each ack)
            await flight.finish()  # the states written (and produced), then committed
            acknowledged()
            ends: dict[int, int] = {}
            for m in batch:
                ends[m.partition() or 0] = (m.offset() or 0) + 1
            done = [TopicPartition(source, p, o) for p, o in ends.items()]
            consumer.commit(offsets=done, asynchronous=True)

    asyncio.run(loop())
    consumer.close()


def main() -> None:
    mode, bootstrap, source, target, group = sys.argv[1:6]
    if mode == "processor":
        run_processor(bootstrap, source, target, group, prefix=sys.argv[6])
    elif mode == "confluent":
        run_confluent(bootstrap, source, target, group)
    else:
        run_faust(bootstrap, source, target, group, await_acks=mode == "faust-await")


if __name__ == "__main__":
    main()
