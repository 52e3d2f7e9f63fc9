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
from streams.core.settings import Settings
from streams.core.topics import declared
from tests.cli import Itsmctl, runner

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


@pytest.fixture(autouse=True)
def _clean_itsm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their own Settings; a developer's ITSM_* variables must not leak in."""
    for name in list(os.environ):
        if name.startswith("ITSM_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real single-node KRaft broker on free loopback ports, for the whole session.

    It is never skipped: if it cannot start, every test that needs it errors (in CI too).
    """
    broker = Broker(tmp_path_factory.mktemp("kafka"), port=free_port(), controller_port=free_port())
    broker.start(wait=120)
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
    states = topic_ops.apply(
        AdminClient({"bootstrap.servers": kafka_broker.bootstrap}), list(declared(prefix))
    )
    assert all(s.action == "created" for s in states), states
    return settings


@pytest.fixture(scope="session")
def real_rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real RT 5 on loopback for the session, with a queue of its own (never skipped)."""
    from tests.rt import start_rt

    yield from start_rt(tmp_path_factory.mktemp("rt"))


@pytest.fixture
def itsmctl(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Itsmctl:
    """itsmctl run in this process with only the ITSM_* variables a test gives (tests/cli.py)."""
    return runner(capsys, monkeypatch)
