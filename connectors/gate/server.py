"""The change gate's HTTP API: may this deploy go to this environment now? Synchronous checks
for pipeline steps, and submit-then-poll requests for approvals that wait on a person.

POST /v1/gate/check          decide now (bypass with a justification, if the caller may)
POST /v1/gate/requests       ask for a change and wait for its approval (202 + request id)
GET  /v1/gate/requests/{id}  poll: pending, allowed or denied, with the reasons
GET  /healthz, /metrics

Every call needs `Authorization: Bearer <token>` of a principal in the tokens (callers) file with
the scope `gate:check` for the call's `service/environment` (401 without a known token, 403
without the scope); an emergency bypass needs `gate:bypass` for it too, or it is denied and
audited. Every decision is an AuditEvent on audit.events naming the caller, acknowledged by the
broker before the answer goes out.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, ValidationError

from connectors.auth import Guard, Principal, Refusal, refused
from connectors.jsonbody import BodyError, parse_json
from streams.core import telemetry
from streams.core.kafka import DeliveryError
from streams.core.messages import encoded
from streams.core.models import (
    AuditEvent,
    AuditOutcome,
    ChangeAction,
    ChangeCommand,
    ChangeStatus,
    ChangeType,
)
from streams.core.models import (
    GateRequest as GateRequestRecord,
)
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.core.timeutil import offset_text
from streams.core.topics import AUDIT_EVENTS, CHANGE_REQUESTS, GATE_REQUESTS
from streams.processors.indexes import ChangeIndex, GateRequestIndex
from streams.stages.changes.gate import ChangeGate, GateDecision, GatePolicy, GateRequest

log = telemetry.get_logger("gate")
TERMINAL = {ChangeStatus.CLOSED, ChangeStatus.CANCELLED}
DEFAULT_WINDOW = timedelta(hours=2)
# A pipeline waits on each answer: send the audit record at once instead of lingering for a batch.
GATE_PRODUCER = {"linger.ms": 0}


class Publisher(Protocol):
    async def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> Any: ...


class Check(BaseModel):
    """The body of POST /v1/gate/check."""

    model_config = ConfigDict(extra="forbid")
    service: str = Field(min_length=1, max_length=200)
    environment: str = Field(min_length=1, max_length=64)
    change_id: str | None = Field(None, max_length=100)
    commit: str | None = Field(None, max_length=100)
    ci_ids: list[str] = Field(default_factory=list, max_length=100)
    bypass: StrictBool = False  # true or false: "yes" or 1 is a mistake, not a bypass
    justification: str = Field("", max_length=2000)


class Submit(BaseModel):
    """The body of POST /v1/gate/requests."""

    model_config = ConfigDict(extra="forbid")
    service: str = Field(min_length=1, max_length=200)
    environment: str = Field(min_length=1, max_length=64)
    commit: str | None = Field(None, max_length=100)
    ci_ids: list[str] = Field(default_factory=list, max_length=100)
    short_description: str = Field("", max_length=160)
    description: str = Field("", max_length=4000)
    planned_start: AwareDatetime | None = None
    planned_end: AwareDatetime | None = None


class Health(Protocol):
    def check(self) -> None: ...


def _error(status: int, message: str, problems: list[str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if problems:
        body["problems"] = problems
    return web.json_response(body, status=status)


def create_gate(
    settings: Settings,
    serde: AvroSerde,
    producer: Publisher,
    gate: ChangeGate,
    changes: ChangeIndex,
    requests: GateRequestIndex,
    guard: Guard,
    views: Sequence[Health] = (),
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    checks: dict[str, telemetry.Check] | None = None,
) -> web.Application:
    """The aiohttp application of the change gate; /readyz runs checks (e.g. the broker's) and
    each view's."""
    telemetry.configure_tracing("itsm-gate")
    audit_topic = settings.topic(AUDIT_EVENTS)
    requests_topic = settings.topic(CHANGE_REQUESTS)
    gate_requests_topic = settings.topic(GATE_REQUESTS)

    def caller_of(request: web.Request) -> Principal | web.Response:
        who = guard.authenticate(request.headers, path=request.path, remote=request.remote)
        return refused(who) if isinstance(who, Refusal) else who

    def may_check(
        request: web.Request, caller: Principal, service: str, environment: str
    ) -> web.Response | None:
        no = guard.authorize(caller, "gate:check", f"{service}/{environment}", path=request.path)
        return None if no is None else refused(no)

    async def body_of(request: web.Request, model: type[BaseModel]) -> BaseModel | web.Response:
        if request.content_type != "application/json":
            return _error(415, "send application/json")
        try:
            return model.model_validate(parse_json(await request.read()))
        except BodyError as exc:
            return _error(400, str(exc))
        except ValidationError as exc:
            problems = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:10]]
            return _error(400, "invalid request", problems)

    async def publish(topic: str, key: str, record: Any) -> None:
        await producer.send(*encoded(serde, topic, key, record))

    def decide(caller: Principal, body: Check, now: datetime) -> GateDecision:
        # Who may bypass is read per call, so a rotated tokens file takes effect at once.
        may_bypass = caller.allows("gate:bypass", f"{body.service}/{body.environment}")
        bypassers = frozenset({caller.name}) if may_bypass else frozenset()
        gate.policy = GatePolicy(gate.policy.environments_requiring_change, bypassers)
        req = GateRequest(
            service=body.service,
            environment=body.environment,
            caller=caller.name,
            change_id=body.change_id,
            commit=body.commit,
            ci_ids=tuple(body.ci_ids),
            bypass=body.bypass,
            justification=body.justification,
        )
        return gate.decide(req, changes.changes(), now)

    async def answer(decision: GateDecision) -> dict[str, Any]:
        """Publish the decision's audit (and emergency change); what the pipeline is told."""
        if decision.emergency_change is not None:
            cmd = decision.emergency_change
            await publish(requests_topic, cmd.correlation_id, cmd)
        assert decision.audit is not None
        await publish(audit_topic, decision.audit.event_id, decision.audit)
        label = "bypass" if decision.emergency else ("allow" if decision.allowed else "deny")
        telemetry.GATE_DECISIONS.labels(label).inc()
        return {
            "decision": "allow" if decision.allowed else "deny",
            "allowed": decision.allowed,
            "reasons": decision.reasons,
            "change_id": decision.change_id,
            "emergency": decision.emergency,
            "emergency_change": decision.emergency_change.correlation_id
            if decision.emergency_change
            else None,
            "audit_id": decision.audit.event_id,
        }

    def unavailable() -> web.Response | None:
        for view in views:
            try:
                view.check()
            except RuntimeError as exc:
                return _error(503, f"the gate cannot see its schedule: {exc}")
        return None

    async def check(request: web.Request) -> web.Response:
        started = time.perf_counter()
        caller = caller_of(request)
        if isinstance(caller, web.Response):
            return caller
        if (down := unavailable()) is not None:
            return down
        body = await body_of(request, Check)
        if isinstance(body, web.Response):
            return body
        assert isinstance(body, Check)
        if (no := may_check(request, caller, body.service, body.environment)) is not None:
            return no
        decision = decide(caller, body, clock())
        try:
            result = await answer(decision)
        except DeliveryError as exc:
            # No audit record, no decision: the pipeline retries.
            return _error(503, f"the decision could not be recorded: {exc}")
        telemetry.GATE_SECONDS.observe(time.perf_counter() - started)
        log.info(
            "gate_decision",
            caller=caller.name,
            service=body.service,
            environment=body.environment,
            decision=result["decision"],
            change_id=result["change_id"],
            emergency=result["emergency"],
        )
        return web.json_response(result)

    async def submit(request: web.Request) -> web.Response:
        caller = caller_of(request)
        if isinstance(caller, web.Response):
            return caller
        if (down := unavailable()) is not None:
            return down
        body = await body_of(request, Submit)
        if isinstance(body, web.Response):
            return body
        assert isinstance(body, Submit)
        if (no := may_check(request, caller, body.service, body.environment)) is not None:
            return no
        now = clock()
        start = body.planned_start or now
        end = body.planned_end or start + DEFAULT_WINDOW
        if end <= start:
            return _error(400, "invalid request", ["planned_end: must be after planned_start"])
        request_id = f"gate-{uuid.uuid4().hex[:16]}"
        title = body.short_description or f"Deploy {body.service} to {body.environment}"
        record = GateRequestRecord(
            request_id=request_id,
            service=body.service,
            environment=body.environment,
            caller=caller.name,
            change_correlation_id=request_id,
            commit=body.commit,
            ci_ids=body.ci_ids,
            short_description=title,
            planned_start=start,
            planned_end=end,
            submitted_at=now,
        )
        change = ChangeCommand(
            command_id=f"{request_id}-create",
            correlation_id=request_id,
            action=ChangeAction.CREATE,
            change_type=ChangeType.NORMAL,
            short_description=title,
            description=body.description or f"Requested through the change gate by {caller.name}.",
            service=body.service,
            ci_ids=body.ci_ids,
            planned_start=start,
            planned_end=end,
            commit_ids=[body.commit] if body.commit else [],
            requested_by=caller.name,
            issued_at=now,
            source_zone=offset_text(body.planned_start) if body.planned_start else None,
        )
        audit = AuditEvent(
            event_id=f"{request_id}-submitted",
            occurred_at=now,
            actor=caller.name,
            action="gate.request",
            subject_type="deployment",
            subject_id=f"{body.service}@{body.environment}",
            outcome=AuditOutcome.OTHER,
            reason=f"change requested for {start.isoformat()} .. {end.isoformat()}",
            details={"request_id": request_id, "commit": body.commit or ""},
        )
        try:
            await publish(gate_requests_topic, request_id, record)
            await publish(requests_topic, request_id, change)
            await publish(audit_topic, audit.event_id, audit)
        except DeliveryError as exc:
            return _error(503, f"the request could not be recorded: {exc}")
        requests.put(record)
        telemetry.GATE_DECISIONS.labels("pending").inc()
        log.info("gate_request", caller=caller.name, request_id=request_id, service=body.service)
        return web.json_response(
            {
                "status": "pending",
                "request_id": request_id,
                "poll": f"/v1/gate/requests/{request_id}",
                "reasons": ["a change request was raised; waiting for its approval"],
            },
            status=202,
        )

    async def poll(request: web.Request) -> web.Response:
        caller = caller_of(request)
        if isinstance(caller, web.Response):
            return caller
        if (down := unavailable()) is not None:
            return down
        req = requests.get(request.match_info["request_id"])
        if req is None or req.caller != caller.name:
            return _error(404, "no such request of this caller")
        if (no := may_check(request, caller, req.service, req.environment)) is not None:
            return no
        now = clock()
        record = next((c for c in changes.values() if c.correlation_id == req.change_correlation_id), None)
        base = {"request_id": req.request_id, "change_id": record.change_id if record else None}
        if record is None:
            return web.json_response(
                {**base, "status": "pending", "reasons": ["the change request has not reached the ITSM yet"]}
            )
        if record.status in TERMINAL or record.approval == "rejected":
            state = "rejected" if record.approval == "rejected" else record.status.value.lower()
            why = f"change {record.change_id} was {state}"
            return web.json_response({**base, "status": "denied", "reasons": [why]})
        decision = decide(
            caller,
            Check(
                service=req.service,
                environment=req.environment,
                change_id=record.change_id,
                commit=req.commit,
                ci_ids=req.ci_ids,
            ),
            now,
        )
        if decision.allowed:
            try:
                result = await answer(decision)
            except DeliveryError as exc:
                return _error(503, f"the decision could not be recorded: {exc}")
            return web.json_response({**base, **result, "status": "allowed"})
        if record.planned_end is not None and now >= record.planned_end:
            return web.json_response(
                {
                    **base,
                    "status": "denied",
                    "reasons": [
                        f"the window of {record.change_id} ended at {record.planned_end.isoformat()}"
                    ],
                }
            )
        return web.json_response({**base, "status": "pending", "reasons": decision.reasons})

    async def healthz(_: web.Request) -> web.Response:
        if (down := unavailable()) is not None:
            return down
        return web.json_response({"status": "ok", "callers_file_error": guard.error})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=64 * 1024, middlewares=[telemetry.tracing_middleware("gate")])
    app.router.add_post("/v1/gate/check", check)
    app.router.add_post("/v1/gate/requests", submit)
    app.router.add_get("/v1/gate/requests/{request_id}", poll)

    def view_problem(view: Health) -> telemetry.Check:
        def problem() -> str | None:
            try:
                view.check()
            except RuntimeError as exc:
                return str(exc)
            return None

        return problem

    ready = dict(checks or {})
    for i, view in enumerate(views):
        ready[f"view_{i}"] = view_problem(view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", telemetry.readyz_handler(ready))
    app.router.add_get("/metrics", metrics)
    return app
