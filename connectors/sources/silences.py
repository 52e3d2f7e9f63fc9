"""Alertmanager's silence API on the gateway, so amtool (`--alertmanager.url`), Grafana or any
Alertmanager client manages the pipeline's silences: the routes and answers of Alertmanager's API
v2 (api/v2/openapi.yaml, operations getSilences, postSilences, getSilence, deleteSilence; the
handlers in api/v2/api.go):

- GET /api/v2/silences (query `filter` matchers, repeatable) answers gettableSilences;
- POST /api/v2/silences takes a postableSilence and answers {"silenceID": ...}; with an id, it
  updates that silence (404 when there is none); a start not before the end, or an end in the
  past, is 400 (the handler's own checks);
- GET /api/v2/silence/{id} answers the gettableSilence, or 404;
- DELETE /api/v2/silence/{id} expires it (200), or 404.

Errors are Alertmanager's: a JSON string body. Reading needs the scope silences:read, changing
silences:write (a silence mutes alerts, so nobody unauthenticated may make one: without a token
configured these routes answer 401). Every change is an audit.events record naming createdBy and
the authenticated caller.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web

from connectors.auth import Guard, Principal, Refusal, refused
from connectors.jsonbody import BodyError, parse_json
from streams.core import telemetry
from streams.core.kafka import AckedProducer, DeliveryError
from streams.core.matchers import parse_matchers
from streams.core.messages import encoded
from streams.core.models import MaintenanceWindow
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.core.topics import AUDIT_EVENTS, MAINTENANCE_WINDOWS
from streams.stages.silences import (
    PREFIX,
    SilenceError,
    audit_event,
    expired,
    from_am_silence,
    silences,
    to_am_silence,
)

log = telemetry.get_logger("gateway.silences")


class SilenceStore:
    """What the silence routes read and write: the windows view, and the producer."""

    def __init__(
        self, windows: Callable[[], list[MaintenanceWindow]], put: Callable[[MaintenanceWindow], None]
    ) -> None:
        self.windows = windows
        self.put = put  # read-your-writes: the view knows a silence before the topic echoes it

    def get(self, silence_id: str) -> MaintenanceWindow | None:
        wanted = silence_id if silence_id.startswith(PREFIX) else PREFIX + silence_id
        return next((w for w in silences(self.windows()) if w.window_id == wanted), None)


def _error(status: int, message: str) -> web.Response:
    return web.json_response(message, status=status)


def add_routes(
    app: web.Application,
    settings: Settings,
    serde: AvroSerde,
    producer: AckedProducer,
    store: SilenceStore,
    guard: Guard,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    windows_topic, audit_topic = settings.topic(MAINTENANCE_WINDOWS), settings.topic(AUDIT_EVENTS)

    def caller(request: web.Request, scope: str) -> Principal | web.Response:
        who = guard.check(request.headers, scope, path=request.path, remote=request.remote)
        return refused(who, plain=True) if isinstance(who, Refusal) else who

    async def publish(window: MaintenanceWindow, action: str, now: datetime, who: Principal) -> None:
        event = audit_event(window, action, window.created_by, now, "api", caller=who.name)
        await producer.send(*encoded(serde, windows_topic, window.window_id, window))
        await producer.send(*encoded(serde, audit_topic, window.window_id, event))
        store.put(window)

    async def list_silences(request: web.Request) -> web.Response:
        if isinstance(who := caller(request, "silences:read"), web.Response):
            return who
        try:
            wanted = [m for f in request.query.getall("filter", []) for m in parse_matchers(f)]
        except ValueError as exc:
            return _error(400, f"bad filter: {exc}")
        now = clock()
        out = []
        for window in silences(store.windows()):
            # Alertmanager's filter: every filter matcher must be one of the silence's matchers.
            mine = {str(m) for m in window.matchers}
            if all(str(m) in mine for m in wanted):
                out.append(to_am_silence(window, now))
        return web.json_response(out)

    async def post_silence(request: web.Request) -> web.Response:
        if isinstance(who := caller(request, "silences:write"), web.Response):
            return who
        try:
            body = parse_json(await request.read())
        except BodyError as exc:
            return _error(400, str(exc))
        now = clock()
        given = body.get("id") if isinstance(body, dict) else None
        previous = store.get(str(given)) if given else None
        if given and previous is None:
            return _error(404, f"silence {given} not found")
        try:
            window = from_am_silence(body, now, default_author="")
        except SilenceError as exc:
            return _error(400, f"failed to convert API silence to internal silence: {exc}")
        if window.ends_at <= now:
            return _error(400, "Failed to create silence: end time can't be in the past")
        if not window.created_by or not window.reason:
            return _error(400, "createdBy and comment are required")
        try:
            await publish(window, "silence.update" if previous else "silence.add", now, who)
        except DeliveryError as exc:
            return _error(503, f"the silence could not be stored; retry later: {exc}")
        log.info("silence_set", silence=window.window_id, created_by=window.created_by, caller=who.name)
        return web.json_response({"silenceID": window.window_id.removeprefix(PREFIX)})

    async def get_silence(request: web.Request) -> web.Response:
        if isinstance(who := caller(request, "silences:read"), web.Response):
            return who
        window = store.get(request.match_info["silence_id"])
        if window is None:
            return web.Response(status=404)
        return web.json_response(to_am_silence(window, clock()))

    async def delete_silence(request: web.Request) -> web.Response:
        if isinstance(who := caller(request, "silences:write"), web.Response):
            return who
        window = store.get(request.match_info["silence_id"])
        if window is None:
            return web.Response(status=404)
        now = clock()
        try:
            await publish(expired(window, now), "silence.expire", now, who)
        except DeliveryError as exc:
            return _error(503, f"the silence could not be expired; retry later: {exc}")
        return web.Response(status=200)

    app.router.add_get("/api/v2/silences", list_silences)
    app.router.add_post("/api/v2/silences", post_silence)
    app.router.add_get("/api/v2/silence/{silence_id}", get_silence)
    app.router.add_delete("/api/v2/silence/{silence_id}", delete_silence)
