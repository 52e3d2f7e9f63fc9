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
show their labels (CHOICE_LABELS, the platform's default choice lists). A reference's display value
is the referenced record's display field (cmdb_ci, cmdb_ci_service, sys_user_group, sys_user; '' for a
reference to no record: a value written as given is stored as given). With
sysparm_input_display_value=true a write's reference fields are display values, looked up to the
record's sys_id, and choice fields may be labels (same page: "sysparm_input_display_value").

Access follows roles (see ACL): each account has roles in sys_user_has_role, and a table operation
its roles do not grant answers 403 with the platform's ACL message.
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
from pydantic import SecretStr

from connectors.devitsm.store import REFERENCES, TABLES, FieldError, Store
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


def shaped(
    table: str,
    row: dict[str, str],
    display: str,
    exclude_links: bool,
    origin: str,
    show: Callable[[str, str], str] = lambda _table, value: value,
) -> dict[str, Any]:
    """A stored row as the Table API answers it for these sysparm_display_value and
    sysparm_exclude_reference_link values; show(table, sys_id) is a referenced record's display value."""
    refs, labels = REFERENCES.get(table, {}), CHOICE_LABELS.get(table, {})
    out: dict[str, Any] = {}
    for name, value in row.items():
        ref = refs.get(name)
        shown = show(ref, value) if ref and display != "false" else labels.get(name, {}).get(value, value)
        link = f"{origin}/api/now/table/{ref}/{value}" if ref and value and not exclude_links else None
        if display == "all":
            out[name] = {"display_value": shown, "value": value} | ({"link": link} if link else {})
        elif display == "true":
            out[name] = {"display_value": shown, "link": link} if link else shown
        else:
            out[name] = {"link": link, "value": value} if link else value
    return out


# Roles and what they contain, from "System roles" (base system: itil "can open, update, close
# incidents, problems, changes, configuration management items"; cmdb_read "can read any CMDB
# table. Contained in admin and itil"; personalize_dictionary "can configure dictionary entries";
# https://www.servicenow.com/docs/r/platform-administration/user-administration/base-system-roles.html)
# and the ITSM Roles plugins ("Components installed with ITSM Roles - Incident Management" and
# "- Change Management": sn_incident_write contains sn_incident_read, which contains cmdb_read;
# sn_change_write contains sn_change_read, which contains cmdb_read; sn_service_desk_agent contains
# both writes; https://www.servicenow.com/docs/r/it-service-management/change-management/installed-with-cm-itsm-roles.html).
CONTAINS: dict[str, frozenset[str]] = {
    "itil": frozenset({"cmdb_read"}),
    "sn_incident_read": frozenset({"cmdb_read"}),
    "sn_incident_write": frozenset({"sn_incident_read"}),
    "sn_change_read": frozenset({"cmdb_read"}),
    "sn_change_write": frozenset({"sn_change_read"}),
    "sn_service_desk_agent": frozenset({"sn_incident_write", "sn_change_write"}),
}
ANY = "*"  # any authenticated user
ROLES = web.RequestKey("roles", frozenset[str])  # the authenticated account's roles
USER = web.RequestKey("user", str)  # and its user_name (sys_created_by, sys_updated_by)
# Table-level ACLs by operation: the roles that grant it ("admin" passes every check, per the page
# above). Reading the user, group and role tables is open to authenticated users (a user sees the
# groups and roles on their own profile); reading the dictionary needs personalize_dictionary (a
# schema read "needs an admin role" for third-party connectors reading it:
# https://learn.microsoft.com/en-us/azure/databricks/error-messages/servicenow-connector-unauthorized-access-error-error-class).
ACL: dict[str, dict[str, frozenset[str]]] = {
    "incident": {
        "read": frozenset({"itil", "sn_incident_read"}),
        "write": frozenset({"itil", "sn_incident_write"}),
    },
    "change_request": {
        "read": frozenset({"itil", "sn_change_read"}),
        "write": frozenset({"itil", "sn_change_write"}),
    },
    "cmn_schedule_blackout": {
        "read": frozenset({"itil", "sn_change_read"}),
        "write": frozenset({"itil", "sn_change_write"}),
    },
    "cmn_schedule_span": {
        "read": frozenset({"itil", "sn_change_read"}),
        "write": frozenset({"itil", "sn_change_write"}),
    },
    "cmdb_ci": {"read": frozenset({"cmdb_read"}), "write": frozenset({"itil"})},
    "cmdb_ci_service": {"read": frozenset({"cmdb_read"}), "write": frozenset({"itil"})},
    "sys_user": {"read": frozenset({ANY}), "write": frozenset({"user_admin"})},
    "sys_user_group": {"read": frozenset({ANY}), "write": frozenset({"user_admin"})},
    "sys_user_role": {"read": frozenset({ANY}), "write": frozenset({"user_admin"})},
    "sys_user_has_role": {"read": frozenset({ANY}), "write": frozenset({"user_admin"})},
    "sys_dictionary": {
        "read": frozenset({"personalize_dictionary"}),
        "write": frozenset({"personalize_dictionary"}),
    },
}


def expand(roles: frozenset[str]) -> frozenset[str]:
    """A set of roles with every role they contain."""
    out: set[str] = set()
    todo = list(roles)
    while todo:
        role = todo.pop()
        if role not in out:
            out.add(role)
            todo.extend(CONTAINS.get(role, ()))
    return frozenset(out)


def allowed(roles: frozenset[str], table: str, operation: str) -> bool:
    if "admin" in roles:
        return True
    granted = ACL.get(table, {}).get("write" if operation == "create" else operation, frozenset())
    return ANY in granted or bool(granted & roles)


@dataclass(frozen=True)
class Account:
    """A user of the instance: basic-auth credentials and the roles granted to it."""

    user: str
    password: str
    roles: frozenset[str] = frozenset({"itil"})


def seed_accounts(store: Store, accounts: list[Account]) -> None:
    """Each account as a sys_user with its roles in sys_user_has_role (inherited ones marked), as
    the instance lists them; roles of an account seen before are replaced."""
    for account in accounts:
        user = (
            store.by_field("sys_user", "user_name", account.user)
            or store.insert("sys_user", {"user_name": account.user, "name": account.user, "active": "true"})[
                "sys_id"
            ]
        )
        store.delete_where("sys_user_has_role", "user", user)
        for role in sorted(expand(account.roles)):
            role_id = (
                store.by_field("sys_user_role", "name", role)
                or store.insert("sys_user_role", {"name": role})["sys_id"]
            )
            inherited = "false" if role in account.roles else "true"
            grant = {"user": user, "role": role_id, "inherited": inherited, "state": "active"}
            store.insert("sys_user_has_role", grant)


def refusal(error: type[web.HTTPException], message: str, detail: str | None) -> web.HTTPException:
    """An HTTP error to raise, with ServiceNow's error body."""
    body = json.dumps({"error": {"message": message, "detail": detail}, "status": "failure"})
    return error(text=body, content_type="application/json")


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


def parse_query(columns: list[str], query: str) -> tuple[list[Query], list[tuple[str, bool]]]:
    """sysparm_query as queries OR-ed together (^NQ), each an AND (^) of OR-groups (^OR)."""
    cols = set(columns)
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
    password: str | SecretStr,
    rate_limit: int = 0,
    oauth: OAuthClient | None = None,
    faults: bool = False,
    roles: frozenset[str] = frozenset({"itil"}),
    accounts: tuple[Account, ...] = (),
    mandatory: dict[str, tuple[str, ...]] | None = None,
) -> web.Application:
    """The aiohttp application; every /api route needs basic auth (user:password with `roles`, or
    one of `accounts`) or a bearer token issued to the OAuth client (which acts as `user`).

    With rate_limit > 0 every API answer carries X-RateLimit-Limit/Remaining/Reset, and a
    request over the limit gets 429 with Retry-After, as a rate-limited instance does.
    `mandatory` is a data policy: per table, the fields an insert must carry.

    `user`'s password is read at each request, and each of its lines is valid: a FileSecret (its
    file reread when it changes) lets a rotation overlap: add the new line, move the clients,
    remove the old line. This is a development convenience, not ServiceNow behaviour (a user there
    has one password; the overlap on a real instance is a second integration account).
    """
    secret = SecretStr(password) if isinstance(password, str) else password
    seed_accounts(store, [Account(user, "", roles), *accounts])
    others = {f"{a.user}:{a.password}".encode(): (a.user, expand(a.roles)) for a in accounts}

    def credentials() -> dict[bytes, tuple[str, frozenset[str]]]:
        own = (line.strip() for line in secret.get_secret_value().splitlines())
        return {**{f"{user}:{p}".encode(): (user, expand(roles)) for p in own if p}, **others}

    policy = mandatory or {}

    def require(request: web.Request, table: str, operation: str) -> None:
        if not allowed(request[ROLES], table, operation):
            # What the instance answers when an ACL denies an operation (the platform's message;
            # table-level denials answer 403: KB2971488, "REST API 403: Forbidden").
            verb = {"read": "Read", "write": "Update", "create": "Insert"}[operation]
            detail = f"ACL Exception {verb} Failed due to security constraints"
            raise refusal(web.HTTPForbidden, "Operation Failed", detail)

    def data_policy(table: str, row: dict[str, Any]) -> None:
        # "By default, data policies are applied to all GlideRecord operations including ... the
        # REST Table API" ("Data policy",
        # https://www.servicenow.com/docs/r/platform-administration/c_DataPolicy.html); a record
        # lacking a mandatory field is refused with 403 and the platform's message "Data Policy
        # Exception: The following fields are mandatory: ..." (as GlideRecord.getLastErrorMessage()
        # reports it; the page names no status code or text, so those follow observed answers).
        missing = [f for f in policy.get(table, ()) if not str(row.get(f) or "")]
        if missing:
            detail = "Data Policy Exception: The following fields are mandatory: " + ", ".join(missing)
            raise refusal(web.HTTPForbidden, "Operation Failed", detail)

    def as_stored(request: web.Request, table: str, fields: dict[str, Any]) -> dict[str, Any]:
        """With sysparm_input_display_value=true, display values become stored values: a reference
        the sys_id of the record so displayed ('' when none is), a choice label its value."""
        if request.query.get("sysparm_input_display_value", "false").lower() != "true":
            return fields
        refs, labels = REFERENCES.get(table, {}), CHOICE_LABELS.get(table, {})
        out = dict(fields)
        for name, given in fields.items():
            if name in refs and given not in (None, ""):
                out[name] = store.by_display(refs[name], str(given)) or ""
            elif name in labels:
                by_label = {label: value for value, label in labels[name].items()}
                out[name] = by_label.get(str(given), given)
        return out

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
                request[ROLES], request[USER] = expand(roles), user
                return await handler(request)
            return failure(401, "User Not Authenticated", "Required to provide Auth information")
        given = b""
        if header.startswith("Basic "):
            try:
                given = base64.b64decode(header[6:], validate=True)
            except (binascii.Error, ValueError):
                given = b""
        granted = None
        for known, account in credentials().items():
            if hmac.compare_digest(given, known):
                granted = account
        if granted is None:
            return failure(401, "User Not Authenticated", "Required to provide Auth information")
        request[USER], request[ROLES] = granted
        return await handler(request)

    def table_of(request: web.Request) -> str:
        table = request.match_info["table"]
        if table not in TABLES:
            raise refusal(web.HTTPBadRequest, f"Invalid table {table}", None)
        return table

    def project(request: web.Request, table: str, row: dict[str, str]) -> dict[str, Any]:
        q = request.query
        if q.get("sysparm_fields"):
            wanted = [f.strip() for f in q["sysparm_fields"].split(",") if f.strip()]
            row = {f: row[f] for f in wanted if f in row}
        display = q.get("sysparm_display_value", "false").lower()
        exclude = q.get("sysparm_exclude_reference_link", "false").lower() == "true"
        return shaped(
            table,
            row,
            display if display in ("true", "all") else "false",
            exclude,
            str(request.url.origin()),
            store.display,
        )

    async def body(request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise refusal(
                web.HTTPBadRequest, "Exception while reading request", f"Cannot decode: {exc}"
            ) from None
        if not isinstance(data, dict):
            raise refusal(
                web.HTTPBadRequest, "Exception while reading request", "The payload is not a JSON object"
            )
        return data

    async def list_records(request: web.Request) -> web.Response:
        table = table_of(request)
        require(request, table, "read")
        q = request.query
        try:
            limit = min(int(q.get("sysparm_limit", MAX_LIMIT)), MAX_LIMIT)
            offset = int(q.get("sysparm_offset", 0))
        except ValueError:
            return failure(400, "Invalid sysparm_limit or sysparm_offset", "Must be integers")
        try:
            queries, order = parse_query(store.columns(table), q.get("sysparm_query", ""))
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
        require(request, table, "create")
        try:
            fields = as_stored(request, table, await body(request))
            data_policy(table, fields)
            row = store.insert(table, fields, request[USER])
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
        require(request, table, "read")
        row = store.get(table, request.match_info["sys_id"])
        if row is None:
            return failure(
                404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval"
            )
        return web.json_response({"result": project(request, table, row)})

    async def update(request: web.Request) -> web.Response:
        table = table_of(request)
        require(request, table, "write")
        try:
            fields = as_stored(request, table, await body(request))
            row = store.update(table, request.match_info["sys_id"], fields, request[USER])
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
