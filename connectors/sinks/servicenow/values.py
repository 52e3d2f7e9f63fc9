"""Table API field values in every shape the Table API answers them in.

Per the Table API reference (GET /now/table/{tableName}, "sysparm_display_value" and
"sysparm_exclude_reference_link"; https://developer.servicenow.com/dev.do#!/reference/api/latest/rest/c_TableAPI):
- sysparm_display_value=false (the default): the stored value; a reference field is an object
  {"link": "<URL of the referenced record>", "value": "<sys_id>"}, or the bare sys_id with
  sysparm_exclude_reference_link=true;
- sysparm_display_value=true: the display value only (a reference's display field, a choice's
  label, a date in the user's format and time zone), a reference as {"link", "display_value"};
- sysparm_display_value=all: {"display_value": ..., "value": ...} for every field, plus "link" for a
  reference unless excluded.
Readers ask for `all` with links excluded (READ_PARAMS) and read through value() and display(),
which accept every shape, so a row of any of them is understood.
"""

from __future__ import annotations

from typing import Any

# What the pipeline's readers ask for: the stored value and the display value of every field.
READ_PARAMS = {"sysparm_display_value": "all", "sysparm_exclude_reference_link": "true"}


def value(raw: Any) -> str:
    """The stored value: a choice's value, a reference's sys_id, a date in UTC ('' when empty)."""
    if isinstance(raw, dict):
        inner = raw.get("value")
        if inner is None:
            inner = raw.get("display_value")  # display_value=true gives nothing else
        return "" if inner is None else str(inner)
    return "" if raw is None else str(raw)


def display(raw: Any) -> str:
    """The display value when the row carries one (a reference's name, a choice's label), else
    the stored value."""
    if isinstance(raw, dict):
        shown = raw.get("display_value")
        return value(raw) if shown in (None, "") else str(shown)
    return "" if raw is None else str(raw)


def values(row: dict[str, Any]) -> dict[str, str]:
    """Every field of a row as its stored value."""
    return {name: value(raw) for name, raw in row.items()}


_LEVEL = {"1": "1 - High", "2": "2 - Medium", "3": "3 - Low"}
_PRIORITY = {"1": "1 - Critical", "2": "2 - High", "3": "3 - Moderate", "4": "4 - Low", "5": "5 - Planning"}
# Choice labels of the platform's default choice lists (incident.state, change_request.state, ...),
# out of the box values; not checked against a documentation page from this machine: an instance
# may have customised them, and a reader never depends on a label (readers use stored values).
CHOICE_LABELS: dict[str, dict[str, dict[str, str]]] = {
    "incident": {
        "state": {
            "1": "New",
            "2": "In Progress",
            "3": "On Hold",
            "6": "Resolved",
            "7": "Closed",
            "8": "Canceled",
        },
        "impact": _LEVEL,
        "urgency": _LEVEL,
        "priority": _PRIORITY,
    },
    "change_request": {
        "state": {
            "-5": "New",
            "-4": "Assess",
            "-3": "Authorize",
            "-2": "Scheduled",
            "-1": "Implement",
            "0": "Review",
            "3": "Closed",
            "4": "Canceled",
        },
        "approval": {
            "not requested": "Not Yet Requested",
            "requested": "Requested",
            "approved": "Approved",
            "rejected": "Rejected",
        },
        "type": {"standard": "Standard", "normal": "Normal", "emergency": "Emergency"},
        "close_code": {
            "successful": "Successful",
            "successful_issues": "Successful with issues",
            "unsuccessful": "Unsuccessful",
        },
        "impact": _LEVEL,
        "urgency": _LEVEL,
        "priority": _PRIORITY,
    },
}
