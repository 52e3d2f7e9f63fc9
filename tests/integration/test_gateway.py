"""The ingest gateway on the real broker: 2xx only after Kafka acknowledged; clear 4xx; counted."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from connectors import auth
from connectors.registry import webhook_sources
from connectors.sources.gateway import create_gateway
from ops.kafka.broker import free_port
from streams.core.kafka import AckedProducer
from streams.core.models import Alert, CorrelationDecisionKind, CorrelationSample
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.kafka_util import consume, kafka_env
from tests.servers import serve

pytestmark = pytest.mark.integration
SAMPLE = json.loads(
    (Path(__file__).resolve().parents[1] / "data/alertmanager/highcpu-group-firing.json").read_text()
)


def rejected(status: int) -> float:
    return (
        REGISTRY.get_sample_value(
            "itsm_pipeline_webhook_requests_total",
            {"source": "alertmanager", "outcome": f"rejected_{status}"},
        )
        or 0.0
    )


RULE = "by-instance"
SAMPLES = {
    f"s{i}": CorrelationSample(
        sample_id=f"s{i}",
        fingerprint=f"fp{i}",
        rule=RULE,
        decision=CorrelationDecisionKind.MATCHED,
        decided_at=datetime(2026, 11, 27, tzinfo=UTC),
    )
    for i in range(1, 5)
}


@pytest.fixture
def gateway(kafka_settings: Settings) -> Iterator[str]:
    producer = AckedProducer(kafka_settings)
    app = create_gateway(
        kafka_settings, AvroSerde(), producer, webhook_sources(kafka_settings), samples=SAMPLES.get
    )
    with serve(app) as url:
        yield url
    producer.close()


def test_a_webhook_is_published_as_avro_alerts_keyed_by_fingerprint(
    gateway: str, kafka_settings: Settings
) -> None:
    resp = httpx.post(f"{gateway}/v1/alerts/alertmanager", json=SAMPLE)
    assert resp.status_code == 202 and resp.json()["accepted"] == 3
    # The records are on the broker when the 2xx arrives: read them back.
    msgs = consume(kafka_settings.kafka_bootstrap, kafka_settings.topic("alerts.raw"), 3, timeout=30)
    alerts = sorted((AvroSerde().decode(m.value(), Alert) for m in msgs), key=lambda a: a.labels["instance"])
    assert [a.labels["instance"] for a in alerts] == ["web-1:9100", "web-2:9100", "web-3:9100"]
    assert sorted(m.key() for m in msgs) == sorted(a.fingerprint.encode() for a in alerts)
    assert sorted(resp.json()["fingerprints"]) == sorted(a.fingerprint for a in alerts)
    for m in msgs:
        headers = dict(m.headers() or [])
        assert headers["source"] == b"alertmanager"
        assert headers["traceparent"].startswith(b"00-")


def test_a_malformed_webhook_gets_400_with_problems_is_counted_and_nothing_is_published(
    gateway: str, kafka_settings: Settings
) -> None:
    bad = json.loads(json.dumps(SAMPLE))
    del bad["alerts"][1]["startsAt"]  # one bad alert: the whole webhook is refused, none published
    before = rejected(400)
    resp = httpx.post(f"{gateway}/v1/alerts/alertmanager", json=bad)
    assert resp.status_code == 400
    assert resp.json() == {
        "error": "invalid alertmanager payload",
        "problems": ["alerts.1.startsAt: Field required"],
    }
    assert rejected(400) == before + 1
    assert consume(kafka_settings.kafka_bootstrap, kafka_settings.topic("alerts.raw"), 1, timeout=3) == []


def test_not_json_wrong_type_and_oversize_are_refused_clearly(gateway: str) -> None:
    not_json = httpx.post(
        f"{gateway}/v1/alerts/alertmanager", content=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    form = httpx.post(f"{gateway}/v1/alerts/alertmanager", data={"a": "b"})
    assert form.status_code == 415
    huge = httpx.post(
        f"{gateway}/v1/alerts/alertmanager",
        content=b"[" + b"1," * 600_000 + b"1]",
        headers={"Content-Type": "application/json"},
    )
    assert huge.status_code == 413


def test_metrics_endpoint_serves_the_pipeline_counters(gateway: str) -> None:
    httpx.post(f"{gateway}/v1/alerts/alertmanager", json={"version": "4"})
    text = httpx.get(f"{gateway}/metrics").text
    assert "itsm_pipeline_webhook_requests_total" in text


def test_a_bearer_token_when_configured_is_required(kafka_settings: Settings) -> None:
    settings = kafka_settings.model_copy(update={"gateway_token": SecretStr("tok-123")})
    producer = AckedProducer(settings)
    try:
        with serve(create_gateway(settings, AvroSerde(), producer, webhook_sources(settings))) as url:
            assert httpx.post(f"{url}/v1/alerts/alertmanager", json=SAMPLE).status_code == 401
            ok = httpx.post(
                f"{url}/v1/alerts/alertmanager", json=SAMPLE, headers={"Authorization": "Bearer tok-123"}
            )
            assert ok.status_code == 202
    finally:
        producer.close()


def test_scoped_tokens_per_source_and_route_rotated_without_a_restart(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """Each caller its own token and scopes (alerts:write per source, verdicts:write): outside
    them 403, without a known token 401, nothing that helps a guess in either; each refusal
    counted by reason; a rotation and a revocation take effect on the running gateway."""
    tokens = tmp_path / "tokens.toml"
    prometheus, _ = auth.issue(tokens, "prometheus", ["alerts:write:alertmanager"])
    grafana, _ = auth.issue(tokens, "grafana", ["alerts:write:grafana"])
    settings = kafka_settings.model_copy(
        update={"tokens_file": str(tokens), "gateway_token": SecretStr("ignored-when-a-file-is-set")}
    )

    def refused(reason: str) -> float:
        labels = {"component": "gateway", "reason": reason}
        return REGISTRY.get_sample_value("itsm_pipeline_auth_failures_total", labels) or 0.0

    before = {r: refused(r) for r in ("missing_token", "unknown_token", "missing_scope")}
    am, verdicts = "/v1/alerts/alertmanager", "/v1/correlation/verdicts"
    producer = AckedProducer(settings)
    try:
        with serve(create_gateway(settings, AvroSerde(), producer, webhook_sources(settings))) as url:

            def post(path: str, token: str | None, body: object = SAMPLE) -> httpx.Response:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                return httpx.post(url + path, json=body, headers=headers)

            assert post(am, prometheus).status_code == 202
            wrong_source = post(am, grafana)
            assert wrong_source.status_code == 403 and wrong_source.json() == {"error": "forbidden"}
            assert post(verdicts, prometheus, {"sample_id": "s1"}).status_code == 403
            nobody = post(am, None)
            assert nobody.status_code == 401 and nobody.headers["WWW-Authenticate"] == "Bearer"
            assert post(am, "ignored-when-a-file-is-set").status_code == 401
            assert nobody.json() == {"error": "unauthorized"}
            # A rotation: old and new work; revoking the old ones leaves the new.
            rotated, _ = auth.rotate(tokens, "prometheus")
            assert post(am, prometheus).status_code == post(am, rotated).status_code == 202
            auth.revoke(tokens, "prometheus", old_only=True)
            assert post(am, prometheus).status_code == 401 and post(am, rotated).status_code == 202
            # A broken edit keeps the last good file, and health says why.
            tokens.write_text("[tokens.x\n")
            assert post(am, rotated).status_code == 202
            assert "not valid TOML" in httpx.get(url + "/healthz").json()["tokens_file_error"]
    finally:
        producer.close()
    assert refused("missing_scope") == before["missing_scope"] + 2
    assert refused("missing_token") == before["missing_token"] + 1
    assert refused("unknown_token") == before["unknown_token"] + 2


def test_a_pagerduty_routing_key_is_checked_like_a_token(kafka_settings: Settings, tmp_path: Path) -> None:
    """A PagerDuty client sends no Authorization header: its routing key must be a token issued
    with alerts:write:pagerduty; an unknown key is a 401, another source's token a 403, each
    counted; a bearer header, when sent, is what counts."""
    tokens = tmp_path / "tokens.toml"
    integration, _ = auth.issue(tokens, "pd-checkout", ["alerts:write:pagerduty"])
    grafana, _ = auth.issue(tokens, "grafana", ["alerts:write:grafana"])
    settings = kafka_settings.model_copy(update={"tokens_file": str(tokens)})
    event = json.loads(
        (Path(__file__).resolve().parents[1] / "data" / "pagerduty" / "trigger.json").read_text()
    )

    def refused(reason: str) -> float:
        labels = {"component": "gateway", "reason": reason}
        return REGISTRY.get_sample_value("itsm_pipeline_auth_failures_total", labels) or 0.0

    before = {r: refused(r) for r in ("unknown_token", "missing_scope", "missing_token")}
    producer = AckedProducer(settings)
    try:
        with serve(create_gateway(settings, AvroSerde(), producer, webhook_sources(settings))) as url:

            def send(key: str | None, bearer: str | None = None, raw: bytes | None = None) -> httpx.Response:
                body = {k: v for k, v in event.items() if k != "routing_key"}
                if key is not None:
                    body["routing_key"] = key
                headers = {"Content-Type": "application/json"}
                if bearer:
                    headers["Authorization"] = f"Bearer {bearer}"
                data = raw if raw is not None else json.dumps(body).encode()
                return httpx.post(url + "/v1/alerts/pagerduty", content=data, headers=headers)

            ok = send(integration)
            assert ok.status_code == 202 and ok.json()["status"] == "success"
            assert send("R0UT1NGKEYN0T155UED0000000000000").status_code == 401
            assert send(grafana).status_code == 403
            assert send(None).status_code == 401
            assert send(None, raw=b"{not json").status_code == 401
            assert send("whatever", bearer=integration).status_code == 202  # the header counts
    finally:
        producer.close()
    assert refused("unknown_token") == before["unknown_token"] + 1
    assert refused("missing_scope") == before["missing_scope"] + 1
    assert refused("missing_token") == before["missing_token"] + 2


def test_kafka_unreachable_gives_503_so_the_sender_retries() -> None:
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    producer = AckedProducer(settings, **{"delivery.timeout.ms": 1500})
    try:
        with serve(create_gateway(settings, AvroSerde(), producer, webhook_sources(settings))) as url:
            resp = httpx.post(f"{url}/v1/alerts/alertmanager", json=SAMPLE, timeout=30)
        assert resp.status_code == 503 and "retry" in resp.json()["error"]
    finally:
        producer.close(timeout=1)


def test_every_source_publishes_and_pagerduty_clients_get_their_dedup_key(
    gateway: str, kafka_settings: Settings
) -> None:
    data = Path(__file__).resolve().parents[1] / "data"
    posts = {
        "grafana": json.loads((data / "grafana/firing.json").read_text()),
        "pagerduty": json.loads((data / "pagerduty/trigger.json").read_text()),
        "datadog": json.loads((data / "datadog/triggered.json").read_text()),
        "canonical": json.loads((data / "canonical/alerts.json").read_text()),
    }
    answers = {name: httpx.post(f"{gateway}/v1/alerts/{name}", json=body) for name, body in posts.items()}
    assert {n: r.status_code for n, r in answers.items()} == dict.fromkeys(posts, 202)
    assert answers["pagerduty"].json() == {
        "status": "success",
        "message": "Event processed",
        "dedup_key": "srv01/mysql-disk",
    }
    msgs = consume(kafka_settings.kafka_bootstrap, kafka_settings.topic("alerts.raw"), 4, timeout=30)
    sources = sorted(AvroSerde().decode(m.value(), Alert).source.value for m in msgs)
    assert sources == ["CANONICAL", "DATADOG", "GRAFANA", "PAGERDUTY"]


def test_grafana_signatures_are_checked_when_a_secret_is_set(kafka_settings: Settings) -> None:
    import hashlib
    import hmac

    settings = kafka_settings.model_copy(update={"grafana_hmac_secret": SecretStr("gr-secret")})
    body = (Path(__file__).resolve().parents[1] / "data/grafana/firing.json").read_bytes()
    good = hmac.new(b"gr-secret", body, hashlib.sha256).hexdigest()
    producer = AckedProducer(settings)
    try:
        with serve(create_gateway(settings, AvroSerde(), producer, webhook_sources(settings))) as url:
            h = {"Content-Type": "application/json"}
            missing = httpx.post(f"{url}/v1/alerts/grafana", content=body, headers=h)
            forged = httpx.post(
                f"{url}/v1/alerts/grafana",
                content=body,
                headers={**h, "X-Grafana-Alerting-Signature": "0" * 64},
            )
            ok = httpx.post(
                f"{url}/v1/alerts/grafana", content=body, headers={**h, "X-Grafana-Alerting-Signature": good}
            )
    finally:
        producer.close()
    assert missing.status_code == 401 and "missing X-Grafana-Alerting-Signature" in missing.json()["error"]
    assert forged.status_code == 401 and "does not match" in forged.json()["error"]
    assert ok.status_code == 202


def test_fingerprint_rules_rekey_alerts_from_the_listed_labels(kafka_settings: Settings) -> None:
    from connectors.sources.alertmanager.mapping import labelset_fingerprint
    from streams.core.rules import FingerprintRules

    rules = FingerprintRules(version=1, sources={"alertmanager": ["alertname", "instance"]})
    producer = AckedProducer(kafka_settings)
    try:
        with serve(
            create_gateway(
                kafka_settings, AvroSerde(), producer, webhook_sources(kafka_settings), fingerprints=rules
            )
        ) as url:
            resp = httpx.post(f"{url}/v1/alerts/alertmanager", json=SAMPLE)
    finally:
        producer.close()
    expected = [
        labelset_fingerprint({"alertname": "HighCPU", "instance": f"web-{i}:9100"}) for i in (1, 2, 3)
    ]
    assert resp.json()["fingerprints"] == expected


def test_correlation_verdicts_feed_the_precision_metric_and_are_audited(
    gateway: str, kafka_settings: Settings, tmp_path: Path
) -> None:
    from streams.core.models import AuditEvent

    rule = RULE
    before = {
        v: REGISTRY.get_sample_value("itsm_pipeline_correlation_verdicts_total", {"rule": rule, "verdict": v})
        or 0.0
        for v in ("correct", "incorrect")
    }
    # Without tokens configured the gateway takes webhooks, but never a verdict.
    anonymous = {"sample_id": "s1", "rule": rule, "verdict": "correct", "reviewer": "desk-1"}
    assert httpx.post(f"{gateway}/v1/correlation/verdicts", json=anonymous).status_code == 401
    tokens = tmp_path / "tokens.toml"
    desk, _ = auth.issue(tokens, "service-desk", ["verdicts:write"])
    settings = kafka_settings.model_copy(update={"tokens_file": str(tokens)})
    producer = AckedProducer(settings)
    app = create_gateway(settings, AvroSerde(), producer, webhook_sources(settings), samples=SAMPLES.get)
    with serve(app) as url, httpx.Client(headers={"Authorization": f"Bearer {desk}"}) as c:
        for sample, verdict in (("s1", "correct"), ("s2", "correct"), ("s3", "incorrect")):
            r = c.post(
                f"{url}/v1/correlation/verdicts",
                json={"sample_id": sample, "rule": rule, "verdict": verdict, "reviewer": "desk-1"},
            )
            assert r.status_code == 202
        bad = c.post(
            f"{url}/v1/correlation/verdicts", json={"sample_id": "s4", "rule": rule, "verdict": "meh"}
        )
    producer.close()
    assert bad.status_code == 400 and any("verdict" in p for p in bad.json()["problems"])
    good, wrong = before["correct"] + 2, before["incorrect"] + 1
    assert REGISTRY.get_sample_value(
        "itsm_pipeline_correlation_precision_ratio", {"rule": rule}
    ) == pytest.approx(good / (good + wrong))
    events = consume(kafka_settings.kafka_bootstrap, kafka_settings.topic("audit.events"), 3, timeout=30)
    decoded = [AvroSerde().decode(m.value(), AuditEvent) for m in events]
    assert sorted(e.subject_id for e in decoded) == ["s1", "s2", "s3"]
    assert {e.action for e in decoded} == {"correlation.verdict"}
    # The actor is who authenticated; the reviewer named in the body is kept beside it.
    assert decoded[0].actor == "service-desk" and decoded[0].details["reviewer"] == "desk-1"


def test_the_verdict_route_takes_a_token_json_a_sampled_id_and_its_rule(kafka_settings: Settings) -> None:
    settings = kafka_settings.model_copy(update={"gateway_token": SecretStr("t0ken")})
    producer = AckedProducer(settings)
    app = create_gateway(settings, AvroSerde(), producer, webhook_sources(settings), samples=SAMPLES.get)
    good = {"sample_id": "s4", "rule": RULE, "verdict": "correct", "reviewer": "desk-1"}
    auth = {"Authorization": "Bearer t0ken"}
    try:
        with serve(app) as url:
            post = f"{url}/v1/correlation/verdicts"
            assert httpx.post(post, json=good).status_code == 401
            non_ascii = {"Authorization": "Bearer tökén".encode()}
            assert httpx.post(post, json=good, headers=non_ascii).status_code == 401
            assert (
                httpx.post(
                    post, content=json.dumps(good), headers={**auth, "Content-Type": "text/plain"}
                ).status_code
                == 415
            )
            invented = [{**good, "rule": f"invented-{i}"} for i in range(50)]
            answers = {httpx.post(post, json=v, headers=auth).status_code for v in invented}
            assert answers == {400}
            assert httpx.post(post, json={**good, "sample_id": "nope"}, headers=auth).status_code == 404
            assert httpx.post(post, json=good, headers=auth).status_code == 202
    finally:
        producer.close()
    assert (
        REGISTRY.get_sample_value(
            "itsm_pipeline_correlation_verdicts_total", {"rule": "invented-0", "verdict": "correct"}
        )
        is None
    )  # no metric series from caller-invented names


def test_several_gateway_processes_share_the_port_publish_everything_and_sum_their_metrics(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    from ops.stack import Stack

    s = kafka_settings
    stack = Stack(
        tmp_path / "stack",
        s.kafka_bootstrap,
        kafka_env=kafka_env(s.kafka_bootstrap),
        topic_prefix=s.topic_prefix,
        app_id=s.app_id,
        extra_env={"ITSM_GATEWAY_PROCESSES": "2"},
    )
    stack.start(["gateway"])
    try:
        sent = 40
        for i in range(sent):
            body = json.loads(json.dumps(SAMPLE))
            for a in body["alerts"]:
                a["fingerprint"] = f"{a['fingerprint']}-{i}"
            # A new connection per request, so the kernel may hand it to either process.
            with httpx.Client(base_url=stack.gateway_url, timeout=10) as http:
                r = http.post("/v1/alerts/alertmanager", json=body)
                assert r.status_code == 202, r.text
        per_request = len(SAMPLE["alerts"])
        assert len(consume(s.kafka_bootstrap, s.topic("alerts.raw"), sent * per_request, timeout=60)) == (
            sent * per_request
        )
        text = httpx.get(stack.gateway_url + "/metrics", timeout=10).text
        (published,) = re.findall(
            r'itsm_pipeline_webhook_alerts_total\{source="alertmanager"\} ([\d.e+]+)', text
        )
        assert float(published) == sent * per_request  # every process's count, whichever answered
        listening = [
            line for line in stack.log_tail("gateway", 200).splitlines() if "gateway_listening" in line
        ]
        assert len(listening) == 2
        assert stack.stop() == {"gateway": 0}
    finally:
        stack.stop()


def test_alertmanager_api_takes_prometheus_alerts_and_names_the_invalid_ones(
    gateway: str, kafka_settings: Settings
) -> None:
    def partial() -> float:
        labels = {"source": "alertmanager-api", "outcome": "partial_400"}
        return REGISTRY.get_sample_value("itsm_pipeline_webhook_requests_total", labels) or 0.0

    partial_before = partial()  # the registry is the process's: other tests count too
    now = datetime.now(UTC)
    firing = {
        "labels": {"alertname": "InstanceDown", "instance": "db-1:9100", "severity": "critical"},
        "annotations": {"summary": "db-1 down", "runbook_url": "https://runbooks.example/InstanceDown"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=4)).isoformat(),
        "generatorURL": "http://prometheus.example/graph",
    }
    resp = httpx.post(f"{gateway}/api/v2/alerts", json=[firing])
    assert (resp.status_code, resp.content) == (200, b"")  # Alertmanager's answer: 200, no body
    # One valid, one not: the valid one is published, the answer (400, a string) names the other.
    other = {**firing, "labels": {**firing["labels"], "instance": "db-2:9100"}}
    resp = httpx.post(f"{gateway}/api/v2/alerts", json=[other, {"labels": {"alertname": ""}}])
    assert resp.status_code == 400 and resp.json().startswith("1: labels: at least one label")
    msgs = consume(kafka_settings.kafka_bootstrap, kafka_settings.topic("alerts.raw"), 2, timeout=30)
    alerts = sorted((AvroSerde().decode(m.value(), Alert) for m in msgs), key=lambda a: a.labels["instance"])
    assert [(a.labels["instance"], a.status.value) for a in alerts] == [
        ("db-1:9100", "FIRING"),
        ("db-2:9100", "FIRING"),
    ]
    assert alerts[0].annotations["runbook_url"] == "https://runbooks.example/InstanceDown"
    assert {dict(m.headers() or [])["source"] for m in msgs} == {b"alertmanager-api"}
    assert partial() == partial_before + 1
