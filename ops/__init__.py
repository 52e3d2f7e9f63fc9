"""Operator tooling: the itsmctl command, the local Kafka broker, topic declarations."""
