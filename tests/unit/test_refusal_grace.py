"""RefusalGrace: a refused password is retried for a while (a rotation's seconds between the broker
and the process's file); a missing grant, a fatal error or refusals past the grace end the loop."""

from __future__ import annotations

from confluent_kafka import KafkaError

from streams.core.kafka import RefusalGrace


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


SASL = KafkaError(KafkaError._AUTHENTICATION)


def test_authentication_refusals_are_tolerated_only_within_the_grace() -> None:
    clock = Clock()
    grace = RefusalGrace(60, clock)
    assert grace.tolerate(SASL)
    clock.now += 30
    assert grace.tolerate(KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED))
    clock.now += 30
    assert grace.tolerate(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED))  # 60 s: still within
    clock.now += 1
    assert not grace.tolerate(SASL)  # refused for 61 s in a row: the loop stops


def test_a_record_or_a_quiet_grace_period_ends_the_row() -> None:
    clock = Clock()
    grace = RefusalGrace(60, clock)
    assert grace.tolerate(SASL)
    clock.now += 59
    grace.cleared()  # a record arrived: authenticated again
    clock.now += 59
    assert grace.tolerate(SASL)  # a new row, not 118 s of one
    clock.now += 61  # no refusal for longer than the grace: the next one starts a new row
    assert grace.tolerate(SASL)
    clock.now += 61
    assert grace.tolerate(SASL)  # a refusal after 61 quiet seconds starts yet another row
    clock.now += 30
    assert grace.tolerate(SASL)


def test_a_missing_grant_or_a_fatal_error_is_never_tolerated() -> None:
    grace = RefusalGrace(60, Clock())
    assert not grace.tolerate(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    assert not grace.tolerate(KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED))
    assert not grace.tolerate(KafkaError(KafkaError._AUTHENTICATION, fatal=True))
    assert not grace.tolerate(KafkaError(KafkaError._TIMED_OUT))  # not a refusal: the caller's rules
