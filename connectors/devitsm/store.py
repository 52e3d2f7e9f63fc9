"""SQLite storage of the development ITSM's incident and change_request tables, and of change
blackout schedules with their entries.

Table and column names in SQL text come only from TABLES (queried fields are checked against it
by the server); every value is a bound parameter.
"""
# ruff: noqa: S608

from __future__ import annotations

import re
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Columns per table; every value is stored and returned as a string, as ServiceNow does.
COMMON = [
    "sys_id",
    "number",
    "state",
    "short_description",
    "description",
    "correlation_id",
    "correlation_display",
    "cmdb_ci",
    "business_service",
    "assignment_group",
    "assigned_to",
    "impact",
    "urgency",
    "priority",
    "caller_id",
    "contact_type",
    "work_notes",
    "close_code",
    "close_notes",
    "opened_at",
    "resolved_at",
    "resolved_by",
    "closed_at",
    "sys_created_on",
    "sys_created_by",
    "sys_updated_on",
    "sys_updated_by",
    "sys_mod_count",
    "active",
]
# Change blackout schedules (cmn_schedule_blackout, a cmn_schedule) and their entries
# (cmn_schedule_span): not tasks, so no number, state or priority.
SCHEDULE_COLUMNS = [
    "sys_id",
    "name",
    "description",
    "time_zone",
    "type",
    "sys_created_on",
    "sys_updated_on",
    "sys_mod_count",
]
SPAN_COLUMNS = [
    "sys_id",
    "schedule",
    "name",
    "type",
    "start_date_time",
    "end_date_time",
    "all_day",
    "repeat_type",
    "repeat_count",
    "days_of_week",
    "repeat_until",
    "sys_created_on",
    "sys_updated_on",
    "sys_mod_count",
]
# Referenced tables the sinks bind reference fields to, the roles and the dictionary (their
# display field is "name", as in the base system).
NAMED = ["sys_id", "name", "sys_created_on", "sys_updated_on", "sys_mod_count"]
TABLES: dict[str, dict[str, Any]] = {
    # The incident form's Category, and its "Caused by Change" (a change_request reference): "Create
    # an incident", https://www.servicenow.com/docs/r/washingtondc/it-service-management/
    # incident-management/create-an-incident.html
    "incident": {"prefix": "INC", "start": 10001, "columns": [*COMMON, "category", "caused_by"]},
    "change_request": {
        "prefix": "CHG",
        "start": 30001,
        "columns": [
            *COMMON,
            "type",
            "start_date",
            "end_date",
            "justification",
            "requested_by",
            "approval",
            "implementation_plan",
        ],
    },
    "cmn_schedule_blackout": {"columns": SCHEDULE_COLUMNS, "required": "name"},
    "cmn_schedule_span": {"columns": SPAN_COLUMNS, "required": "schedule"},
    "cmdb_ci": {"columns": [*NAMED, "sys_class_name", "support_group"], "required": "name"},
    "cmdb_ci_service": {"columns": [*NAMED, "support_group"], "required": "name"},
    "sys_user_group": {"columns": [*NAMED, "description"], "required": "name"},
    "sys_user": {"columns": [*NAMED, "user_name", "email", "active"], "required": "user_name"},
    "sys_user_role": {"columns": [*NAMED, "description"], "required": "name"},
    "sys_user_has_role": {"columns": ["sys_id", "user", "role", "inherited", "state"], "required": "user"},
    # Column definitions: "each row in the system dictionary represents either a table or a column
    # in one of the tables" ("System dictionary", https://www.servicenow.com/docs/r/
    # platform-administration/table-administration-and-data-management/c_SystemDictionary.html):
    # name = the table, element = the column; a row inserted here adds the column (a u_* field).
    "sys_dictionary": {
        "columns": ["sys_id", "name", "element", "internal_type", "column_label", "max_length"],
        "required": "element",
    },
}
# Reference fields and the table each points at (the base system's dictionary for these tables).
REFERENCES: dict[str, dict[str, str]] = {
    "incident": {
        "cmdb_ci": "cmdb_ci",
        "business_service": "cmdb_ci_service",
        "assignment_group": "sys_user_group",
        "assigned_to": "sys_user",
        "caller_id": "sys_user",
        "resolved_by": "sys_user",
        "caused_by": "change_request",  # "Caused by Change" (see TABLES)
    },
    "change_request": {
        "cmdb_ci": "cmdb_ci",
        "business_service": "cmdb_ci_service",
        "assignment_group": "sys_user_group",
        "assigned_to": "sys_user",
        "caller_id": "sys_user",
        "requested_by": "sys_user",
        "resolved_by": "sys_user",
    },
    "cmn_schedule_span": {"schedule": "cmn_schedule_blackout"},
    "cmdb_ci": {"support_group": "sys_user_group"},
    "cmdb_ci_service": {"support_group": "sys_user_group"},
    "sys_user_has_role": {"user": "sys_user", "role": "sys_user_role"},
}
# The display field of each referenced table (what sysparm_display_value shows for a reference).
DISPLAY_FIELD = {"sys_user": "name", "incident": "number", "change_request": "number"}
READ_ONLY = {
    "sys_id",
    "number",
    "sys_created_on",
    "sys_created_by",
    "sys_updated_on",
    "sys_updated_by",
    "sys_mod_count",
    "priority",
    "active",
}
INACTIVE = {"incident": {"6", "7", "8"}, "change_request": {"3", "4", "7"}}

# ServiceNow's default priority lookup: impact x urgency -> priority.
PRIORITY = {
    ("1", "1"): "1",
    ("1", "2"): "2",
    ("2", "1"): "2",
    ("1", "3"): "3",
    ("2", "2"): "3",
    ("3", "1"): "3",
    ("2", "3"): "4",
    ("3", "2"): "4",
    ("3", "3"): "5",
}


class FieldError(ValueError):
    """A field value the instance refuses."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


COLUMN_NAME = re.compile(r"[a-z][a-z0-9_]{0,79}")


class Store:
    """Thread-safe access to one SQLite file."""

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL survives a crash of the process (a power loss may lose the last
        # writes): right for a development ITSM, and no fsync per API call.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.lock = threading.Lock()
        self.extra: dict[str, list[str]] = {table: [] for table in TABLES}
        for table, spec in TABLES.items():
            cols = ", ".join(f"{c} TEXT NOT NULL DEFAULT ''" for c in spec["columns"])
            self.db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} ({cols}, seq INTEGER PRIMARY KEY AUTOINCREMENT)"
            )
            if "correlation_id" in spec["columns"]:
                self.db.execute(f"CREATE INDEX IF NOT EXISTS {table}_corr ON {table}(correlation_id)")
            self.db.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {table}_sys ON {table}(sys_id)")
        defined = self.db.execute("SELECT name, element FROM sys_dictionary").fetchall()
        if not defined:
            # The dictionary describes every column of every table, as an instance's does.
            for table, spec in TABLES.items():
                for column in spec["columns"]:
                    kind = "reference" if column in REFERENCES.get(table, {}) else "string"
                    self.insert("sys_dictionary", {"name": table, "element": column, "internal_type": kind})
        for table, element in defined:
            self._add_column(table, element)

    def _add_column(self, table: str, element: str) -> None:
        """A column defined in sys_dictionary that the table does not have yet (a custom field)."""
        if table in TABLES and element not in self.columns(table) and COLUMN_NAME.fullmatch(element):
            existing = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if element not in existing:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {element} TEXT NOT NULL DEFAULT ''")
            self.extra[table].append(element)

    def columns(self, table: str) -> list[str]:
        return [*TABLES[table]["columns"], *self.extra[table]]

    @staticmethod
    def is_task(table: str) -> bool:
        return "prefix" in TABLES[table]

    def display(self, table: str, sys_id: str) -> str:
        """The display value of a record (its display field), '' when there is no such record."""
        if table not in TABLES or not sys_id:
            return ""
        column = DISPLAY_FIELD.get(table, "name")
        found = self.db.execute(f"SELECT {column} FROM {table} WHERE sys_id = ?", (sys_id,)).fetchone()
        return str(found[0]) if found else ""

    def by_display(self, table: str, shown: str) -> str | None:
        """The sys_id of the record whose display value is `shown` (sysparm_input_display_value)."""
        return self.by_field(table, DISPLAY_FIELD.get(table, "name"), shown)

    def by_field(self, table: str, column: str, value: str) -> str | None:
        """The sys_id of the first record whose column (a checked name) holds value."""
        if column not in self.columns(table):
            return None
        found = self.db.execute(
            f"SELECT sys_id FROM {table} WHERE {column} = ? ORDER BY seq LIMIT 1", (value,)
        ).fetchone()
        return str(found[0]) if found else None

    def delete_where(self, table: str, column: str, value: str) -> None:
        if column in self.columns(table):
            with self.lock:
                self.db.execute(f"DELETE FROM {table} WHERE {column} = ?", (value,))

    def _derive(self, table: str, row: dict[str, str], actor: str, before: str = "") -> None:
        """Calculated fields: priority from impact and urgency, active from the state; an
        incident entering Resolved records when and by whom (resolved_at, resolved_by), one
        entering Closed when (closed_at), as the incident state model describes."""
        if not self.is_task(table):
            return
        row["priority"] = PRIORITY.get((row.get("impact") or "3", row.get("urgency") or "3"), "5")
        row["active"] = "false" if row.get("state") in INACTIVE[table] else "true"
        if table != "incident" or row.get("state") == before:
            return
        if row.get("state") == "6":
            row["resolved_at"] = _now()
            row["resolved_by"] = self.by_field("sys_user", "user_name", actor) or ""
        if row.get("state") == "7" and not row.get("closed_at"):
            row["closed_at"] = _now()

    def _clean(self, table: str, fields: dict[str, Any]) -> dict[str, str]:
        cols = set(self.columns(table))
        out: dict[str, str] = {}
        for name, value in fields.items():
            # Like ServiceNow, unknown and read-only fields are ignored rather than refused.
            if name not in cols or name in READ_ONLY:
                continue
            out[name] = "" if value is None else str(value)
        for name in ("impact", "urgency"):
            if name in out and out[name] not in ("1", "2", "3"):
                raise FieldError(f"{name} must be 1, 2 or 3, not {out[name]!r}")
        return out

    def insert(self, table: str, fields: dict[str, Any], actor: str = "system") -> dict[str, str]:
        if table == "sys_dictionary" and not COLUMN_NAME.fullmatch(str(fields.get("element", ""))):
            raise FieldError(f"element {fields.get('element')!r} is not a column name")
        row = {c: "" for c in self.columns(table)}
        row.update(self._clean(table, fields))
        spec = TABLES[table]
        mandatory = spec.get("required", "short_description")
        if not row[mandatory]:
            raise FieldError(f"{mandatory} is mandatory")
        with self.lock:
            seq = self.db.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {table}").fetchone()[0]
            now = _now()
            if not self.is_task(table):
                row.update(
                    {k: v for k, v in (("sys_id", uuid.uuid4().hex), ("sys_created_on", now),
                     ("sys_updated_on", now), ("sys_mod_count", "0")) if k in row}
                )  # fmt: skip
                names, marks = ", ".join(row), ", ".join("?" for _ in row)
                self.db.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(row.values()))
                if table == "sys_dictionary":
                    self._add_column(row["name"], row["element"])
                return row
            row.update(
                sys_id=uuid.uuid4().hex,
                number=f"{spec['prefix']}{spec['start'] + seq:07d}",
                sys_created_on=now,
                sys_updated_on=now,
                sys_mod_count="0",
                opened_at=row["opened_at"] or now,
                state=row["state"] or "1",
                impact=row["impact"] or "3",
                urgency=row["urgency"] or "3",
                sys_created_by=actor,
                sys_updated_by=actor,
            )
            self._derive(table, row, actor)
            names = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            self.db.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(row.values()))
        return row

    def get(self, table: str, sys_id: str) -> dict[str, str] | None:
        cur = self.db.execute(f"SELECT * FROM {table} WHERE sys_id = ?", (sys_id,))
        found = cur.fetchone()
        return _row(found) if found else None

    def update(
        self, table: str, sys_id: str, fields: dict[str, Any], actor: str = "system"
    ) -> dict[str, str] | None:
        changes = self._clean(table, fields)
        with self.lock:
            row = self.get(table, sys_id)
            if row is None:
                return None
            if "work_notes" in changes and row["work_notes"]:
                # Journal field: appended, newest first, as the UI shows it.
                changes["work_notes"] = changes["work_notes"] + "\n---\n" + row["work_notes"]
            before = row.get("state", "")
            row.update(changes)
            row["sys_updated_on"] = _now()
            if "sys_updated_by" in row:
                row["sys_updated_by"] = actor
            row["sys_mod_count"] = str(int(row["sys_mod_count"] or "0") + 1)
            self._derive(table, row, actor, before)
            sets = ", ".join(f"{k} = ?" for k in row if k != "sys_id")
            self.db.execute(
                f"UPDATE {table} SET {sets} WHERE sys_id = ?",
                [v for k, v in row.items() if k != "sys_id"] + [sys_id],
            )
        return row

    def query(
        self,
        table: str,
        queries: list[list[list[tuple[str, str, str]]]],
        order: list[tuple[str, bool]],
        limit: int,
        offset: int,
    ) -> tuple[list[dict[str, str]], int]:
        args: list[str] = []
        ors = []
        for groups in queries:
            ands = []
            for group in groups:
                ands.append("(" + " OR ".join(_condition(f, op, v, args) for f, op, v in group) + ")")
            ors.append("(" + " AND ".join(ands) + ")")
        where = [" OR ".join(ors)] if ors else []
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        order_sql = ", ".join(f"{f} {'DESC' if desc else 'ASC'}" for f, desc in order) or "seq ASC"
        if any(f == "sys_created_on" for f, _ in order):
            # Creation times have one-second resolution; seq breaks ties in creation order.
            order_sql += ", seq " + ("DESC" if dict(order)["sys_created_on"] else "ASC")
        total = self.db.execute(f"SELECT COUNT(*) FROM {table}{clause}", args).fetchone()[0]
        rows = self.db.execute(
            f"SELECT * FROM {table}{clause} ORDER BY {order_sql} LIMIT ? OFFSET ?", [*args, limit, offset]
        ).fetchall()
        return [_row(r) for r in rows], int(total)

    def close(self) -> None:
        self.db.close()


def _like(value: str) -> str:
    # A value's own % and _ are characters, not wildcards (ESCAPE '\\').
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _condition(field: str, op: str, value: str, args: list[str]) -> str:
    """One encoded-query term as SQL over a column (field is a checked column name)."""
    if op in ("IN", "NOT IN"):
        vals = value.split(",")
        args.extend(vals)
        return f"{field} {op} ({', '.join('?' for _ in vals)})"
    if op == "ISEMPTY":
        return f"({field} IS NULL OR {field} = '')"
    if op == "ISNOTEMPTY":
        return f"({field} IS NOT NULL AND {field} != '')"
    if op in ("LIKE", "NOT LIKE", "STARTSWITH", "ENDSWITH"):
        pattern = {"STARTSWITH": "{}%", "ENDSWITH": "%{}"}.get(op, "%{}%").format(_like(value))
        args.append(pattern)
        return f"{field} {'NOT LIKE' if op == 'NOT LIKE' else 'LIKE'} ? ESCAPE '\\'"
    args.append(value)
    return f"{field} {op} ?"


def _row(row: sqlite3.Row) -> dict[str, str]:
    out = dict(row)
    out.pop("seq", None)
    return out
