"""Baselines for the worker bench: the least a stream processor can do with each record, copying
it from one topic to another, three ways.

    python -m bench.passthrough {faust-await,faust,confluent} BOOTSTRAP INPUT OUTPUT GROUP

- faust-await: a bare Faust agent that sends each record and awaits the broker's acknowledgement
  before the next (what the worker did per record before it batched);
- faust: the same agent, not awaiting acknowledgements (Faust's usual way);
- confluent: a confluent-kafka consume/produce loop (librdkafka batches everything).

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


def main() -> None:
    mode, bootstrap, source, target, group = sys.argv[1:6]
    if mode == "confluent":
        run_confluent(bootstrap, source, target, group)
    else:
        run_faust(bootstrap, source, target, group, await_acks=mode == "faust-await")


if __name__ == "__main__":
    main()
