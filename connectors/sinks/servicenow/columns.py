"""The custom (u_*) columns the ServiceNow sink writes, as sys_dictionary entries.

An instance ignores a field it does not have on a Table API write (the value is silently lost), so
these must exist before the sink runs: `itsmctl itsm provision servicenow` creates them and
`itsmctl itsm check servicenow` verifies them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One sys_dictionary entry: the table (name), the column (element), its type and label."""

    table: str
    element: str
    internal_type: str
    max_length: int
    column_label: str

    def entry(self) -> dict[str, str]:
        return {
            "name": self.table,
            "element": self.element,
            "internal_type": self.internal_type,
            "max_length": str(self.max_length),
            "column_label": self.column_label,
        }


CUSTOM_COLUMNS = (
    Column("change_request", "u_commit_ids", "string", 4000, "Commit IDs"),
    Column("change_request", "u_build_number", "string", 100, "Build number"),
    Column("change_request", "u_deploy_duration_ms", "integer", 40, "Deploy duration (ms)"),
)
