"""A contract emulator of the Jira Service Management REST APIs the Jira sink uses (in memory).

It is an emulator, not Jira. Every route cites the Atlassian documentation it follows; what the
documentation does not say is not emulated. Two deployments:

- cloud (Jira Cloud): search through /rest/api/3/search/jql, eventually consistent (a new or changed
  issue is searchable only after index_delay seconds, unless named in reconcileIssues); the removed
  /rest/api/{2,3}/search answer 410 Gone.
- datacenter (Jira Data Center / Server): /rest/api/2/search with startAt/maxResults/total.

Authentication is basic auth (email or user name and API token or password). Error bodies are the
documented ones: servicedeskapi {"errorMessage", "i18nErrorMessage"}, platform API
{"errorMessages": [...], "errors": {}}.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from connectors.emulators.faults import Faults

OPEN, RESOLVED = "Waiting for support", "Resolved"
TRANSITIONS = {OPEN: [("761", "Resolve this issue", RESOLVED)], RESOLVED: [("871", "Reopen issue", OPEN)]}
# The JQL this emulator evaluates: labels = "x" [AND updated >= "yyyy/MM/dd HH:mm"]
# [ORDER BY created|updated ASC|DESC]; any other query is refused with 400, never answered wrongly.
# The date form and its reading in the user's time zone follow "JQL fields: Updated"
# (https://support.atlassian.com/jira-software-cloud/docs/jql-fields/#Updated).
LABEL = re.compile(
    r'^labels\s*=\s*"([^"\s]+)"'
    r'(?:\s+AND\s+updated\s*>=\s*"(\d{4}/\d{2}/\d{2} \d{2}:\d{2})")?'
    r"(?:\s+ORDER BY (created|updated) (ASC|DESC))?$",
    re.IGNORECASE,
)
# https://developer.atlassian.com/changelog/#CHANGE-2046 (the body Jira Cloud answers, verbatim in
# substance: the removed search endpoints return 410 Gone with this message).
REMOVED = (
    "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. "
    "A full migration guideline is available at https://developer.atlassian.com/changelog/#CHANGE-2046"
)
SEARCH_JQL_DOC = (
    "https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-issue-search/"
    "#api-rest-api-3-search-jql-get"
)


def jira_time(at: datetime) -> str:
    """Jira's timestamp format in REST answers, e.g. 2026-11-30T23:38:09.123+0000."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}+0000"


# Status categories (the status object's statusCategory.key: new, indeterminate, done):
# https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-workflow-status-categories/
CATEGORY = {OPEN: "new", RESOLVED: "done"}


def adf(text: str) -> dict[str, Any]:
    """Plain text as an Atlassian Document Format document (REST API 3 rich text fields):
    https://developer.atlassian.com/cloud/jira/platform/apis/document/structure/"""
    paragraphs = [
        {"type": "paragraph", "content": [{"type": "text", "text": line}]} if line else {"type": "paragraph"}
        for line in text.split("\n")
    ]
    return {"type": "doc", "version": 1, "content": paragraphs}


@dataclass
class Issue:
    key: str
    id: str
    service_desk_id: str
    request_type_id: str
    summary: str
    description: str
    labels: list[str]
    status: str = OPEN
    comments: list[dict[str, Any]] = field(default_factory=list)
    created: str = field(default_factory=lambda: jira_time(datetime.now(UTC)))
    updated: str = field(default_factory=lambda: jira_time(datetime.now(UTC)))
    resolutiondate: str | None = None
    assignee: dict[str, Any] | None = None
    priority: str = "Medium"
    api: str = "3"  # rich text as ADF on REST API 3, as plain text on 2
    # What the search index holds: (when indexed, the issue's fields then), oldest first.
    indexed: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "description": adf(self.description) if self.api == "3" else self.description,
            "labels": list(self.labels),
            "status": {"name": self.status, "statusCategory": {"key": CATEGORY[self.status]}},
            "resolution": {"name": "Done"} if self.status == RESOLVED else None,
            "resolutiondate": self.resolutiondate,
            "assignee": self.assignee,
            "priority": {"name": self.priority},
            "created": self.created,
            "updated": self.updated,
            "comment": {"comments": list(self.comments), "total": len(self.comments)},
        }

    def rest(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "fields": self.fields()}

    def changed(self, now: float) -> None:
        """A change the search index picks up later (cloud) or at once (index_delay 0)."""
        self.updated = jira_time(datetime.now(UTC))
        self.indexed.append((now, self.fields()))

    def as_indexed(self, now: float, delay: float) -> dict[str, Any] | None:
        """The fields search sees at now: the newest version indexed at least delay ago."""
        seen = [f for at, f in self.indexed if at + delay <= now]
        return seen[-1] if seen else None


def sd_error(status: int, message: str) -> web.Response:
    # https://developer.atlassian.com/cloud/jira/service-desk/rest/intro/#status-codes
    return web.json_response(
        {"errorMessage": message, "i18nErrorMessage": {"i18nKey": "sd.error", "parameters": []}},
        status=status,
    )


def platform_error(status: int, message: str) -> web.Response:
    # https://developer.atlassian.com/cloud/jira/platform/rest/v3/intro/#status-codes
    return web.json_response({"errorMessages": [message], "errors": {}}, status=status)


def _fields_wanted(raw: list[str]) -> list[str] | None:
    """The fields a search asked for (comma lists, repeatable); None: only ids (the default)."""
    names = [n.strip() for part in raw for n in part.split(",") if n.strip()]
    return names or None


def _pick(fields: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
    if "*all" in wanted or "*navigable" in wanted:
        return dict(fields)
    return {name: fields[name] for name in wanted if name in fields}


# Project permissions an agent of the service desk project holds by default (the keys are the
# built-in permission keys of "Get my permissions": https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-permissions/#api-rest-api-3-mypermissions-get).
AGENT_PERMISSIONS = frozenset(
    {"BROWSE_PROJECTS", "CREATE_ISSUES", "EDIT_ISSUES", "TRANSITION_ISSUES", "ADD_COMMENTS"}
)


ACCOUNT_ID = "5b10a2844c20165700ede21g"


def create_jira(
    email: str,
    token: str,
    project: str = "SD",
    service_desks: frozenset[str] = frozenset({"1"}),
    request_types: frozenset[str] = frozenset({"10", "11"}),
    deployment: str = "cloud",
    index_delay: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    permissions: frozenset[str] = AGENT_PERMISSIONS,
) -> web.Application:
    if deployment not in ("cloud", "datacenter"):
        raise ValueError(f"deployment {deployment!r} is not cloud or datacenter")
    issues: dict[str, Issue] = {}
    expected = f"{email}:{token}".encode()
    faults = Faults(("/rest/",))
    delay = index_delay if deployment == "cloud" else 0.0
    api = "3" if deployment == "cloud" else "2"

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        # Basic auth with an API token: https://developer.atlassian.com/cloud/jira/platform/basic-auth-for-rest-apis/
        if not request.path.startswith("/rest/"):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        try:
            given = base64.b64decode(header[6:], validate=True) if header.startswith("Basic ") else b""
        except (binascii.Error, ValueError):
            given = b""
        if not hmac.compare_digest(given, expected):
            return platform_error(
                401, "You are not authenticated. Authentication required to perform this operation."
            )
        return await handler(request)

    def issue_of(request: web.Request) -> Issue:
        key = request.match_info["key"]
        found = issues.get(key) or next((i for i in issues.values() if i.id == key), None)
        if found is None:
            raise web.HTTPNotFound(
                text='{"errorMessage": "Request does not exist or you do not have permission"}',
                content_type="application/json",
            )
        return found

    async def create(request: web.Request) -> web.Response:
        # POST /rest/servicedeskapi/request: "Create customer request" (201, the request with
        # issueId and issueKey). https://developer.atlassian.com/cloud/jira/service-desk/rest/api-group-request/#api-rest-servicedeskapi-request-post
        body = await request.json()
        fields = body.get("requestFieldValues") or {}
        if str(body.get("serviceDeskId")) not in service_desks:
            return sd_error(404, f"The service desk {body.get('serviceDeskId')!r} does not exist.")
        if str(body.get("requestTypeId")) not in request_types:
            return sd_error(400, f"The request type {body.get('requestTypeId')!r} does not exist.")
        summary = fields.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            return sd_error(400, "Summary: You must specify a summary of the issue.")
        labels = fields.get("labels") or []
        if any(not isinstance(x, str) or " " in x for x in labels):
            return sd_error(400, "Labels cannot contain spaces.")
        n = len(issues) + 1
        issue = Issue(
            f"{project}-{n}",
            str(10000 + n),
            str(body["serviceDeskId"]),
            str(body["requestTypeId"]),
            summary,
            str(fields.get("description", "")),
            list(labels),
            api=api,
        )
        issue.changed(clock())
        issues[issue.key] = issue
        return web.json_response(customer_request(issue), status=201)

    def customer_request(issue: Issue) -> dict[str, Any]:
        return {
            "issueId": issue.id,
            "issueKey": issue.key,
            "requestTypeId": issue.request_type_id,
            "serviceDeskId": issue.service_desk_id,
            "createdDate": {"iso8601": issue.created},
            "currentStatus": {"status": issue.status},
        }

    async def get_request(request: web.Request) -> web.Response:
        # GET /rest/servicedeskapi/request/{issueIdOrKey}: "Get customer request by id or key" (the
        # request with its service desk and request type ids).
        # https://developer.atlassian.com/cloud/jira/service-desk/rest/api-group-request/#api-rest-servicedeskapi-request-issueidorkey-get
        return web.json_response(customer_request(issue_of(request)))

    async def transitions(request: web.Request) -> web.Response:
        # GET /rest/servicedeskapi/request/{issueIdOrKey}/transition: a paged list of the transitions
        # the customer can perform. https://developer.atlassian.com/cloud/jira/service-desk/rest/api-group-request/#api-rest-servicedeskapi-request-issueidorkey-transition-get
        issue = issue_of(request)
        values = [{"id": tid, "name": name} for tid, name, _ in TRANSITIONS[issue.status]]
        return web.json_response(
            {"size": len(values), "start": 0, "limit": 50, "isLastPage": True, "values": values}
        )

    async def transition(request: web.Request) -> web.Response:
        # POST .../transition {"id", "additionalComment": {"body"}} -> 204.
        # https://developer.atlassian.com/cloud/jira/service-desk/rest/api-group-request/#api-rest-servicedeskapi-request-issueidorkey-transition-post
        issue = issue_of(request)
        body = await request.json()
        match = [t for t in TRANSITIONS[issue.status] if t[0] == str(body.get("id"))]
        if not match:
            return sd_error(
                400, f"Transition {body.get('id')!r} is not valid for {issue.key} in {issue.status!r}."
            )
        issue.status = match[0][2]
        issue.resolutiondate = jira_time(datetime.now(UTC)) if issue.status == RESOLVED else None
        comment = (body.get("additionalComment") or {}).get("body")
        if comment:
            issue.comments.append({"body": comment, "public": True})
        issue.changed(clock())
        return web.Response(status=204)

    async def comment(request: web.Request) -> web.Response:
        # POST /rest/servicedeskapi/request/{issueIdOrKey}/comment {"body", "public"} -> 201.
        # https://developer.atlassian.com/cloud/jira/service-desk/rest/api-group-request/#api-rest-servicedeskapi-request-issueidorkey-comment-post
        issue = issue_of(request)
        body = await request.json()
        if not body.get("body"):
            return sd_error(400, "Comment body is required.")
        issue.comments.append({"body": body["body"], "public": bool(body.get("public", True))})
        issue.changed(clock())
        return web.json_response({"id": str(len(issue.comments)), "body": body["body"]}, status=201)

    def query(jql: str) -> tuple[Callable[[dict[str, Any]], bool], list[Issue]] | web.Response:
        """Which issue fields match the query (see LABEL), and the issues in its order. Dates in
        JQL are in the user's time zone (UTC here, as /myself says)."""
        m = LABEL.match(jql.strip())
        if not m:
            # A query this emulator cannot evaluate is refused, never answered wrongly.
            return platform_error(400, f"Error in the JQL Query: unsupported query {jql!r}.")
        label, since_text, order, direction = m.groups()
        since = datetime.strptime(since_text, "%Y/%m/%d %H:%M").replace(tzinfo=UTC) if since_text else None

        def matches(fields: dict[str, Any]) -> bool:
            if label not in fields["labels"]:
                return False
            return since is None or datetime.strptime(fields["updated"], "%Y-%m-%dT%H:%M:%S.%f%z") >= since

        ordered = list(issues.values())  # created in insertion order
        if (order or "").lower() == "updated":
            ordered.sort(key=lambda i: i.updated)
        if (direction or "").upper() == "DESC":
            ordered.reverse()
        return matches, ordered

    async def removed(request: web.Request) -> web.Response:
        # Jira Cloud removed GET/POST /rest/api/{2,3}/search: 410 Gone. CHANGE-2046,
        # https://developer.atlassian.com/changelog/#CHANGE-2046
        return platform_error(410, REMOVED)

    async def search_jql(request: web.Request) -> web.Response:
        # GET and POST /rest/api/3/search/jql, the enhanced search (SEARCH_JQL_DOC): jql, fields
        # (default: issue ids only), maxResults (default 50, at most 5000), nextPageToken; the answer
        # has issues, nextPageToken (absent on the last page) and isLast, no startAt or total. It is
        # eventually consistent: issues named in reconcileIssues are read at their current state.
        if request.method == "POST":
            try:
                body = json.loads(await request.read() or b"{}")
            except ValueError:
                return platform_error(400, "Invalid request payload. Refer to the REST API documentation.")
            jql = str(body.get("jql", ""))
            wanted = _fields_wanted(list(body.get("fields") or []))
            max_results, token = body.get("maxResults", 50), body.get("nextPageToken")
            reconcile = {str(x) for x in body.get("reconcileIssues") or []}
        else:
            q = request.query
            jql, wanted = q.get("jql", ""), _fields_wanted(q.getall("fields", []))
            max_results, token = q.get("maxResults", "50"), q.get("nextPageToken")
            reconcile = {x.strip() for part in q.getall("reconcileIssues", []) for x in part.split(",")}
        try:
            limit = min(max(int(max_results), 1), 5000)
        except (TypeError, ValueError):
            return platform_error(400, "maxResults must be a number.")
        parsed = query(jql)
        if isinstance(parsed, web.Response):
            return parsed
        matches, ordered = parsed
        now = clock()
        visible: list[tuple[Issue, dict[str, Any]]] = []
        for issue in ordered:
            seen = issue.fields() if issue.id in reconcile else issue.as_indexed(now, delay)
            if seen is not None and matches(seen):
                visible.append((issue, seen))
        start = 0
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                start = int(state["at"]) if state["jql"] == jql else -1
            except (ValueError, KeyError, TypeError, binascii.Error):
                start = -1
            if start < 0:
                return platform_error(400, "The provided next page token is invalid or expired.")
        page = visible[start : start + limit]
        out: dict[str, Any] = {
            "issues": [
                {"id": i.id} if wanted is None else {"id": i.id, "key": i.key, "fields": _pick(f, wanted)}
                for i, f in page
            ],
            "isLast": start + limit >= len(visible),
        }
        if not out["isLast"]:
            out["nextPageToken"] = base64.urlsafe_b64encode(
                json.dumps({"jql": jql, "at": start + limit}).encode()
            ).decode()
        return web.json_response(out)

    async def search_dc(request: web.Request) -> web.Response:
        # Jira Data Center GET /rest/api/2/search: jql, startAt, maxResults, fields; the answer has
        # startAt, maxResults, total and issues (id, key, fields).
        # https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/search-search
        q = request.query
        parsed = query(q.get("jql", ""))
        if isinstance(parsed, web.Response):
            return parsed
        found = [i for i in parsed[1] if parsed[0](i.fields())]
        try:
            start, limit = int(q.get("startAt", "0")), int(q.get("maxResults", "50"))
        except ValueError:
            return platform_error(400, "startAt and maxResults must be numbers.")
        wanted = _fields_wanted(q.getall("fields", [])) or ["*navigable"]
        page = found[start : start + limit]
        return web.json_response(
            {
                "startAt": start,
                "maxResults": limit,
                "total": len(found),
                "issues": [{"id": i.id, "key": i.key, "fields": _pick(i.fields(), wanted)} for i in page],
            }
        )

    async def get_issue(request: web.Request) -> web.Response:
        # GET /rest/api/{2,3}/issue/{issueIdOrKey}: the issue, read at its current state (not the
        # search index). https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-issues/#api-rest-api-3-issue-issueidorkey-get
        return web.json_response(issue_of(request).rest())

    async def myself(_: web.Request) -> web.Response:
        # GET /rest/api/{2,3}/myself: the calling user.
        # https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-myself/#api-rest-api-3-myself-get
        return web.json_response(
            {
                "accountId": "5b10a2844c20165700ede21g",
                "emailAddress": email,
                "displayName": email,
                "active": True,
            }
        )

    async def my_permissions(request: web.Request) -> web.Response:
        # GET /rest/api/{2,3}/mypermissions?projectKey&permissions=A,B: each asked-for permission with
        # havePermission; `permissions` is required (400 without it). Same page as AGENT_PERMISSIONS.
        asked = [k.strip() for k in request.query.get("permissions", "").split(",") if k.strip()]
        if not asked:
            return platform_error(400, "The permissions query parameter is required.")
        key = request.query.get("projectKey")
        if key is not None and key != project:
            return platform_error(404, f"No project could be found with key '{key}'.")
        return web.json_response(
            {
                "permissions": {
                    k: {
                        "id": str(n),
                        "key": k,
                        "name": k.replace("_", " ").title(),
                        "type": "PROJECT",
                        "description": "",
                        "havePermission": k in permissions,
                    }
                    for n, k in enumerate(asked, start=1)
                }
            }
        )

    async def edit_issue(request: web.Request) -> web.Response:
        # PUT /rest/api/{2,3}/issue/{issueIdOrKey} {"fields": {...}} -> 204: what a person does in
        # the UI (here: priority {"name"} and assignee {"accountId"} or null).
        # https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-issues/#api-rest-api-3-issue-issueidorkey-put
        issue = issue_of(request)
        fields = (await request.json()).get("fields") or {}
        unknown = set(fields) - {"priority", "assignee"}
        if unknown:
            return web.json_response(
                {"errorMessages": [], "errors": {f: "Field cannot be set." for f in sorted(unknown)}},
                status=400,
            )
        if "priority" in fields:
            issue.priority = str((fields["priority"] or {}).get("name") or issue.priority)
        if "assignee" in fields:
            who = fields["assignee"]
            issue.assignee = (
                {"accountId": str(who["accountId"]), "displayName": str(who["accountId"])} if who else None
            )
        issue.changed(clock())
        return web.Response(status=204)

    async def service_desk(request: web.Request) -> web.Response:
        # GET /rest/servicedeskapi/servicedesk/{serviceDeskId}: id, projectId, projectName, projectKey.
        # https://developer.atlassian.com/cloud/jira/service-desk/rest/api-group-servicedesk/#api-rest-servicedeskapi-servicedesk-servicedeskid-get
        desk = request.match_info["desk"]
        if desk not in service_desks:
            return sd_error(404, f"The service desk {desk!r} does not exist.")
        return web.json_response(
            {"id": desk, "projectId": "10000", "projectName": "Service desk", "projectKey": project}
        )

    async def request_type(request: web.Request) -> web.Response:
        # GET /rest/servicedeskapi/servicedesk/{serviceDeskId}/requesttype/{requestTypeId}.
        # https://developer.atlassian.com/cloud/jira/service-desk/rest/api-group-servicedesk/#api-rest-servicedeskapi-servicedesk-servicedeskid-requesttype-requesttypeid-get
        desk, rtype = request.match_info["desk"], request.match_info["type"]
        if desk not in service_desks or rtype not in request_types:
            return sd_error(404, f"The request type {rtype!r} does not exist.")
        return web.json_response({"id": rtype, "name": f"Request type {rtype}", "serviceDeskId": desk})

    app = web.Application(middlewares=[faults.middleware, auth])
    app.router.add_get(f"/rest/api/{api}/myself", myself)
    app.router.add_get(f"/rest/api/{api}/mypermissions", my_permissions)
    app.router.add_get("/rest/servicedeskapi/servicedesk/{desk}", service_desk)
    app.router.add_get("/rest/servicedeskapi/servicedesk/{desk}/requesttype/{type}", request_type)
    app.router.add_post("/rest/servicedeskapi/request", create)
    app.router.add_get("/rest/servicedeskapi/request/{key}", get_request)
    app.router.add_get("/rest/servicedeskapi/request/{key}/transition", transitions)
    app.router.add_post("/rest/servicedeskapi/request/{key}/transition", transition)
    app.router.add_post("/rest/servicedeskapi/request/{key}/comment", comment)
    app.router.add_get(f"/rest/api/{api}/issue/{{key}}", get_issue)
    app.router.add_put(f"/rest/api/{api}/issue/{{key}}", edit_issue)
    if deployment == "cloud":
        for version in ("2", "3"):
            app.router.add_get(f"/rest/api/{version}/search", removed)
            app.router.add_post(f"/rest/api/{version}/search", removed)
        app.router.add_get("/rest/api/3/search/jql", search_jql)
        app.router.add_post("/rest/api/3/search/jql", search_jql)
    else:
        app.router.add_get("/rest/api/2/search", search_dc)
    return app
