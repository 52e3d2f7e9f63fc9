"""A contract emulator of the Jira Service Management REST APIs the Jira sink uses (in memory).

It is an emulator, not Jira. It follows Atlassian's public documentation for:
  POST /rest/servicedeskapi/request                      create a customer request (201)
  GET  /rest/servicedeskapi/request/{key}/transition     the transitions a request can take
  POST /rest/servicedeskapi/request/{key}/transition     perform one ({"id", "additionalComment"}) (204)
  POST /rest/servicedeskapi/request/{key}/comment        add a comment ({"body", "public"}) (201)
  GET  /rest/api/3/search?jql=labels = "x"               find issues by label
  GET  /rest/api/3/issue/{key}                           read an issue
with basic auth (email:API token), and Jira's error bodies: servicedeskapi
{"errorMessage", "i18nErrorMessage"}, platform API {"errorMessages": [...], "errors": {}}.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from connectors.emulators.faults import Faults

OPEN, RESOLVED = "Waiting for support", "Resolved"
TRANSITIONS = {OPEN: [("761", "Resolve this issue", RESOLVED)], RESOLVED: [("871", "Reopen issue", OPEN)]}
LABEL = re.compile(r'^labels\s*=\s*"([^"\s]+)"(\s+ORDER BY created (ASC|DESC))?$', re.IGNORECASE)


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
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def rest(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "fields": {
                "summary": self.summary,
                "description": self.description,
                "labels": self.labels,
                "status": {"name": self.status},
                "comment": {"comments": self.comments, "total": len(self.comments)},
            },
        }


def sd_error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"errorMessage": message, "i18nErrorMessage": {"i18nKey": "sd.error", "parameters": []}},
        status=status,
    )


def platform_error(status: int, message: str) -> web.Response:
    return web.json_response({"errorMessages": [message], "errors": {}}, status=status)


def create_jira(
    email: str,
    token: str,
    project: str = "SD",
    service_desks: frozenset[str] = frozenset({"1"}),
    request_types: frozenset[str] = frozenset({"10", "11"}),
) -> web.Application:
    issues: dict[str, Issue] = {}
    expected = f"{email}:{token}".encode()
    faults = Faults(("/rest/",))

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
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
        )
        issues[issue.key] = issue
        return web.json_response(
            {
                "issueId": issue.id,
                "issueKey": issue.key,
                "requestTypeId": issue.request_type_id,
                "serviceDeskId": issue.service_desk_id,
                "createdDate": {"iso8601": issue.created},
                "currentStatus": {"status": issue.status},
            },
            status=201,
        )

    async def transitions(request: web.Request) -> web.Response:
        issue = issue_of(request)
        values = [{"id": tid, "name": name} for tid, name, _ in TRANSITIONS[issue.status]]
        return web.json_response(
            {"size": len(values), "start": 0, "limit": 50, "isLastPage": True, "values": values}
        )

    async def transition(request: web.Request) -> web.Response:
        issue = issue_of(request)
        body = await request.json()
        match = [t for t in TRANSITIONS[issue.status] if t[0] == str(body.get("id"))]
        if not match:
            return sd_error(
                400, f"Transition {body.get('id')!r} is not valid for {issue.key} in {issue.status!r}."
            )
        issue.status = match[0][2]
        comment = (body.get("additionalComment") or {}).get("body")
        if comment:
            issue.comments.append({"body": comment, "public": True})
        return web.Response(status=204)

    async def comment(request: web.Request) -> web.Response:
        issue = issue_of(request)
        body = await request.json()
        if not body.get("body"):
            return sd_error(400, "Comment body is required.")
        issue.comments.append({"body": body["body"], "public": bool(body.get("public", True))})
        return web.json_response({"id": str(len(issue.comments)), "body": body["body"]}, status=201)

    async def search(request: web.Request) -> web.Response:
        jql = request.query.get("jql", "").strip()
        m = LABEL.match(jql)
        if not m:
            return platform_error(400, f"Error in the JQL Query: unsupported query {jql!r}.")
        found = [i.rest() for i in issues.values() if m.group(1) in i.labels]
        if (m.group(3) or "").upper() == "DESC":
            found.reverse()  # created in insertion order
        return web.json_response({"startAt": 0, "maxResults": 50, "total": len(found), "issues": found})

    async def get_issue(request: web.Request) -> web.Response:
        return web.json_response(issue_of(request).rest())

    app = web.Application(middlewares=[faults.middleware, auth])
    app.router.add_post("/rest/servicedeskapi/request", create)
    app.router.add_get("/rest/servicedeskapi/request/{key}/transition", transitions)
    app.router.add_post("/rest/servicedeskapi/request/{key}/transition", transition)
    app.router.add_post("/rest/servicedeskapi/request/{key}/comment", comment)
    app.router.add_get("/rest/api/3/search", search)
    app.router.add_get("/rest/api/3/issue/{key}", get_issue)
    return app
