"""`itsmctl tokens` on the real broker: every issue, rotation and revocation is an audit.events
record naming who did it; when the record cannot be written, the tokens file is left as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.auth import Tokens
from ops.kafka.broker import free_port
from streams.core.models import AuditEvent
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.cli import Itsmctl
from tests.kafka_util import consume

pytestmark = pytest.mark.integration


def test_token_changes_are_audited_and_an_unaudited_change_is_undone(
    kafka_settings: Settings, itsmctl: Itsmctl, tmp_path: Path
) -> None:
    s = kafka_settings
    path = tmp_path / "tokens.toml"
    env = {
        "ITSM_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "ITSM_TOPIC_PREFIX": s.topic_prefix,
        "ITSM_TOKENS_FILE": str(path),
    }
    issued = itsmctl(
        "tokens", "issue", "prometheus", "--scope", "alerts:write:alertmanager", "--actor", "alice", **env
    )
    assert issued.returncode == 0, issued.stderr
    rotated = itsmctl("tokens", "rotate", "prometheus", "--actor", "alice", **env)
    assert rotated.returncode == 0, rotated.stderr
    assert itsmctl("tokens", "revoke", "prometheus", "--old", "--actor", "bob", **env).returncode == 0
    gate = itsmctl("gate", "token", "release-bot", "--actor", "carol", **env)
    assert gate.returncode == 0, gate.stderr
    tokens = Tokens.load(path)
    prometheus = tokens.identify(rotated.stdout.strip())
    assert prometheus is not None and prometheus.name == "prometheus"
    assert tokens.identify(issued.stdout.strip()) is None  # revoked at the end of the rotation

    events = [
        AvroSerde().decode(m.value(), AuditEvent)
        for m in consume(s.kafka_bootstrap, s.topic("audit.events"), 4, timeout=30)
    ]
    assert [(e.action, e.actor, e.subject_id) for e in events] == [
        ("token.issue", "alice", "prometheus"),
        ("token.rotate", "alice", "prometheus"),
        ("token.revoke_old", "bob", "prometheus"),
        ("token.issue", "carol", "release-bot"),
    ]
    assert events[0].details["scopes"] == "alerts:write:alertmanager"
    assert events[3].details["scopes"] == "gate:check"
    for e in events:  # never a token, never a hash
        assert issued.stdout.strip() not in str(e.details) and "sha256" not in str(e.details)

    # No broker, no audit record: the file stays as it was, and one line says so.
    before = path.read_bytes()
    down = {**env, "ITSM_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    refused = itsmctl("tokens", "issue", "late", "--scope", "status:read", **down)
    assert refused.returncode == 2 and "left as it was" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and refused.stdout == ""
    assert path.read_bytes() == before
