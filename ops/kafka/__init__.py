"""A single-node KRaft Kafka broker run from Maven Central jars (no Docker)."""

from ops.kafka.broker import KAFKA_VERSION, Broker, BrokerError, fetch_jars

__all__ = ["KAFKA_VERSION", "Broker", "BrokerError", "fetch_jars"]
