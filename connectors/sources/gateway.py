"""The HTTP ingest gateway: webhooks in, canonical Avro Alerts on alerts.raw, 2xx only once acknowledged."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from aiohttp import web
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connectors.auth import GATEWAY_SCOPES, Guard, Refusal, bearer_of, guard_for, refused
from connectors.jsonbody import BodyError, parse_json
from connectors.sources.alertmanager.api import PartialPayload
from connectors.sources.alertmanager.mapping import PayloadError, labelset_fingerprint, problems_of
from connectors.sources.base import WebhookSource, default_error
from connectors.sources.silences import SilenceStore
from connectors.sources.silences import add_routes as add_silence_routes
from streams.core import telemetry
from streams.core.kafka import AckedProducer, DeliveryError
from streams.core.messages import encoded
from streams.core.models import Alert, AlertStatus, AuditEvent, AuditOutcome, CorrelationSample
from streams.core.rules import FingerprintRules
from streams.core.serde import AvroSerde, SerdeError
from streams.core.settings import Settings
from streams.core.topics import ALERTS_RAW, AUDIT_EVENTS

log = telemetry.get_logger("gateway")


class Verdict(BaseModel):
    """POST /v1/correlation/verdicts: was a sampled correlation decision right?"""

    model_config = ConfigDict(extra="forbid")
    sample_id: str = Field(min_length=1, max_length=300)
    rule: str = Field(min_length=1, max_length=64)
    verdict: str = Field(pattern="^(correct|incorrect)$")
    reviewer: str = Field(min_length=1, max_length=200)
    comment: str = Field("", max_length=2000)


def _error(
    status: int,
    message: str,
    problems: list[str] | None = None,
    body: Callable[[str, list[str] | None], object] = default_error,
) -> web.Response:
    return web.json_response(body(message, problems), status=status)


def apply_fingerprint_rule(alert: Alert, rules: FingerprintRules | None) -> Alert:
    """Re-fingerprint an alert from the listed labels when its source's rule says so."""
    rule = rules.sources.get(alert.source.value.lower(), "source") if rules else "source"
    if rule == "source":
        return alert
    subset = {name: alert.labels.get(name, "") for name in rule}
    return alert.model_copy(update={"fingerprint": labelset_fingerprint(subset)})


def create_gateway(
    settings: Settings,
    serde: AvroSerde,
    producer: AckedProducer,
    sources: Mapping[str, WebhookSource],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    fingerprints: FingerprintRules | Callable[[], FingerprintRules] | None = None,
    samples: Callable[[str], CorrelationSample | None] = lambda _id: None,
    silences: SilenceStore | None = None,
    guard: Guard | None = None,
) -> web.Application:
    """The aiohttp application with one POST route per webhook source, /healthz and /metrics.

    fingerprints: fingerprint.toml's rules, or what returns the current ones (`itsmctl gateway`
    follows rules.sets): taken once per request, so a request's alerts are keyed under one set.

    samples looks up a sampled correlation decision by id (the gateway follows
    alerts.correlation.samples): a verdict must name one, and its rule.

    guard: who may call what (alerts:write per source, verdicts:write, silences:read|write); by
    default from the settings (ITSM_TOKENS_FILE, else ITSM_GATEWAY_TOKEN, else webhooks open and
    everything else refused).
    """
    topic = settings.topic(ALERTS_RAW)
    if guard is None:
        guard = guard_for("gateway", settings, GATEWAY_SCOPES, open_scopes=("alerts:write",))
    # Traces start here: every published alert carries a W3C traceparent header.
    telemetry.configure_tracing("itsm-gateway")
    tracer = telemetry.tracer("gateway")

    def make_handler(source: WebhookSource) -> Callable[[web.Request], object]:
        async def handle(request: web.Request) -> web.Response:
            def reject(status: int, message: str, problems: list[str] | None = None) -> web.Response:
                telemetry.WEBHOOK_REQUESTS.labels(source.name, f"rejected_{status}").inc()
                log.info(
                    "webhook_rejected", source=source.name, status=status, reason=message, problems=problems
                )
                return _error(status, message, problems, source.error_body)

            def refusal(who: Refusal) -> web.Response:
                refused = reject(who.status, who.message)
                if who.status == 401:
                    refused.headers["WWW-Authenticate"] = "Bearer"
                return refused

            in_body = source.credential is not None and bearer_of(request.headers) is None

            def unreadable(status: int, message: str) -> web.Response:
                # A body-borne credential that cannot be read is no credential: a caller who
                # must authenticate learns nothing more than 401.
                if in_body:
                    who = guard.check({}, "alerts:write", source.name, path=request.path)
                    if isinstance(who, Refusal):
                        return refusal(who)
                return reject(status, message)

            if not in_body:
                who = guard.check(request.headers, "alerts:write", source.name, path=request.path)
                if isinstance(who, Refusal):
                    return refusal(who)
            if request.content_type != "application/json":
                return unreadable(415, f"Content-Type must be application/json, not {request.content_type!r}")
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return unreadable(413, f"body larger than {settings.gateway_max_body_bytes} bytes")
            if source.verify is not None:
                problem = source.verify(body, request.headers)
                if problem is not None:
                    telemetry.AUTH_FAILURES.labels("gateway", "signature").inc()
                    return reject(401, f"{source.name} signature check failed: {problem}")
            try:
                payload = parse_json(body)
            except BodyError as exc:
                return unreadable(400, str(exc))
            if in_body:
                assert source.credential is not None
                key = source.credential(payload)
                presented = {"Authorization": f"Bearer {key}"} if key else {}
                who = guard.check(presented, "alerts:write", source.name, path=request.path, via="body")
                if isinstance(who, Refusal):
                    return refusal(who)
            partial: list[str] = []
            try:
                mapped = source.to_alerts(payload, clock())
            except PartialPayload as exc:
                # Another product's best effort (Alertmanager's API): the valid alerts are
                # published, and the answer names the others.
                mapped, partial = exc.alerts, exc.problems
            except PayloadError as exc:
                return reject(400, f"invalid {source.name} payload", exc.problems)
            except ValidationError as exc:
                return reject(400, f"invalid {source.name} payload", problems_of(exc))
            except (ValueError, OverflowError) as exc:
                return reject(400, f"invalid {source.name} payload", [f"{type(exc).__name__}: {exc}"])
            rule = fingerprints() if callable(fingerprints) else fingerprints
            alerts = [apply_fingerprint_rule(a, rule) for a in mapped]
            try:
                records = [(a.fingerprint.encode(), serde.encode(a, topic)) for a in alerts]
            except SerdeError as exc:
                # Valid input we could not encode (e.g. the schema registry refused): our fault, so
                # a 5xx that makes the sender retry, never a 4xx that makes it drop the alert.
                log.error("encode_failed", source=source.name, error=str(exc))
                telemetry.WEBHOOK_REQUESTS.labels(source.name, "error_500").inc()
                return _error(500, f"cannot encode {source.name} alert; retry later: {exc}")
            with tracer.start_as_current_span(f"ingest {source.name}") as span:
                span.set_attribute("alerts", len(records))
                headers = telemetry.inject_headers([("source", source.name.encode())])
                try:
                    await producer.send_all(topic, records, headers)
                except DeliveryError as exc:
                    span.set_status(trace.StatusCode.ERROR, str(exc))
                    telemetry.WEBHOOK_REQUESTS.labels(source.name, "error_503").inc()
                    log.error("publish_failed", source=source.name, error=str(exc))
                    # 503 makes Alertmanager retry; a repeat is deduplicated downstream.
                    return _error(503, "alerts could not be published to Kafka; retry later")
            telemetry.WEBHOOK_REQUESTS.labels(source.name, "partial_400" if partial else "accepted").inc()
            telemetry.WEBHOOK_ALERTS.labels(source.name).inc(len(records))
            arrived = clock()
            delay = telemetry.LATENCY.labels("source_to_gateway", source.name, "")
            for a in alerts:
                if a.status is AlertStatus.FIRING:
                    delay.observe(max(0.0, (arrived - a.starts_at).total_seconds()))
            log.info("webhook_accepted", source=source.name, alerts=len(records), topic=topic)
            if partial:
                message = f"invalid {source.name} alerts (the other {len(records)} were accepted)"
                log.info("webhook_rejected", source=source.name, status=400, reason=message, problems=partial)
                return _error(400, message, partial, source.error_body)
            answer = source.respond(alerts)
            if answer is None:
                return web.Response(status=source.accepted)
            return web.json_response(answer, status=source.accepted)

        return handle

    audit_topic = settings.topic(AUDIT_EVENTS)

    async def verdict(request: web.Request) -> web.Response:
        """A service desk verdict on a sampled correlation decision: counted per rule, audited.

        It needs the scope verdicts:write (never open), JSON only, and must name a sample the
        pipeline took and that sample's rule: metric labels and audit records come from the
        pipeline, never the caller. The audit record's actor is the authenticated principal.
        """
        who = guard.check(request.headers, "verdicts:write", path=request.path)
        if isinstance(who, Refusal):
            return refused(who)
        if request.content_type != "application/json":
            return _error(415, f"Content-Type must be application/json, not {request.content_type!r}")
        try:
            v = Verdict.model_validate(parse_json(await request.read()))
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body larger than {settings.gateway_max_body_bytes} bytes")
        except BodyError as exc:
            return _error(400, str(exc))
        except ValidationError as exc:
            return _error(400, "invalid verdict", problems_of(exc))
        sample = samples(v.sample_id)
        if sample is None:
            return _error(404, f"no correlation sample {v.sample_id!r} (see alerts.correlation.samples)")
        if sample.rule != v.rule:
            return _error(
                400, "invalid verdict", [f"rule: sample {v.sample_id!r} was decided by {sample.rule!r}"]
            )
        telemetry.CORRELATION_VERDICTS.labels(v.rule, v.verdict).inc()
        good = (
            REGISTRY.get_sample_value(
                "itsm_pipeline_correlation_verdicts_total", {"rule": v.rule, "verdict": "correct"}
            )
            or 0.0
        )
        bad = (
            REGISTRY.get_sample_value(
                "itsm_pipeline_correlation_verdicts_total", {"rule": v.rule, "verdict": "incorrect"}
            )
            or 0.0
        )
        telemetry.CORRELATION_PRECISION.labels(v.rule).set(good / (good + bad))
        event = AuditEvent(
            event_id=f"verdict:{v.sample_id}",
            occurred_at=clock(),
            actor=who.name,
            action="correlation.verdict",
            subject_type="correlation_sample",
            subject_id=v.sample_id,
            outcome=AuditOutcome.DONE,
            reason=v.comment,
            details={"rule": v.rule, "verdict": v.verdict, "reviewer": v.reviewer},
        )
        try:
            await producer.send(*encoded(serde, audit_topic, v.sample_id, event))
        except DeliveryError:
            return _error(503, "verdict could not be recorded; retry later")
        return web.json_response({"recorded": v.sample_id, "rule": v.rule}, status=202)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "tokens_file_error": guard.error})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=telemetry.metrics_text(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(
        client_max_size=settings.gateway_max_body_bytes, middlewares=[telemetry.tracing_middleware("gateway")]
    )
    for source in sources.values():
        app.router.add_post(source.path, make_handler(source))  # type: ignore[arg-type]
    app.router.add_post("/v1/correlation/verdicts", verdict)
    if silences is not None:
        # Alertmanager's silence API (amtool, Grafana): the pipeline's silences, token required.
        add_silence_routes(app, settings, serde, producer, silences, guard, clock)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app
