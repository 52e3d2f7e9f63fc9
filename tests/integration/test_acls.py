"""The secured broker's least privilege: ops/acls.toml applied by `itsmctl acls apply`, each
principal refused outside its grant (logged and counted), `acls audit` finding what nobody
declared, and the pipeline running with one principal per component.

A broker of its own (SASL_SSL, SCRAM-SHA-512, StandardAuthorizer, nothing allowed that no ACL
grants), so the grants here are the only ones on it."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog.testing
from confluent_kafka import Consumer, KafkaError

from ops import acls
from ops.kafka.security import scram_user
from ops.stack import Stack
from streams.core import telemetry
from streams.core.kafka import AckedProducer, DeliveryError, client_config, identify
from streams.core.models import AuditEvent
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.core.topics import declared
from tests.cli import Itsmctl
from tests.kafka_util import consume
from tests.secured import APP, PREFIX, Secured, secured_broker

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data" / "alertmanager"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    yield from secured_broker(tmp_path_factory.mktemp("acl-broker"))


def failures(component: str, reason: str) -> float:
    return telemetry.AUTH_FAILURES.labels(component, reason)._value.get()


def send(settings: Settings, topic: str) -> None:
    async def go() -> None:
        producer = AckedProducer(settings, **{"message.timeout.ms": 15000})
        try:
            await producer.send(topic, b"k", b"v")
        finally:
            producer.close(2)

    asyncio.run(go())


def first_record_error(settings: Settings, group: str, topic: str) -> int | None:
    """Subscribe to a topic as settings' principal, in a consumer group it may use: the error
    code of the first answer."""
    consumer = Consumer(
        client_config(
            settings, **{"group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
        )
    )
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is not None:
                return int(msg.error().code())
    finally:
        consumer.close()
    return None


def own_group(grants: dict[str, list[str]]) -> str:
    """A consumer group id this principal may use."""
    pattern = grants["groups"][0].format(app_id=APP)
    return pattern[:-1] + "probe" if pattern.endswith("*") else pattern


def outside(grants: dict[str, list[str]], kinds: tuple[str, ...]) -> str:
    """A declared topic none of these kinds of grant names (literal or by prefix)."""
    named = [t for kind in kinds for t in grants.get(kind, [])]
    for spec in declared():
        if not any(spec.name == t or (t.endswith("*") and spec.name.startswith(t[:-1])) for t in named):
            return spec.name
    raise AssertionError("this principal may touch every topic")


PRINCIPALS = sorted(acls.Declared.load().principals)


def test_a_wrong_password_is_refused_and_counted(secured: Secured) -> None:
    identify("test-badpass", "worker")
    before = failures("test-badpass", "kafka_sasl")
    s = secured.settings("worker", password="not-" + secured.passwords["worker"].read_text())
    with pytest.raises(DeliveryError):
        send(s, s.topic("alerts.raw"))
    assert failures("test-badpass", "kafka_sasl") > before


def test_a_view_on_a_topic_its_principal_may_not_read_fails_and_is_counted(secured: Secured) -> None:
    from streams.core.follower import TopicFollower

    identify("test-view", "gateway")
    before = failures("test-view", "kafka_acl")
    s = secured.settings("gateway")
    view = TopicFollower(s, s.topic("itsm.results"), lambda _k, _v: None).start()
    try:
        deadline = time.monotonic() + 30
        while view.failure is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "failed" in str(view.problem()) and "uthoriz" in str(view.problem())
    finally:
        view.stop()
    assert failures("test-view", "kafka_acl") > before


def test_acls_apply_makes_the_cluster_match_the_file_idempotently_and_is_audited(
    secured: Secured, itsmctl: Itsmctl
) -> None:
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    admin = secured.admin()
    missing = acls.Grant("User:worker", "TOPIC", f"{PREFIX}alerts.raw", "LITERAL", "READ")
    stray = acls.Grant("User:worker", "TOPIC", f"{PREFIX}dlq.replays", "LITERAL", "WRITE")
    acls.execute(admin, acls.Plan(create=[stray], delete=[missing]))
    env = secured.env()
    dry = itsmctl("acls", "apply", "--dry-run", **env)
    assert dry.returncode == 0, dry.stderr
    assert f"+ {missing}" in dry.stdout and f"- {stray}" in dry.stdout
    assert "1 to grant, 1 to remove (dry run)" in dry.stdout
    assert stray in acls.current(admin) and missing not in acls.current(admin)  # a dry run changes nothing
    done = itsmctl("acls", "apply", "--actor", "alice", **env)
    assert done.returncode == 0, done.stderr
    assert "1 granted, 1 removed" in done.stdout
    now = acls.current(admin)
    assert missing in now and stray not in now
    again = itsmctl("acls", "apply", **env)
    assert "0 to grant, 0 to remove" in again.stdout
    records = [
        AvroSerde().decode(m.value(), AuditEvent)
        for m in consume(secured.broker.bootstrap, f"{PREFIX}audit.events", 10**6, timeout=5)
    ]
    mine = [(r.action, r.actor, r.details["grant"]) for r in records if r.actor == "alice"]
    assert sorted(mine) == [("acl.grant", "alice", str(missing)), ("acl.revoke", "alice", str(stray))]
    # Someone else's grant (a principal nobody declared) is audit's business, never removed.
    other = AclBinding(
        ResourceType.TOPIC,
        f"{PREFIX}alerts.raw",
        ResourcePatternType.LITERAL,
        "User:intruder",
        "*",
        AclOperation.READ,
        AclPermissionType.ALLOW,
    )
    for f in admin.create_acls([other]).values():
        f.result()
    try:
        assert "0 to grant, 0 to remove" in itsmctl("acls", "apply", **env).stdout
    finally:
        theirs = acls.Grant("User:intruder", "TOPIC", f"{PREFIX}alerts.raw", "LITERAL", "READ")
        acls.execute(admin, acls.Plan(create=[], delete=[theirs]))


def test_acls_audit_finds_a_grant_and_a_principal_nobody_declared(secured: Secured, itsmctl: Itsmctl) -> None:
    admin = secured.admin()
    env = secured.env()
    clean = itsmctl("acls", "audit", **env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"{len(PRINCIPALS)} principals" in clean.stdout
    intruder = acls.Grant("User:intruder", "TOPIC", f"{PREFIX}audit.events", "LITERAL", "READ")
    acls.execute(admin, acls.Plan(create=[intruder], delete=[]))
    scram_user(admin, "ghost", secrets.token_urlsafe(24))
    try:
        found = itsmctl("acls", "audit", "-o", "json", **env)
        assert found.returncode == 1, found.stderr
        report = json.loads(found.stdout)
        assert report["undeclared_grants"] == [str(intruder)]
        assert report["undeclared_principals"] == ["ghost", "intruder"]
        assert report["missing_grants"] == []
        text = itsmctl("acls", "audit", **env)
        assert f"undeclared grant: {intruder}" in text.stdout
        assert "undeclared principal: ghost" in text.stdout
    finally:
        acls.execute(admin, acls.Plan(create=[], delete=[intruder]))
        from confluent_kafka.admin import ScramMechanism, UserScramCredentialDeletion

        for f in admin.alter_user_scram_credentials(
            [UserScramCredentialDeletion("ghost", ScramMechanism.SCRAM_SHA_512)]
        ).values():
            f.result()


def test_acls_commands_explain_bad_input(secured: Secured, itsmctl: Itsmctl, tmp_path: Path) -> None:
    env = secured.env()
    bad = tmp_path / "acls.toml"
    bad.write_text('version = 1\n[principals.worker]\nread = ["no.such.topic"]\n')
    r = itsmctl("acls", "apply", "--file", str(bad), **env)
    assert r.returncode == 2 and "no.such.topic" in r.stderr and "Traceback" not in r.stderr
    r = itsmctl("acls", "user", "nobody", "--password-file", str(tmp_path / "none"), **env)
    assert r.returncode == 2 and "declare it first" in r.stderr
    short = tmp_path / "short"
    short.write_text("tooshort")
    r = itsmctl("acls", "user", "worker", "--password-file", str(short), **env)
    assert r.returncode == 2 and "16 characters" in r.stderr
    # Not the administrator: the broker refuses, in one line.
    r = itsmctl("acls", "audit", **secured.env("gateway"))
    assert r.returncode == 2 and "gateway is not the broker's administrator" in r.stderr, r.stderr


def principals_stack(secured: Secured, tmp_path: Path, principals: dict[str, str]) -> Stack:
    """The pipeline's processes on the secured broker, each named component as its principal."""
    return Stack(
        tmp_path / "stack",
        secured.broker.bootstrap,
        kafka_env=secured.env("admin"),
        topic_prefix=PREFIX,
        app_id=APP,
        component_env={name: secured.env(principal) for name, principal in principals.items()},
    )


def test_the_pipeline_runs_with_one_principal_per_component(secured: Secured, tmp_path: Path) -> None:
    """Gateway, worker and ServiceNow sink, each as its own principal with only its grants: an
    Alertmanager notification becomes incidents in the ITSM, nothing dead-lettered."""
    stack = principals_stack(
        secured, tmp_path, {"gateway": "gateway", "worker": "worker", "sink": "sink-servicenow"}
    )
    try:
        stack.start()
        firing = json.loads((DATA / "highcpu-group-firing.json").read_text())
        r = httpx.post(f"{stack.gateway_url}/v1/alerts/alertmanager", json=firing, timeout=30)
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 120
        while True:
            stack.check_alive()
            with stack.itsm() as itsm:
                got = itsm.get("/api/now/table/incident", params={"sysparm_fields": "correlation_id"})
            if len(got.json()["result"]) == 3:
                break
            assert time.monotonic() < deadline, {n: stack.log_tail(n) for n in stack.procs}
            time.sleep(0.5)
        for topic in ("alerts.raw.dlq", "itsm.incident.commands.dlq"):
            assert consume(secured.broker.bootstrap, f"{PREFIX}{topic}", 1, timeout=2) == []
        for name in ("gateway", "worker", "sink"):
            log = (stack.workdir / "logs" / f"{name}.log").read_text()
            assert "kafka_refused" not in log and "kafka_secured" in log, name
    finally:
        codes = stack.stop()
    assert all(code == 0 for code in codes.values()), (codes, {n: stack.log_tail(n) for n in codes})


def test_a_sink_whose_results_view_loses_its_grant_stops_with_one_line(
    secured: Secured, tmp_path: Path
) -> None:
    """A running sink's READ grant on itsm.results is revoked: its view fails (a missing grant is
    never waited out) and the sink stops with exit 2 and one line naming it, no traceback."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    stack = principals_stack(secured, tmp_path, {"sink": "sink-servicenow"})
    admin = AdminClient(secured.broker.client_config())
    try:
        stack.start(["devitsm", "sink"])
        log = stack.workdir / "logs" / "sink.log"
        deadline = time.monotonic() + 60
        while "sink_started" not in log.read_text():
            stack.check_alive()
            assert time.monotonic() < deadline, stack.log_tail("sink")
            time.sleep(0.2)
        revoke = AclBindingFilter(
            ResourceType.TOPIC,
            f"{PREFIX}itsm.results",
            ResourcePatternType.ANY,
            "User:sink-servicenow",
            None,
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        deleted = admin.delete_acls([revoke])[revoke].result()
        assert deleted, "the sink had no grant on itsm.results to revoke"
        sink = stack.procs["sink"]
        deadline = time.monotonic() + 60
        while sink.poll() is None:
            assert time.monotonic() < deadline, stack.log_tail("sink")
            time.sleep(0.2)
        text = log.read_text()
        assert sink.returncode == 2, stack.log_tail("sink")
        assert "Traceback" not in text
        assert f"itsmctl sink: view of {PREFIX}itsm.results failed:" in text
        assert "uthoriz" in text.split("itsmctl sink: view of", 1)[1].splitlines()[0]
    finally:
        stack.stop()
        file = acls.Declared.load()
        acls.execute(
            admin, acls.plan(file.grants(secured.settings("worker")), acls.current(admin), file.principals)
        )


# Last in this file: the allowed writes below leave records the tests above would read.
@pytest.mark.parametrize("principal", PRINCIPALS)
def test_each_principal_is_refused_outside_its_grant_and_the_refusal_is_logged_and_counted(
    secured: Secured, principal: str
) -> None:
    grants = acls.Declared.load().principals[principal]
    s = secured.settings(principal)
    identify(f"test-{principal}", principal)
    # Inside its grant: allowed (so the refusals below are the ACLs', not bad credentials).
    if grants.get("write"):
        send(s, s.topic(grants["write"][0]))
    before = failures(f"test-{principal}", "kafka_acl")
    forbidden_write = s.topic(outside(grants, ("write", "own")))
    with structlog.testing.capture_logs() as logs, pytest.raises(DeliveryError, match=r"(?i)authoriz"):
        send(s, forbidden_write)
    assert failures(f"test-{principal}", "kafka_acl") == before + 1
    logged = [e for e in logs if e["event"] == "kafka_refused"]
    # A principal that may write nowhere is refused the producer id itself (a cluster resource).
    resource = forbidden_write if grants.get("write") else "cluster"
    assert logged and logged[-1]["principal"] == principal and logged[-1]["resource"] == resource
    assert secured.passwords[principal].read_text() not in json.dumps(logged)
    forbidden_read = s.topic(outside(grants, ("read", "own")))
    if not grants.get("groups"):  # a principal that only writes (the poller) may not even join a group
        refused = (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED)
        assert first_record_error(s, "itsmctl-probe", forbidden_read) in refused
        return
    assert first_record_error(s, own_group(grants), forbidden_read) == KafkaError.TOPIC_AUTHORIZATION_FAILED
