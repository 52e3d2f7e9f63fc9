"""Alertmanager's silence API on the gateway, on the real broker: the routes and answers of its API
v2, scoped tokens required (silences:read, silences:write), every change on maintenance.windows and
audited with its caller; and the real amtool (Debian's prometheus-alertmanager ships it) managing the
pipeline's silences through it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from connectors.auth import Principal, Scope, render, token_hash
from connectors.registry import webhook_sources
from connectors.sources.gateway import create_gateway
from connectors.sources.silences import SilenceStore
from streams.core.follower import TopicFollower
from streams.core.kafka import AckedProducer
from streams.core.models import AuditEvent, MaintenanceWindow
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.processors.indexes import WindowIndex
from tests.kafka_util import consume
from tests.servers import serve

pytestmark = pytest.mark.integration
SERDE = AvroSerde()
TOKEN = "s1lence-t0ken"
VIEWER = "v1ewer-t0ken"


@dataclass
class Gateway:
    url: str
    settings: Settings

    def http(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


def started(settings: Settings) -> Iterator[Gateway]:
    windows = WindowIndex(SERDE, settings.topic("maintenance.windows"))
    follower = TopicFollower(settings, windows.topic, windows.apply).start()
    follower.wait_ready(60)
    producer = AckedProducer(settings)
    app = create_gateway(
        settings,
        SERDE,
        producer,
        webhook_sources(settings),
        silences=SilenceStore(windows.windows, windows.put),
    )
    with serve(app) as url:
        yield Gateway(url, settings)
    producer.close()
    follower.stop()


@pytest.fixture
def gateway(kafka_settings: Settings, tmp_path: Path) -> Iterator[Gateway]:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        render(
            [
                Principal("oncall", (token_hash(TOKEN),), (Scope("silences:read"), Scope("silences:write"))),
                Principal("viewer", (token_hash(VIEWER),), (Scope("silences:read"),)),
            ]
        )
    )
    yield from started(kafka_settings.model_copy(update={"tokens_file": str(tokens)}))


def body(**kw: object) -> dict[str, object]:
    now = datetime.now(UTC)
    return {
        "matchers": [
            {"name": "alertname", "value": "DiskFull", "isRegex": False},
            {"name": "instance", "value": "db-.*", "isRegex": True, "isEqual": True},
        ],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "alice",
        "comment": "disk swap",
        **kw,
    }


def test_the_silence_api_answers_as_alertmanager_does(gateway: Gateway) -> None:
    with gateway.http(token=None) as anonymous:
        assert anonymous.get("/api/v2/silences").status_code == 401
        assert anonymous.post("/api/v2/silences", json=body()).status_code == 401
    with gateway.http() as c:
        made = c.post("/api/v2/silences", json=body())
        assert made.status_code == 200, made.text
        sid = made.json()["silenceID"]
        (listed,) = c.get("/api/v2/silences").json()
        assert listed["id"] == sid and listed["status"] == {"state": "active"}
        assert listed["matchers"] == [
            {"name": "alertname", "value": "DiskFull", "isRegex": False, "isEqual": True},
            {"name": "instance", "value": "db-.*", "isRegex": True, "isEqual": True},
        ]
        assert c.get(f"/api/v2/silence/{sid}").json()["createdBy"] == "alice"
        # Filters: every filter matcher must be one of the silence's.
        assert len(c.get("/api/v2/silences", params={"filter": 'alertname="DiskFull"'}).json()) == 1
        assert c.get("/api/v2/silences", params={"filter": 'alertname="Other"'}).json() == []
        # Updating by id keeps the id; an unknown id is 404.
        updated = c.post("/api/v2/silences", json=body(id=sid, comment="longer swap"))
        assert updated.json() == {"silenceID": sid}
        assert c.get(f"/api/v2/silence/{sid}").json()["comment"] == "longer swap"
        assert (
            c.post("/api/v2/silences", json=body(id="0b0e2f4c-0000-4000-8000-000000000000")).status_code
            == 404
        )
        # Alertmanager's own refusals, as JSON strings.
        past = body(endsAt=(datetime.now(UTC) - timedelta(minutes=1)).isoformat())
        past["startsAt"] = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        for bad, says in (
            (past, "end time can't be in the past"),
            (body(startsAt=(datetime.now(UTC) + timedelta(hours=2)).isoformat()), "must end after it starts"),
            (
                body(matchers=[{"name": "x", "value": ".*", "isRegex": True}]),
                "must not match the empty string",
            ),
            (body(matchers=[]), "at least one matcher"),
            (body(comment=""), "a comment is required"),
        ):
            refused = c.post("/api/v2/silences", json=bad)
            assert refused.status_code == 400 and says in refused.json(), refused.text
        assert c.delete(f"/api/v2/silence/{sid}").status_code == 200
        assert c.get(f"/api/v2/silence/{sid}").json()["status"] == {"state": "expired"}
        assert c.delete("/api/v2/silence/0b0e2f4c-0000-4000-8000-000000000000").status_code == 404
    s = gateway.settings
    windows = [
        SERDE.decode(m.value(), MaintenanceWindow)
        for m in consume(s.kafka_bootstrap, s.topic("maintenance.windows"), 3, timeout=30)
    ]
    assert {w.window_id for w in windows} == {f"silence-{sid}"}
    audit = [
        SERDE.decode(m.value(), AuditEvent)
        for m in consume(s.kafka_bootstrap, s.topic("audit.events"), 3, timeout=30)
    ]
    assert [a.action for a in audit] == ["silence.add", "silence.update", "silence.expire"]
    assert {a.details["via"] for a in audit} == {"api"}
    assert {a.details["caller"] for a in audit} == {"oncall"}  # the authenticated principal


def test_without_tokens_configured_the_silence_api_is_refused(kafka_settings: Settings) -> None:
    for gw in started(kafka_settings):
        with gw.http() as c:
            refused = c.post("/api/v2/silences", json=body())
            assert refused.status_code == 401 and refused.json() == "unauthorized"
            assert c.get("/api/v2/silences").status_code == 401


def test_each_silence_route_needs_its_scope(gateway: Gateway) -> None:
    from prometheus_client import REGISTRY

    def refused() -> float:
        labels = {"component": "gateway", "reason": "missing_scope"}
        return REGISTRY.get_sample_value("itsm_pipeline_auth_failures_total", labels) or 0.0

    before = refused()
    with gateway.http(VIEWER) as viewer:
        assert viewer.get("/api/v2/silences").status_code == 200
        made = viewer.post("/api/v2/silences", json=body())
        assert made.status_code == 403 and made.json() == "forbidden"
        assert viewer.delete("/api/v2/silence/anything").status_code == 403
    assert refused() == before + 2


def test_amtool_manages_the_pipelines_silences(gateway: Gateway, tmp_path: Path) -> None:
    amtool = shutil.which("amtool")
    assert amtool, "amtool not found: ops/test.sh installs Debian's prometheus-alertmanager"
    config = tmp_path / "http.yml"
    credentials = tmp_path / "token"
    credentials.write_text(TOKEN)
    config.write_text(f"authorization:\n  credentials_file: {credentials}\n")
    base = [amtool, f"--alertmanager.url={gateway.url}", f"--http.config.file={config}"]

    def run(*argv: str) -> str:
        ran = subprocess.run([*base, *argv], capture_output=True, text=True, timeout=30)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        return ran.stdout

    sid = run(
        "silence",
        "add",
        "alertname=DiskFull",
        "instance=~db-.*",
        "--comment=disk swap",
        "--author=amtool-user",
    ).strip()
    assert sid
    time.sleep(0.5)
    queried = json.loads(run("silence", "query", "-o", "json"))
    assert [(q["id"], q["createdBy"]) for q in queried] == [(sid, "amtool-user")]
    run("silence", "expire", sid)
    assert json.loads(run("silence", "query", "-o", "json")) == []  # amtool shows active ones
    assert json.loads(run("silence", "query", "--expired", "-o", "json"))[0]["id"] == sid
