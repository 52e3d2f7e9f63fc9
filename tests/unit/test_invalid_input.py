"""Every invalid input the gateway and the gate were found to mishandle is a 4xx naming the problem:
never a 5xx (senders retry those forever) and never a 2xx. The producer points at no broker, so a
request that got as far as publishing would fail loudly instead of passing."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from connectors.auth import token_hash
from connectors.registry import webhook_sources
from connectors.sources.gateway import create_gateway
from ops.kafka.broker import free_port
from streams.core.kafka import AckedProducer
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.servers import serve

DATA = Path(__file__).resolve().parents[1] / "data"


def sample(name: str) -> Any:
    return json.loads((DATA / name).read_text())


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        gateway_token=SecretStr("t0ken"),
        gateway_publish_timeout_seconds=1,
    )
    producer = AckedProducer(settings, **{"delivery.timeout.ms": 1000})
    try:
        with serve(create_gateway(settings, AvroSerde(), producer, webhook_sources(settings))) as url:
            yield url
    finally:
        producer.close(timeout=1)


def post(url: str, path: str, body: bytes, auth: bytes = b"Bearer t0ken", **headers: bytes) -> httpx.Response:
    return httpx.post(
        url + path,
        content=body,
        headers={"Content-Type": b"application/json", "Authorization": auth, **headers},
        timeout=10,
    )


def am_with(**fields: Any) -> bytes:
    hook = sample("alertmanager/highcpu-group-firing.json")
    hook["alerts"] = [dict(hook["alerts"][0], **fields)]
    return json.dumps(hook).encode()


def with_field(name: str, **fields: Any) -> bytes:
    body = copy.deepcopy(sample(name))
    for key, value in fields.items():
        target = body
        *path, last = key.split("__")
        for part in path:
            target = target[part]
        target[last] = value
    return json.dumps(body).encode()


CASES = [
    ("deep nesting", "/v1/alerts/alertmanager", b"[" * 5000 + b"]" * 5000, "nested deeper"),
    ("deep nesting, canonical", "/v1/alerts/canonical", b'{"a":' * 3000 + b"1" + b"}" * 3000, "nested"),
    ("5,000-digit number", "/v1/alerts/datadog", b'{"date": ' + b"7" * 5000 + b"}", "5000 digits"),
    ("number beyond float", "/v1/alerts/datadog", b'{"date": 1e999}', "out of range"),
    ("NaN", "/v1/alerts/datadog", b'{"date": NaN}', "not a JSON number"),
    ("UTF-16 body", "/v1/alerts/alertmanager", json.dumps({"a": 1}).encode("utf-16"), "byte order mark"),
    (
        "UTF-16 without BOM",
        "/v1/alerts/alertmanager",
        json.dumps({"a": 1}).encode("utf-16-le"),
        "not valid JSON",
    ),
    ("BOM-prefixed UTF-8", "/v1/alerts/alertmanager", b"\xef\xbb\xbf" + am_with(), "byte order mark"),
    ("Latin-1 bytes", "/v1/alerts/alertmanager", '{"a": "caf\u00e9"}'.encode("latin-1"), "not UTF-8"),
    (
        "duplicate keys",
        "/v1/alerts/pagerduty",
        b'{"event_action": "trigger", "event_action": "resolve"}',
        "duplicate key",
    ),
    ("lone surrogate", "/v1/alerts/alertmanager", am_with(annotations={"summary": "\ud800"}), "surrogate"),
    (
        "start before year 1 in UTC",
        "/v1/alerts/alertmanager",
        am_with(startsAt="0001-01-01T00:30:00+01:00"),
        "startsAt",
    ),
    (
        "end after 9999 in UTC",
        "/v1/alerts/alertmanager",
        am_with(startsAt="9999-12-31T23:59:59-01:00"),
        "startsAt",
    ),
    (
        "Datadog date 10**30",
        "/v1/alerts/datadog",
        with_field("datadog/triggered.json", date=str(10**30)),
        "date",
    ),
    (
        "Datadog date superscript two",
        "/v1/alerts/datadog",
        with_field("datadog/triggered.json", date="\u00b2"),
        "date",
    ),
    (
        "Datadog date in year 10000",
        "/v1/alerts/datadog",
        with_field("datadog/triggered.json", date="253402300800000"),
        "date",
    ),
    (
        "PagerDuty empty timestamp",
        "/v1/alerts/pagerduty",
        with_field("pagerduty/trigger.json", payload__timestamp=""),
        "timestamp",
    ),
]


@pytest.mark.parametrize(("case", "path", "body", "named"), CASES, ids=[c[0] for c in CASES])
def test_invalid_webhooks_get_a_400_naming_the_problem(
    gateway: str, case: str, path: str, body: bytes, named: str
) -> None:
    resp = post(gateway, path, body)
    assert resp.status_code == 400, (case, resp.status_code, resp.text[:300])
    assert named in resp.text, resp.text[:500]


def test_a_non_ascii_bearer_token_is_a_401(gateway: str) -> None:
    resp = post(gateway, "/v1/alerts/alertmanager", am_with(), auth="Bearer t\u00f6k\u00e9n".encode())
    assert resp.status_code == 401
    assert post(gateway, "/v1/correlation/verdicts", b"{}", auth="Bearer \u00e4".encode()).status_code == 401


def test_a_non_ascii_grafana_signature_is_a_401() -> None:
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", grafana_hmac_secret=SecretStr("s3cret"))
    producer = AckedProducer(settings)
    try:
        with serve(create_gateway(settings, AvroSerde(), producer, webhook_sources(settings))) as url:
            body = json.dumps(sample("grafana/firing.json")).encode()
            resp = post(
                url, "/v1/alerts/grafana", body, **{"X-Grafana-Alerting-Signature": "\u00e9\u00e9".encode()}
            )
    finally:
        producer.close(timeout=1)
    assert resp.status_code == 401 and "signature" in resp.text


def test_the_gates_token_hash_takes_any_text() -> None:
    assert token_hash("t\u00f6k\u00e9n") != token_hash("token")
    assert len(token_hash("\ud800")) == 64  # a lone surrogate hashes (and matches no caller)
