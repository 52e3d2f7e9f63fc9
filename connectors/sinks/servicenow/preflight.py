"""`itsmctl itsm check servicenow`: credentials, TLS, clock, the account's roles and table access,
the custom columns, and rights held beyond what the sink needs.

Rights are read the way an administrator reads them: the account's roles in sys_user_has_role
(granted and inherited rows), and table-level read access by reading one row of each table.
Writes are never tried (a check must not create records): write rights are judged from roles.
"""

from __future__ import annotations

from typing import Any

import httpx

from connectors.preflight import Finding, Level, clock_skew, request, run, transport
from connectors.sinks.servicenow.columns import CUSTOM_COLUMNS
from connectors.sinks.servicenow.config import ServiceNowConfig
from connectors.sinks.servicenow.values import display

# Roles granting what the sink does ("System roles" and the ITSM Roles plugins; see
# connectors/devitsm/server.py for the pages): writing incidents, writing change requests, and
# reading the CMDB to bind cmdb_ci and business_service.
INCIDENT_WRITE = frozenset({"itil", "sn_incident_write", "admin"})
CHANGE_WRITE = frozenset({"itil", "sn_change_write", "admin"})
# Roles beyond what the pipeline needs: each a reason to use a narrower account.
EXCESS = {
    "admin": "overrides every ACL",
    "security_admin": "edits ACLs",
    "user_admin": "manages users, groups and roles",
    "personalize_dictionary": "changes table definitions (only the provisioning step needs it)",
    "itil_admin": "deletes incidents and changes",
    "import_scheduler": "runs scripts with administrator privileges",
    "impersonator": "impersonates users",
}
READS = (
    ("incident", "read incidents (lookups by correlation id)", "itil or sn_incident_write"),
    ("change_request", "read change requests (change sync)", "itil or sn_change_write"),
    ("cmdb_ci", "read CIs (binds cmdb_ci)", "itil or cmdb_read"),
    ("cmdb_ci_service", "read services (binds business_service)", "itil or cmdb_read"),
    ("sys_user_group", "read groups (binds assignment_group)", "itil"),
    ("cmn_schedule_blackout", "read blackout schedules (freeze import)", "itil or sn_change_read"),
)
NEEDED = "itil, or sn_incident_write and sn_change_write"
SETTINGS = "ITSM_SERVICENOW_USER and ITSM_SERVICENOW_PASSWORD_FILE (or the OAuth client settings)"


def _rows(resp: httpx.Response) -> list[dict[str, Any]]:
    try:
        result = resp.json().get("result")
    except ValueError:
        return []
    return [dict(r) for r in result] if isinstance(result, list) else []


def check(config: ServiceNowConfig) -> list[Finding]:
    """Every finding about this instance and account; raises Unreachable when nothing answers."""
    try:
        auth = config.http_auth()
    except ValueError as exc:
        return [Finding("configuration", Level.PROBLEM, str(exc), "set the named settings")]
    return run(
        config.base_url,
        auth,
        config.verify,
        config.timeout_seconds,
        "ITSM_SERVICENOW_VERIFY_TLS",
        lambda http: _check(http, config),
    )


def _check(http: httpx.Client, config: ServiceNowConfig) -> list[Finding]:
    out: list[Finding] = []
    me = request(
        http,
        "GET",
        "/api/now/table/sys_user",
        params={
            "sysparm_query": f"user_name={config.user}",
            "sysparm_fields": "sys_id,user_name",
            "sysparm_limit": "1",
            "sysparm_exclude_reference_link": "true",
        },
    )
    if me.status_code == 401:
        return [
            Finding(
                "credentials",
                Level.PROBLEM,
                "the instance refused the credentials (401)",
                f"check {SETTINGS}",
            )
        ]
    out.append(transport(config.base_url))
    out.append(Finding("credentials", Level.OK, f"signed in as {config.user}"))
    out.append(clock_skew(me))
    out.extend(_roles(http, config, _rows(me)))
    for table, what, role in READS:
        resp = request(
            http, "GET", f"/api/now/table/{table}", params={"sysparm_limit": "1", "sysparm_fields": "sys_id"}
        )
        if resp.status_code == 200:
            out.append(Finding(f"read {table}", Level.OK, what))
        else:
            out.append(
                Finding(
                    f"read {table}",
                    Level.PROBLEM,
                    f"cannot {what}: HTTP {resp.status_code}",
                    f"grant the account {role}",
                )
            )
    out.extend(_columns(http))
    return out


def _roles(http: httpx.Client, config: ServiceNowConfig, me: list[dict[str, Any]]) -> list[Finding]:
    if not me:
        return [
            Finding(
                "roles",
                Level.WARN,
                f"no sys_user with user_name {config.user} is visible: write rights cannot be judged",
                "check ITSM_SERVICENOW_USER",
            )
        ]
    resp = request(
        http,
        "GET",
        "/api/now/table/sys_user_has_role",
        params={
            "sysparm_query": f"user={me[0]['sys_id']}",
            "sysparm_fields": "role",
            "sysparm_display_value": "true",
            "sysparm_exclude_reference_link": "true",
        },
    )
    if resp.status_code != 200:
        return [
            Finding(
                "roles",
                Level.WARN,
                f"the account cannot read its roles (HTTP {resp.status_code}): write rights unverified",
                f"ask an administrator to confirm the account holds {NEEDED}",
            )
        ]
    roles = {display(r.get("role")) for r in _rows(resp)}
    out = []
    for needed, what in (
        (INCIDENT_WRITE, "create and update incidents"),
        (CHANGE_WRITE, "create and update change requests"),
    ):
        if roles & needed:
            out.append(Finding("rights", Level.OK, f"may {what} ({', '.join(sorted(roles & needed))})"))
        else:
            role = "sn_incident_write" if needed is INCIDENT_WRITE else "sn_change_write"
            out.append(
                Finding(
                    "rights",
                    Level.PROBLEM,
                    f"may not {what}: no {' or '.join(sorted(needed - {'admin'}))}",
                    f"grant the account itil or {role}",
                )
            )
    for role in sorted(roles & set(EXCESS)):
        out.append(
            Finding(
                "least privilege",
                Level.WARN,
                f"the account holds {role}, which {EXCESS[role]}: more than the sink needs",
                f"remove {role} from the account (the sink needs {NEEDED})",
            )
        )
    return out


def _columns(http: httpx.Client) -> list[Finding]:
    """The custom columns: from the dictionary when readable, else from one row's fields."""
    present: dict[str, set[str]] = {}
    tables = sorted({c.table for c in CUSTOM_COLUMNS})
    for table in tables:
        resp = request(
            http,
            "GET",
            "/api/now/table/sys_dictionary",
            params={"sysparm_query": f"name={table}^elementSTARTSWITHu_", "sysparm_fields": "element"},
        )
        if resp.status_code == 200:
            present[table] = {str(r.get("element")) for r in _rows(resp)}
            continue
        # No read on the dictionary (it needs personalize_dictionary): a row lists every field
        # asked for that the table has, and leaves out the ones it has not.
        wanted = ",".join(["sys_id", *(c.element for c in CUSTOM_COLUMNS if c.table == table)])
        row = request(
            http, "GET", f"/api/now/table/{table}", params={"sysparm_fields": wanted, "sysparm_limit": "1"}
        )
        rows = _rows(row) if row.status_code == 200 else []
        if rows:
            present[table] = set(rows[0])
    out = []
    for table in tables:
        if table not in present:
            names = ", ".join(c.element for c in CUSTOM_COLUMNS if c.table == table)
            out.append(
                Finding(
                    f"columns {table}",
                    Level.WARN,
                    f"{names} unverified: the dictionary is not readable and the table has no row to look at",
                    "run `itsmctl itsm provision servicenow` (an administrator's account), which verifies",
                )
            )
    for column in CUSTOM_COLUMNS:
        name = f"{column.table}.{column.element}"
        if column.table not in present:
            continue
        if column.element in present[column.table]:
            out.append(Finding(f"column {name}", Level.OK, "exists"))
        else:
            out.append(
                Finding(
                    f"column {name}",
                    Level.PROBLEM,
                    "missing: the instance ignores this field on writes, so its value is lost",
                    "run `itsmctl itsm provision servicenow` with an administrator's account",
                )
            )
    return out
