"""Property-based fuzzing of every HTTP route of the gateway and the gate, served in-process and
publishing to the real broker: never a 5xx, never a crash, and nothing published for a rejected
request (every answer is counted against what reached Kafka)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from connectors import auth
from connectors.gate.server import GATE_PRODUCER, create_gate
from connectors.registry import webhook_sources
from connectors.sources.gateway import create_gateway
from streams.core.kafka import AckedProducer
from streams.core.models import CorrelationDecisionKind, CorrelationSample
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.processors.indexes import ChangeIndex, CMDBTopicIndex, GateRequestIndex, WindowIndex
from streams.stages.changes.gate import ChangeGate, GatePolicy
from streams.stages.windows import WindowCalendar
from tests.fuzz.strategies import JSON, RAW_BODIES, TEXT, encode, mutated
from tests.kafka_util import conf, settings_on
from tests.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.fuzz]
SERDE = AvroSerde()
SOURCES = ("alertmanager", "grafana", "pagerduty", "datadog", "canonical", "alertmanager-api")
PATHS = {s: f"/v1/alerts/{s}" for s in SOURCES} | {"alertmanager-api": "/api/v2/alerts"}
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SAMPLE = CorrelationSample(
    sample_id="s1",
    fingerprint="fp1",
    rule="by-instance",
    decision=CorrelationDecisionKind.MATCHED,
    decided_at=datetime(2026, 11, 27, tzinfo=UTC),
)


@dataclass
class Spy:
    """The real producer, counting what it was asked to publish."""

    producer: AckedProducer
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.sent += 1
        return await self.producer.send(*args, **kwargs)


@dataclass
class Served:
    url: str
    spy: Spy
    answers: dict[int, int] = field(default_factory=dict)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        before = self.spy.sent
        # Header values go on the wire as UTF-8 bytes, whatever characters they hold.
        raw = {k: v.encode("utf-8", "surrogatepass") for k, v in headers.items()}
        resp = httpx.post(self.url + path, content=body, headers=raw, timeout=30)
        self.answers[resp.status_code] = self.answers.get(resp.status_code, 0) + 1
        assert resp.status_code < 500, (path, body[:300], resp.status_code, resp.text[:300])
        published = self.spy.sent - before
        if path == "/api/v2/alerts":
            # Alertmanager's best effort: valid alerts are published even when others are not (a
            # 400 whose string body names them); a 200 published every alert of the array.
            if resp.status_code == 200:
                assert published == len(json.loads(body)), (body[:300], published)
            elif resp.status_code == 400 and published:
                assert isinstance(resp.json(), str) and resp.json(), resp.text[:300]
            else:
                assert published == 0, (path, resp.status_code, published)
        elif resp.status_code >= 300:
            assert published == 0, (path, resp.status_code, published)
        return resp


def with_topics(kafka_broker: Any, prefix: str, **kw: Any) -> Settings:
    """Settings on the session broker with a prefix of their own, topics applied."""
    from confluent_kafka.admin import AdminClient

    from ops import topics as topic_ops
    from streams.core.topics import declared

    prefix = f"{prefix}{uuid.uuid4().hex[:6]}."
    topic_ops.apply(AdminClient(conf(kafka_broker.bootstrap)), list(declared(prefix)))
    return settings_on(kafka_broker.bootstrap, topic_prefix=prefix, **kw)


@pytest.fixture(scope="module")
def open_gateway(kafka_broker: Any) -> Iterator[Served]:
    s = with_topics(kafka_broker, "fuzz-open-")
    spy = Spy(AckedProducer(s))
    app = create_gateway(s, SERDE, spy, webhook_sources(s), samples={"s1": SAMPLE}.get)  # type: ignore[arg-type]
    with serve(app) as url:
        yield Served(url, spy)
    spy.producer.close()


@pytest.fixture(scope="module")
def locked_gateway(kafka_broker: Any) -> Iterator[Served]:
    s = with_topics(
        kafka_broker,
        "fuzz-locked-",
        gateway_token=SecretStr("t0ken"),
        grafana_hmac_secret=SecretStr("s3cret"),
    )
    spy = Spy(AckedProducer(s))
    app = create_gateway(s, SERDE, spy, webhook_sources(s), samples={"s1": SAMPLE}.get)  # type: ignore[arg-type]
    with serve(app) as url:
        yield Served(url, spy)
    spy.producer.close()


CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/json; charset=utf-16",
        "",
    ]
)
AUTH = st.one_of(
    st.just("Bearer t0ken"),
    st.sampled_from(["", "Bearer", "Bearer tökén", "bearer t0ken", "Basic dTpw", "Bearer t0ken\u00e9"]),
    st.text(max_size=30).map(lambda t: t.replace("\r", "").replace("\n", "")),
)


@FUZZ
@given(source=st.sampled_from(SOURCES), data=st.data())
def test_webhook_routes_answer_4xx_or_2xx_never_5xx(
    open_gateway: Served, source: str, data: st.DataObject
) -> None:
    body = data.draw(st.one_of(mutated(source).map(encode), JSON.map(encode), RAW_BODIES))
    resp = open_gateway.post(PATHS[source], body, {"Content-Type": "application/json"})
    if resp.status_code == 202:
        assert open_gateway.spy.sent > 0


@FUZZ
@given(
    path=st.sampled_from([*PATHS.values(), "/v1/correlation/verdicts"]),
    body=st.one_of(mutated("alertmanager").map(encode), RAW_BODIES, JSON.map(encode)),
    content_type=CONTENT_TYPES,
    auth=AUTH,
    signature=st.one_of(st.none(), st.text(max_size=70)),
)
def test_tokens_signatures_and_content_types_are_checked_without_5xx(
    locked_gateway: Served, path: str, body: bytes, content_type: str, auth: str, signature: str | None
) -> None:
    headers = {"Content-Type": content_type, "Authorization": auth}
    if signature is not None:
        headers["X-Grafana-Alerting-Signature"] = signature
    try:
        resp = locked_gateway.post(path, body, headers)
    except httpx.LocalProtocolError:
        return  # a header no HTTP client can send (e.g. a control character): nothing to test
    # RFC 7235 section 2.1: the scheme is case-insensitive; the token is compared exactly.
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or token.strip() != "t0ken":
        # 401 from the gateway, or 400 from the HTTP server for a header it cannot parse at all.
        assert resp.status_code in (400, 401), (auth, resp.status_code)


@FUZZ
@given(
    verdict=st.fixed_dictionaries(
        {},
        optional={
            "sample_id": st.one_of(st.just("s1"), TEXT),
            "rule": st.one_of(st.just("by-instance"), TEXT),
            "verdict": st.one_of(st.sampled_from(["correct", "incorrect"]), TEXT),
            "reviewer": TEXT,
            "comment": TEXT,
            "extra": JSON,
        },
    )
)
def test_the_verdict_route_never_fails_and_records_only_valid_verdicts(
    open_gateway: Served, verdict: dict[str, Any]
) -> None:
    resp = open_gateway.post(
        "/v1/correlation/verdicts", encode(verdict), {"Content-Type": "application/json"}
    )
    valid = (
        verdict.get("sample_id") == "s1"
        and verdict.get("rule") == "by-instance"
        and verdict.get("verdict") in ("correct", "incorrect")
        and isinstance(verdict.get("reviewer"), str)
        and 0 < len(verdict["reviewer"]) <= 200
        and "\ud800" not in verdict["reviewer"]
        and "\udfff" not in verdict["reviewer"]
        and isinstance(verdict.get("comment", ""), str)
        and len(verdict.get("comment", "")) <= 2000
        and not any(c in verdict.get("comment", "") for c in "\ud800\udfff")
        and "extra" not in verdict
    )
    assert (resp.status_code == 202) == valid, (verdict, resp.status_code, resp.text[:300])


@pytest.fixture(scope="module")
def gate_api(kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str]]:
    s = with_topics(kafka_broker, "fuzz-gate-")
    callers_file = Path(tmp_path_factory.mktemp("gate")) / "callers.toml"
    token, _ = auth.issue(callers_file, "ci", ["gate:check", "gate:bypass"])
    cmdb, windows = CMDBTopicIndex(SERDE, "c"), WindowIndex(SERDE, "w")
    gate = ChangeGate(GatePolicy(), WindowCalendar(windows, cmdb, frozenset({"DEPENDS_ON"}), 3), cmdb)
    spy = Spy(AckedProducer(s, **GATE_PRODUCER))
    app = create_gate(
        s,
        SERDE,
        spy,
        gate,
        ChangeIndex(SERDE, "x"),
        GateRequestIndex(SERDE, "r"),
        auth.Guard("gate", auth.TokensFile(callers_file)),
    )
    with serve(app) as url:
        yield Served(url, spy), token
    spy.producer.close()


CHECK = st.fixed_dictionaries(
    {"service": st.one_of(st.just("checkout"), TEXT), "environment": st.one_of(st.just("production"), TEXT)},
    optional={
        "change_id": st.one_of(st.none(), TEXT),
        "commit": st.one_of(st.none(), TEXT),
        "ci_ids": st.one_of(st.lists(TEXT, max_size=3), JSON),
        "bypass": st.one_of(st.booleans(), st.sampled_from(["yes", "true", 1, 0, None])),
        "justification": TEXT,
        "planned_start": TEXT,
        "planned_end": TEXT,
        "short_description": TEXT,
    },
)


@FUZZ
@given(
    path=st.sampled_from(["/v1/gate/check", "/v1/gate/requests"]),
    body=st.one_of(CHECK.map(encode), JSON.map(encode), RAW_BODIES),
    authorized=st.booleans(),
    content_type=CONTENT_TYPES,
)
def test_gate_routes_answer_without_5xx(
    gate_api: tuple[Served, str], path: str, body: bytes, authorized: bool, content_type: str
) -> None:
    served, token = gate_api
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {token}" if authorized else "Bearer ä"}
    resp = served.post(path, body, headers)
    if not authorized:
        assert resp.status_code == 401


def test_a_string_bypass_is_refused_not_taken_as_true(gate_api: tuple[Served, str]) -> None:
    served, token = gate_api
    body = encode({"service": "checkout", "environment": "production", "bypass": "yes", "justification": "x"})
    resp = served.post(
        "/v1/gate/check", body, {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    )
    assert resp.status_code == 400 and "bypass" in resp.text
