"""ops/acls.toml as data: every name it grants is a declared topic, names resolve with the
topic prefix and app id, and plan/audit compute the right differences."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from ops import acls
from streams.core.settings import Settings


def settings(**kw: object) -> Settings:
    return Settings(topic_prefix="p.", app_id="app", **kw)  # type: ignore[arg-type]


def test_the_shipped_file_loads_and_declares_one_principal_per_component() -> None:
    file = acls.Declared.load()
    assert set(file.principals) == {
        "gateway",
        "worker",
        "sink-servicenow",
        "sink-jira",
        "sink-rt",
        "sink-webhook",
        "changes-sync",
        "incidents-sync",
        "gate",
        "cmdb-reconcile",
        "poller",
        "rules-admin",
        "replay",
        "status",
    }


def test_names_resolve_with_the_prefix_and_app_id_and_stars_are_prefixes() -> None:
    grants = acls.Declared.load().grants(settings())
    assert acls.Grant("User:worker", "TOPIC", "p.alerts.raw", "LITERAL", "READ") in grants
    assert acls.Grant("User:worker", "TOPIC", "p.alerts.raw", "LITERAL", "DESCRIBE") in grants
    # The worker's changelogs: its app id, as a prefix, never the topic prefix.
    assert acls.Grant("User:worker", "TOPIC", "app-", "PREFIXED", "CREATE") in grants
    assert acls.Grant("User:worker", "GROUP", "app", "LITERAL", "READ") in grants
    # Least privilege: the gateway reads no commands and writes no DLQ of the sinks.
    assert not any(g.principal == "User:gateway" and "commands" in g.name for g in grants)
    # The status service only describes the pipeline's topics (offsets, no records).
    status = {(g.name, g.operation) for g in grants if g.principal == "User:status"}
    assert ("p.itsm.incident.commands", "DESCRIBE") in status
    assert ("p.itsm.incident.commands", "READ") not in status


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('version = 1\n[principals.worker]\nread = ["no.such.topic"]\n', "no declared topic"),
        ('version = 1\n[principals.worker]\nreed = ["alerts.raw"]\n', "unknown keys"),
        ("version = 1\n", r"no \[principals"),
        ("version = \n", "not valid TOML"),
    ],
)
def test_a_bad_file_is_refused_naming_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "acls.toml"
    path.write_text(text)
    with pytest.raises(acls.AclsError, match=problem):
        acls.Declared.load(path)


def test_a_missing_file_is_named() -> None:
    with pytest.raises(acls.AclsError, match="does not exist"):
        acls.Declared.load(Path("/nonexistent/acls.toml"))


def test_plan_adds_what_is_missing_and_removes_only_declared_principals_extras() -> None:
    g = acls.Grant
    wanted = {g("User:worker", "TOPIC", "t", "LITERAL", "READ")}
    existing = {
        g("User:worker", "TOPIC", "u", "LITERAL", "WRITE"),  # a declared principal's extra
        g("User:intruder", "TOPIC", "t", "LITERAL", "READ"),  # nobody's: audit reports it
    }
    todo = acls.plan(wanted, existing, ["worker"])
    assert todo.create == [g("User:worker", "TOPIC", "t", "LITERAL", "READ")]
    assert todo.delete == [g("User:worker", "TOPIC", "u", "LITERAL", "WRITE")]
    found = acls.audit(wanted, existing, ["worker"], users=["worker", "ghost", "admin"])
    assert found.undeclared_grants == sorted(existing)
    assert found.undeclared_principals == ["ghost", "intruder"]  # admin is the super user
    assert found.missing_grants == sorted(wanted)
    assert not found.clean
    assert acls.audit(wanted, wanted, ["worker"], users=["worker"]).clean


def test_sasl_ssl_needs_a_principal_and_its_password() -> None:
    with pytest.raises(ValidationError, match="ITSM_KAFKA_SASL_USERNAME"):
        settings(kafka_security_protocol="SASL_SSL")
    s = settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="worker",
        kafka_sasl_password=SecretStr("pw-0123456789abcdef"),
        kafka_ca_file="/etc/ca.pem",
    )
    assert s.kafka_security() == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "worker",
        "sasl.password": "pw-0123456789abcdef",
        "ssl.ca.location": "/etc/ca.pem",
    }
    assert "pw-0123456789abcdef" not in repr(s)
    assert settings().kafka_security() == {}


def test_plain_mode_is_named_insecure_and_a_secured_one_names_its_principal() -> None:
    import structlog.testing

    from ops import runtime

    with structlog.testing.capture_logs() as logs:
        runtime.announce_kafka(settings(), "worker")
        runtime.announce_kafka(
            settings(
                kafka_security_protocol="SASL_SSL",
                kafka_sasl_username="worker",
                kafka_sasl_password=SecretStr("pw-0123456789abcdef"),
            ),
            "worker",
        )
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("kafka_insecure", "warning"),
        ("kafka_secured", "info"),
    ]
    assert logs[1]["principal"] == "worker" and "pw-0123456789abcdef" not in str(logs)


def test_a_broker_refusal_is_counted_by_reason_and_anything_else_is_not() -> None:
    from confluent_kafka import KafkaError

    from streams.core import telemetry
    from streams.core.kafka import identify, note_refusal

    def count(reason: str) -> float:
        return telemetry.AUTH_FAILURES.labels("unit-refusals", reason)._value.get()

    identify("unit-refusals", "worker")
    assert note_refusal(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied", "p.alerts.raw") == "kafka_acl"
    assert note_refusal(KafkaError.GROUP_AUTHORIZATION_FAILED, "denied") == "kafka_acl"
    assert note_refusal(KafkaError.SASL_AUTHENTICATION_FAILED, "bad password") == "kafka_sasl"
    assert note_refusal(KafkaError._TRANSPORT, "down") is None
    assert note_refusal(None, "nothing") is None
    assert (count("kafka_acl"), count("kafka_sasl")) == (2, 1)


def test_refusals_aiokafka_logs_are_counted_like_librdkafkas() -> None:
    import logging

    from streams.core import telemetry
    from streams.core.kafka import AiokafkaRefusals, count_aiokafka_refusals, identify

    def count(reason: str) -> float:
        return telemetry.AUTH_FAILURES.labels("unit-aiokafka", reason)._value.get()

    count_aiokafka_refusals()
    count_aiokafka_refusals()  # once per process, however often it is asked
    assert sum(isinstance(h, AiokafkaRefusals) for h in logging.getLogger("aiokafka").handlers) == 1
    identify("unit-aiokafka", "worker")
    log = logging.getLogger("aiokafka.consumer.group_coordinator")  # a child: handlers see it too
    log.error(
        "Unable connect to node with id 1: [Error 58] SaslAuthenticationFailed: Authentication "
        "failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"
    )
    log.error("Got error %s for topic %s", "TopicAuthorizationFailedError", "p.alerts.raw")
    log.error("Unable to update metadata from [1]")  # not a refusal
    log.info("SaslAuthenticationFailed mentioned below warning level")  # not counted
    assert (count("kafka_sasl"), count("kafka_acl")) == (1, 1)
