"""Shared fixtures: the real Kafka broker (one per test session), unique topic namespaces, examples."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from ops import topics as topic_ops
from ops.kafka import Broker
from ops.kafka.broker import free_port
from ops.kafka.security import BrokerSecurity
from streams.core.settings import Settings
from streams.core.topics import declared
from tests import kafka_util
from tests.cli import Itsmctl, logging_kept, runner

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
# The session broker runs secured (SASL_SSL, SCRAM-SHA-512, StandardAuthorizer with nothing
# allowed that no ACL grants) unless ITSM_TEST_BROKER=plaintext asks for the development mode.
SECURE = os.environ.get("ITSM_TEST_BROKER", "secure") != "plaintext"


def _broker_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """How a test that uses the session broker reaches it: its security settings (the admin's),
    without the bootstrap (tests name that themselves)."""
    if "kafka_broker" not in request.fixturenames:
        return {}
    broker: Broker = request.getfixturevalue("kafka_broker")
    return {k: v for k, v in broker.env().items() if k != "ITSM_KAFKA_BOOTSTRAP"}


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A test that runs itsmctl's main() itself (not through the itsmctl fixture) leaves the
    logging configuration to the tests after it as it found it."""
    with logging_kept():
        yield


@pytest.fixture(autouse=True)
def _clean_itsm_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their own Settings; a developer's ITSM_* variables must not leak in. A test on
    the session broker gets its security settings (ITSM_KAFKA_SECURITY_PROTOCOL and the rest)."""
    for name in list(os.environ):
        if name.startswith("ITSM_"):
            monkeypatch.delenv(name)
    for name, value in _broker_env(request).items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real single-node KRaft broker on free loopback ports, for the whole session.

    It is never skipped: if it cannot start, every test that needs it errors (in CI too).
    """
    root = tmp_path_factory.mktemp("kafka")
    security = BrokerSecurity.create(tmp_path_factory.mktemp("kafka-security")) if SECURE else None
    broker = Broker(root, port=free_port(), controller_port=free_port(), security=security)
    broker.start(wait=120)
    kafka_util.register(broker)
    yield broker
    broker.stop()


@pytest.fixture
def prefix() -> str:
    """A topic prefix unique to this test, so tests never see each other's data."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def kafka_settings(kafka_broker: Broker, prefix: str) -> Settings:
    """Settings pointing at the session broker with this test's topic prefix and app id, topics applied."""
    settings = Settings(
        kafka_bootstrap=kafka_broker.bootstrap, topic_prefix=prefix, app_id=f"app-{prefix[:-1]}"
    )
    states = topic_ops.apply(AdminClient(kafka_util.conf(kafka_broker.bootstrap)), list(declared(prefix)))
    assert all(s.action == "created" for s in states), states
    return settings


@pytest.fixture(scope="session")
def real_rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real RT 5 on loopback for the session, with a queue of its own (never skipped)."""
    from tests.rt import start_rt

    yield from start_rt(tmp_path_factory.mktemp("rt"))


@pytest.fixture
def itsmctl(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Itsmctl:
    """itsmctl run in this process with only the ITSM_* variables a test gives (tests/cli.py), and
    the session broker's security settings when the test uses that broker."""
    return runner(capsys, monkeypatch, base=_broker_env(request))
