"""`itsmctl itsm check jira`: credentials, TLS, clock, the service desk and request types, the
account's project permissions (needed ones and ones beyond), search, and the configured
transitions on the newest pipeline request. Nothing is written."""

from __future__ import annotations

import httpx

from connectors.preflight import Finding, Level, body, clock_skew, request, run, transport
from connectors.sinks.jira.config import JiraConfig
from connectors.sinks.jira.mapping import INCIDENT_LABEL
from streams.core.secrets import basic_auth

NEEDED = ("BROWSE_PROJECTS", "CREATE_ISSUES", "EDIT_ISSUES", "TRANSITION_ISSUES", "ADD_COMMENTS")
BEYOND = {
    "ADMINISTER_PROJECTS": "administers the project (workflows, permissions)",
    "DELETE_ISSUES": "deletes issues",
    "ADMINISTER": "is a Jira administrator",
}


def check(config: JiraConfig) -> list[Finding]:
    auth = basic_auth(config.email, config.api_token)
    return run(
        config.base_url,
        auth,
        config.verify,
        config.timeout_seconds,
        "ITSM_JIRA_VERIFY_TLS",
        lambda http: _check(http, config),
    )


def _check(http: httpx.Client, config: JiraConfig) -> list[Finding]:
    api = config.api_version
    me = request(http, "GET", f"/rest/api/{api}/myself")
    if me.status_code == 401:
        return [
            Finding(
                "credentials",
                Level.PROBLEM,
                "Jira refused the credentials (401)",
                "check ITSM_JIRA_EMAIL and ITSM_JIRA_API_TOKEN_FILE (an API token, not the password)",
            )
        ]
    if me.status_code == 404:
        return [
            Finding(
                "api",
                Level.PROBLEM,
                f"/rest/api/{api}/myself not found: is ITSM_JIRA_DEPLOYMENT={config.deployment} right?",
                "set ITSM_JIRA_DEPLOYMENT to cloud (REST API 3) or datacenter (REST API 2)",
            )
        ]
    out = [
        transport(config.base_url),
        Finding("credentials", Level.OK, f"signed in as {body(me).get('displayName') or config.email}"),
        clock_skew(me),
        Finding("api", Level.OK, f"{config.deployment}, REST API {api}"),
    ]
    desk = request(http, "GET", f"/rest/servicedeskapi/servicedesk/{config.service_desk_id}")
    if desk.status_code != 200:
        out.append(
            Finding(
                "service desk",
                Level.PROBLEM,
                f"service desk {config.service_desk_id} is not visible (HTTP {desk.status_code})",
                "set ITSM_JIRA_SERVICE_DESK_ID to the service desk's id and make the account an agent of it",
            )
        )
        return out
    project = str(body(desk).get("projectKey", ""))
    out.append(
        Finding("service desk", Level.OK, f"service desk {config.service_desk_id} (project {project})")
    )
    for setting, type_id in (
        ("ITSM_JIRA_INCIDENT_REQUEST_TYPE_ID", config.incident_request_type_id),
        ("ITSM_JIRA_CHANGE_REQUEST_TYPE_ID", config.change_request_type_id),
    ):
        resp = request(
            http, "GET", f"/rest/servicedeskapi/servicedesk/{config.service_desk_id}/requesttype/{type_id}"
        )
        if resp.status_code == 200:
            out.append(Finding(f"request type {type_id}", Level.OK, str(body(resp).get("name", ""))))
        else:
            out.append(
                Finding(
                    f"request type {type_id}",
                    Level.PROBLEM,
                    f"request type {type_id} is not in service desk {config.service_desk_id} "
                    f"(HTTP {resp.status_code})",
                    f"set {setting} to a request type of the service desk",
                )
            )
    out.extend(_permissions(http, api, project))
    out.extend(_search_and_transitions(http, config))
    return out


def _permissions(http: httpx.Client, api: str, project: str) -> list[Finding]:
    keys = ",".join([*NEEDED, *BEYOND])
    resp = request(
        http, "GET", f"/rest/api/{api}/mypermissions", params={"projectKey": project, "permissions": keys}
    )
    if resp.status_code != 200:
        return [
            Finding(
                "permissions", Level.WARN, f"cannot read the account's permissions (HTTP {resp.status_code})"
            )
        ]
    held = {
        k
        for k, v in (body(resp).get("permissions") or {}).items()
        if isinstance(v, dict) and v.get("havePermission")
    }
    missing = [k for k in NEEDED if k not in held]
    out = []
    if missing:
        out.append(
            Finding(
                "permissions",
                Level.PROBLEM,
                f"missing in project {project}: {', '.join(missing)}",
                "add the account to the project's Service Desk Team role (agents hold these permissions)",
            )
        )
    else:
        out.append(Finding("permissions", Level.OK, f"{', '.join(NEEDED)} in project {project}"))
    for key in sorted(held & set(BEYOND)):
        out.append(
            Finding(
                "least privilege",
                Level.WARN,
                f"the account holds {key}: it {BEYOND[key]}, more than the sink needs",
                "use an agent account without administrator permissions",
            )
        )
    return out


def _search_and_transitions(http: httpx.Client, config: JiraConfig) -> list[Finding]:
    jql = f'labels = "{INCIDENT_LABEL}" ORDER BY created DESC'
    if config.api_version == "3":
        resp = request(
            http, "GET", "/rest/api/3/search/jql", params={"jql": jql, "maxResults": "1", "fields": "status"}
        )
    else:
        resp = request(
            http, "GET", "/rest/api/2/search", params={"jql": jql, "maxResults": "1", "fields": "status"}
        )
    if resp.status_code != 200:
        return [
            Finding(
                "search",
                Level.PROBLEM,
                f"search answered HTTP {resp.status_code}: {resp.text[:200]}",
                "check ITSM_JIRA_DEPLOYMENT (cloud uses /rest/api/3/search/jql)",
            )
        ]
    out = [Finding("search", Level.OK, "JQL search works")]
    issues = body(resp).get("issues") or []
    if not issues:
        out.append(
            Finding("transitions", Level.WARN, "unverified: no request the pipeline opened exists yet")
        )
        return out
    key = str(issues[0].get("key") or issues[0].get("id"))
    offered = request(http, "GET", f"/rest/servicedeskapi/request/{key}/transition")
    names = {str(v.get("name")) for v in (body(offered).get("values") or [])}
    wanted = {config.resolve_transition, config.reopen_transition}
    if names & wanted:
        out.append(Finding("transitions", Level.OK, f"{key} offers {', '.join(sorted(names & wanted))}"))
    else:
        out.append(
            Finding(
                "transitions",
                Level.PROBLEM,
                f"{key} offers {', '.join(sorted(names)) or 'no transition'}, neither "
                f"{config.resolve_transition!r} nor {config.reopen_transition!r}",
                "set ITSM_JIRA_RESOLVE_TRANSITION and ITSM_JIRA_REOPEN_TRANSITION to the workflow's names",
            )
        )
    return out
