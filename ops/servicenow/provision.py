"""Create the custom (u_*) columns the ServiceNow sink writes, through the Table API on
sys_dictionary, as ops/rt/provision.pl does for RT's custom fields.

A column is a sys_dictionary record (name = the table, element = the column, internal_type,
max_length, column_label); inserting one adds the column. This needs an account with
personalize_dictionary (or admin), used for this step only: the sink's own account needs neither.
Idempotent: a column that exists is left as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from connectors.sinks.servicenow.columns import CUSTOM_COLUMNS, Column


class ProvisionError(Exception):
    """The instance refused or could not be reached; the message names the fix."""


@dataclass(frozen=True)
class Step:
    column: Column
    action: str  # present | created | missing (dry run)


def provision(
    http: httpx.Client,
    columns: tuple[Column, ...] = CUSTOM_COLUMNS,
    dry_run: bool = False,
    progress: Callable[[Step], None] = lambda _step: None,
) -> list[Step]:
    steps = []
    for column in columns:
        found = _call(
            http,
            "GET",
            "/api/now/table/sys_dictionary",
            params={
                "sysparm_query": f"name={column.table}^element={column.element}",
                "sysparm_fields": "sys_id",
                "sysparm_limit": "1",
            },
        )
        if found.json().get("result"):
            step = Step(column, "present")
        elif dry_run:
            step = Step(column, "missing")
        else:
            _call(http, "POST", "/api/now/table/sys_dictionary", json=column.entry())
            step = Step(column, "created")
        progress(step)
        steps.append(step)
    return steps


def _call(http: httpx.Client, method: str, url: str, **kwargs: object) -> httpx.Response:
    try:
        resp = http.request(method, url, **kwargs)  # type: ignore[arg-type]
    except httpx.TransportError as exc:
        raise ProvisionError(f"cannot reach {http.base_url}: {exc}") from exc
    if resp.status_code == 401:
        raise ProvisionError(
            "the instance refused the administrator's credentials (401): check "
            "ITSM_SERVICENOW_ADMIN_USER and ITSM_SERVICENOW_ADMIN_PASSWORD_FILE"
        )
    if resp.status_code == 403:
        raise ProvisionError(
            f"{method} sys_dictionary was refused (403): the account needs personalize_dictionary (or admin)"
        )
    if resp.status_code >= 400:
        raise ProvisionError(f"{method} {url} answered {resp.status_code}: {resp.text[:200]}")
    return resp
