"""HTTP front of the development ITSM: ServiceNow Table API paths, envelopes and error shapes.

Follows the public Table API documentation for what the sinks use:
GET/POST /api/now/table/{table}, GET/PUT/PATCH /api/now/table/{table}/{sys_id},
sysparm_query (see parse_query for the grammar and its sources), sysparm_fields,
sysparm_limit, sysparm_offset; results in {"result": ...}; errors as
{"error": {"message", "detail"}, "status": "failure"}. An invalid field in a query returns no
rows (the instance setting glide.invalid_query.returns_no_rows=true), never every row.

Field shapes follow sysparm_display_value (false, the default | true | all) and
sysparm_exclude_reference_link (Table API reference, GET /now/table/{tableName}:
https://developer.servicenow.com/dev.do#!/reference/api/latest/rest/c_TableAPI): a reference field
is {"link", "value"} by default, the bare value with links excluded, {"link", "display_value"} with
display values, and {"display_value", "value", "link"} with all; with true or all, choice fields
show their labels (CHOICE_LABELS, the platform's default choice lists). This development ITSM keeps
no referenced tables (cmdb_ci, sys_user_group, sys_user): a reference's value is what was written,
and its display value is that same text.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import json
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors.devitsm.store import TABLES, FieldError, Store
from connectors.emulators.faults import Faults
from connectors.sinks.servicenow.values import CHOICE_LABELS
from streams.core import telemetry

log = telemetry.get_logger("devitsm")
DEVITSM_REQUESTS = telemetry.Counter(
    "itsm_pipeline_devitsm_requests_total",
    "API requests the development ITSM answered, by rate-limit outcome.",
    ["outcome"],
)
MAX_LIMIT = 10000


# Reference fields and the table each points at (the platform's dictionary for these tables).
REFERENCES: dict[str, dict[str, str]] = {
    "incident": {
        "cmdb_ci": "cmdb_ci",
        "business_service": "cmdb_ci_service",
        "assignment_group": "sys_user_group",
        "caller_id": "sys_user",
    },
    "change_request": {
        "cmdb_ci": "cmdb_ci",
        "business_service": "cmdb_ci_service",
        "assignment_group": "sys_user_group",
        "caller_id": "sys_user",
        "requested_by": "sys_user",
    },
    "cmn_schedule_span": {"schedule": "cmn_schedule"},
}


def shaped(table: str, row: dict[str, str], display: str, exclude_links: bool, origin: str) -> dict[str, Any]:
    """A stored row as the Table API answers it for these sysparm_display_value and
    sysparm_exclude_reference_link values."""
    refs, labels = REFERENCES.get(table, {}), CHOICE_LABELS.get(table, {})
    out: dict[str, Any] = {}
    for name, value in row.items():
        shown = labels.get(name, {}).get(value, value)
        ref = refs.get(name)
        link = f"{origin}/api/now/table/{ref}/{value}" if ref and value and not exclude_links else None
        if display == "all":
            out[name] = {"display_value": shown, "value": value} | ({"link": link} if link else {})
        elif display == "true":
            out[name] = {"display_value": shown, "link": link} if link else shown
        else:
            out[name] = {"link": link, "value": value} if link else value
    return out


def failure(status: int, message: str, detail: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "detail": detail}, "status": "failure"}, status=status
    )


class QueryError(ValueError):
    """A sysparm_query term names a field the table does not have, or is not a term at all."""


# Encoded query grammar, after ServiceNow's "Encoded query strings"
# (https://www.servicenow.com/docs/r/yokohama/platform-user-interface/c_EncodedQueryStrings.html)
# and the operator list of "Operators available for filters and queries"
# (https://www.servicenow.com/docs/r/platform-user-interface/r_OpAvailableFiltersQueries.html):
# a term is <field><operator><value> with no spaces, field names are lower-case column names, so
# the operator is the token right after the field and the value is everything after it (an
# operator word inside a value is part of the value). "^" joins terms with AND, "^OR" joins a
# term to the one before it with OR, "^NQ" starts a new query OR-ed with the previous ones,
# ORDERBY<field>/ORDERBYDESC<field> sort, and "^EQ" ends the query.
OPERATORS = (
    "ISNOTEMPTY",
    "ISEMPTY",
    "STARTSWITH",
    "ENDSWITH",
    "NOT LIKE",
    "NOT IN",
    "LIKE",
    "IN",
    "!=",
    ">=",
    "<=",
    "=",
    ">",
    "<",
)
TERM = re.compile(r"([a-z0-9_.]+)(" + "|".join(re.escape(op) for op in OPERATORS) + r")(.*)", re.DOTALL)

Condition = tuple[str, str, str]
Query = list[list[Condition]]  # AND of OR-groups


def parse_query(table: str, query: str) -> tuple[list[Query], list[tuple[str, bool]]]:
    """sysparm_query as queries OR-ed together (^NQ), each an AND (^) of OR-groups (^OR)."""
    cols = set(Store.columns(table))
    queries: list[Query] = []
    order: list[tuple[str, bool]] = []
    for part in query.split("^NQ"):
        groups: Query = []
        for raw in part.split("^"):
            if raw in ("", "EQ"):
                continue
            joined = raw.startswith("OR") and not raw.startswith("ORDERBY")
            term = raw[2:] if joined else raw
            if term.startswith("ORDERBYDESC") or term.startswith("ORDERBY"):
                desc = term.startswith("ORDERBYDESC")
                field = term[len("ORDERBYDESC" if desc else "ORDERBY") :]
                if field not in cols:
                    raise QueryError(field)
                order.append((field, desc))
                continue
            match = TERM.fullmatch(term)
            if match is None:
                raise QueryError(term)
            field, op, value = match.groups()
            if field not in cols:
                raise QueryError(field)
            if joined and groups:
                groups[-1].append((field, op, value))
            else:
                groups.append([(field, op, value)])
        if groups:
            queries.append(groups)
    return queries, order


class FixedWindowLimit:
    """ServiceNow-style rate limit: at most `limit` API requests per wall-clock second."""

    def __init__(self, limit: int, wall: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self.wall = wall
        self.window = -1
        self.used = 0

    def take(self) -> tuple[bool, dict[str, str]]:
        """Whether this request may go, and the X-RateLimit-* headers to send either way."""
        now = self.wall()
        window = int(now)
        if window != self.window:
            self.window, self.used = window, 0
        allowed = self.used < self.limit
        if allowed:
            self.used += 1
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.limit - self.used),
            "X-RateLimit-Reset": str(window + 1),
        }
        if not allowed:
            headers["Retry-After"] = str(max(1, math.ceil(window + 1 - now)))
        return allowed, headers


@dataclass
class OAuthClient:
    """One OAuth client the instance knows, and the lifetime of the tokens it issues."""

    client_id: str
    client_secret: str
    ttl: int = 1799
    tokens: dict[str, float] = field(default_factory=dict)  # token -> monotonic expiry

    def issue(self) -> tuple[str, int]:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        self.tokens = {t: exp for t, exp in self.tokens.items() if exp > now}
        self.tokens[token] = now + self.ttl
        return token, self.ttl

    def valid(self, token: str) -> bool:
        return self.tokens.get(token, 0.0) > time.monotonic()


def create_devitsm(
    store: Store,
    user: str,
    password: str,
    rate_limit: int = 0,
    known_groups: frozenset[str] = frozenset(),
    oauth: OAuthClient | None = None,
    faults: bool = False,
) -> web.Application:
    """The aiohttp application; every /api route needs basic auth as user:password.

    With rate_limit > 0 every API answer carries X-RateLimit-Limit/Remaining/Reset, and a
    request over the limit gets 429 with Retry-After, as a rate-limited instance does.
    """
    expected = f"{user}:{password}".encode()

    def check_references(fields: dict[str, Any]) -> None:
        # A reference field must name an existing record (here: the configured groups).
        group = fields.get("assignment_group")
        if known_groups and group not in (None, "") and str(group) not in known_groups:
            raise FieldError(f"assignment_group: {group!r} is not a known group")

    limiter = FixedWindowLimit(rate_limit) if rate_limit > 0 else None

    @web.middleware
    async def rate_limited(request: web.Request, handler: Any) -> web.StreamResponse:
        if limiter is None or not request.path.startswith("/api/"):
            return await handler(request)
        allowed, headers = limiter.take()
        if not allowed:
            DEVITSM_REQUESTS.labels("refused").inc()
            resp = failure(429, "Rate limit exceeded", f"More than {limiter.limit} requests per second")
            resp.headers.update(headers)
            return resp
        DEVITSM_REQUESTS.labels("accepted").inc()
        resp = await handler(request)
        resp.headers.update(headers)
        return resp

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and oauth is not None:
            if oauth.valid(header[7:].strip()):
                return await handler(request)
            return failure(401, "User Not Authenticated", "Required to provide Auth information")
        given = b""
        if header.startswith("Basic "):
            try:
                given = base64.b64decode(header[6:], validate=True)
            except (binascii.Error, ValueError):
                given = b""
        if not hmac.compare_digest(given, expected):
            return failure(401, "User Not Authenticated", "Required to provide Auth information")
        return await handler(request)

    def table_of(request: web.Request) -> str:
        table = request.match_info["table"]
        if table not in TABLES:
            raise web.HTTPBadRequest(
                text=json.dumps(
                    {"error": {"message": f"Invalid table {table}", "detail": None}, "status": "failure"}
                ),
                content_type="application/json",
            )
        return table

    def project(request: web.Request, table: str, row: dict[str, str]) -> dict[str, Any]:
        q = request.query
        if q.get("sysparm_fields"):
            wanted = [f.strip() for f in q["sysparm_fields"].split(",") if f.strip()]
            row = {f: row[f] for f in wanted if f in row}
        display = q.get("sysparm_display_value", "false").lower()
        exclude = q.get("sysparm_exclude_reference_link", "false").lower() == "true"
        return shaped(
            table, row, display if display in ("true", "all") else "false", exclude, str(request.url.origin())
        )

    async def body(request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise web.HTTPBadRequest(
                text=json.dumps(
                    {
                        "error": {
                            "message": "Exception while reading request",
                            "detail": f"Cannot decode: {exc}",
                        },
                        "status": "failure",
                    }
                ),
                content_type="application/json",
            ) from None
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(
                text=json.dumps(
                    {
                        "error": {
                            "message": "Exception while reading request",
                            "detail": "The payload is not a JSON object",
                        },
                        "status": "failure",
                    }
                ),
                content_type="application/json",
            )
        return data

    async def list_records(request: web.Request) -> web.Response:
        table = table_of(request)
        q = request.query
        try:
            limit = min(int(q.get("sysparm_limit", MAX_LIMIT)), MAX_LIMIT)
            offset = int(q.get("sysparm_offset", 0))
        except ValueError:
            return failure(400, "Invalid sysparm_limit or sysparm_offset", "Must be integers")
        try:
            queries, order = parse_query(table, q.get("sysparm_query", ""))
        except QueryError:
            rows, total = list[dict[str, str]](), 0
        else:
            rows, total = store.query(table, queries, order, max(limit, 0), max(offset, 0))
        return web.json_response(
            {"result": [project(request, table, r) for r in rows]},
            headers={"X-Total-Count": str(total)},
        )

    async def create(request: web.Request) -> web.Response:
        table = table_of(request)
        try:
            fields = await body(request)
            check_references(fields)
            row = store.insert(table, fields)
        except FieldError as exc:
            return failure(400, "Invalid field value", str(exc))
        log.info(
            "created",
            table=table,
            number=row.get("number", row["sys_id"]),
            correlation_id=row.get("correlation_id", ""),
        )
        return web.json_response(
            {"result": project(request, table, row)},
            status=201,
            headers={"Location": f"{request.url.origin()}/api/now/table/{table}/{row['sys_id']}"},
        )

    async def get_one(request: web.Request) -> web.Response:
        table = table_of(request)
        row = store.get(table, request.match_info["sys_id"])
        if row is None:
            return failure(
                404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval"
            )
        return web.json_response({"result": project(request, table, row)})

    async def update(request: web.Request) -> web.Response:
        table = table_of(request)
        try:
            fields = await body(request)
            check_references(fields)
            row = store.update(table, request.match_info["sys_id"], fields)
        except FieldError as exc:
            return failure(400, "Invalid field value", str(exc))
        if row is None:
            return failure(
                404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval"
            )
        log.info("updated", table=table, number=row.get("number", row["sys_id"]), state=row.get("state", ""))
        return web.json_response({"result": project(request, table, row)})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def oauth_token(request: web.Request) -> web.Response:
        """POST /oauth_token.do, grant_type=client_credentials (form-encoded), as the instance answers."""
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        ok = (
            oauth is not None
            and hmac.compare_digest(str(form.get("client_id", "")), oauth.client_id)
            and hmac.compare_digest(str(form.get("client_secret", "")), oauth.client_secret)
        )
        if not ok or oauth is None:
            return web.json_response(
                {"error_description": "access_denied", "error": "server_error"}, status=401
            )
        token, ttl = oauth.issue()
        log.info("token_issued", client_id=oauth.client_id, expires_in=ttl)
        return web.json_response(
            {"access_token": token, "scope": "useraccount", "token_type": "Bearer", "expires_in": ttl}
        )

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def index(_: web.Request) -> web.Response:
        parts = [
            "<!doctype html><meta charset=utf-8><title>Development ITSM</title>",
            "<style>body{font-family:sans-serif}td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style>",
            "<h1>Development ITSM</h1>",
        ]
        for table in (t for t in TABLES if Store.is_task(t)):
            rows, total = store.query(table, [], [("sys_created_on", True)], 200, 0)
            parts.append(
                f"<h2>{table} ({total})</h2><table><tr><th>number</th><th>state</th>"
                "<th>priority</th><th>short_description</th><th>correlation_id</th><th>updated</th></tr>"
            )
            for r in rows:
                cells = (
                    r["number"],
                    r["state"],
                    r["priority"],
                    r["short_description"],
                    r["correlation_id"],
                    r["sys_updated_on"],
                )
                parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            parts.append("</table>")
        return web.Response(text="".join(parts), content_type="text/html")

    middlewares = [rate_limited, auth]
    if faults:
        # Contract and chaos tests only: POST /__faults queues answers (status, Retry-After) or
        # delays for /api calls.
        injector = Faults(("/api/",))
        middlewares.insert(0, injector.middleware)
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/oauth_token.do", oauth_token)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/now/table/{table}", list_records)
    app.router.add_post("/api/now/table/{table}", create)
    app.router.add_get("/api/now/table/{table}/{sys_id}", get_one)
    app.router.add_patch("/api/now/table/{table}/{sys_id}", update)
    app.router.add_put("/api/now/table/{table}/{sys_id}", update)
    return app
