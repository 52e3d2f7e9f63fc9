"""Reference fields bound to the referenced record's sys_id before a write.

The Table API stores a reference field's value as given (a sys_id), so a name written there is a
dangling reference; with sysparm_input_display_value=true it would be taken as a display value,
which is not unique for CIs. The sink therefore looks each name up in the referenced table (by
its name, or a configurable field for CIs), caches the sys_id with a TTL (and a miss for a shorter
one), and writes the sys_id. A name with no record is left out of the reference field, kept in the
description, and counted: an incident is never refused for an unknown CI, group or user.

A person's field (a change's `requested_by`) goes through the identity mapping first
(connectors/identities.py): the identities file, then `sys_user` by `user_name` or `email`, else
the integration user stands in and the original identity is kept in the description.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.identities import IDENTITIES, IdentitiesFile
from connectors.sinks.http import SinkError
from connectors.sinks.servicenow.values import value
from streams.core import telemetry

BINDINGS = telemetry.Counter(
    "itsm_pipeline_reference_binding_total",
    "Reference fields the ServiceNow sink bound to a sys_id, by field and outcome "
    "(bound: looked up; cached: from the cache; unresolved: no such record; refused: the lookup "
    "was refused, e.g. no read on the referenced table; from_ci: the assignment group taken from "
    "the CI's support group, the command having none).",
    ["field", "outcome"],
)
log = telemetry.get_logger("servicenow.references")


@dataclass(frozen=True)
class Reference:
    """A reference field, the table it points at, the column the pipeline's name is in, and a
    field of the referenced record to read along (a CI's support group)."""

    field: str
    table: str
    lookup: str = "name"
    extra: str = ""
    also: str = ""  # a second column the name may be in (a user's email)
    person: bool = False  # an identity: mapped, looked up, else the integration user


def references(ci_lookup_field: str = "name") -> dict[str, Reference]:
    """The reference fields the sink writes (incident and change_request share them)."""
    return {
        r.field: r
        for r in (
            Reference("cmdb_ci", "cmdb_ci", ci_lookup_field, extra="support_group"),
            Reference("business_service", "cmdb_ci_service"),
            Reference("assignment_group", "sys_user_group"),
            Reference("caller_id", "sys_user", "user_name"),
            Reference("requested_by", "sys_user", "user_name", also="email", person=True),
            # An incident's probable cause (streams/stages/alerts/causes.py): the change, by number.
            Reference("caused_by", "change_request", "number"),
        )
    }


class ReferenceBinder:
    """Names to sys_ids through `lookup(table, query)` (one page of rows), with a TTL cache."""

    def __init__(
        self,
        lookup: Callable[[str, dict[str, str]], list[dict[str, Any]]],
        refs: dict[str, Reference],
        ttl: float = 600.0,
        miss_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        identities: IdentitiesFile | None = None,
        integration_user: str = "",
        target: str = "servicenow",
    ) -> None:
        self.lookup = lookup
        self.refs = refs
        self.identities = identities or IdentitiesFile(None)
        self.integration_user = integration_user
        self.target = target
        self.ttl = ttl
        self.miss_ttl = miss_ttl
        self.clock = clock
        # (table, lookup column, name) -> (sys_id or None, the extra field's value, expiry)
        self.cache: dict[tuple[str, str, str], tuple[str | None, str, float]] = {}

    def _sys_id(self, ref: Reference, name: str) -> tuple[str | None, str, str]:
        """(sys_id or None, the record's extra field, outcome)."""
        key = (ref.table, f"{ref.lookup}|{ref.also}", name)
        now = self.clock()
        hit = self.cache.get(key)
        if hit is not None and hit[2] > now:
            return hit[0], hit[1], "cached" if hit[0] else "unresolved"
        if "^" in name or "\n" in name:
            return None, "", "unresolved"  # not expressible in an encoded query
        try:
            rows = self.lookup(
                ref.table,
                {
                    "sysparm_query": f"{ref.lookup}={name}" + (f"^OR{ref.also}={name}" if ref.also else ""),
                    "sysparm_fields": ",".join(["sys_id", *([ref.extra] if ref.extra else [])]),
                    "sysparm_limit": "1",
                    "sysparm_exclude_reference_link": "true",
                },
            )
        except SinkError as exc:
            if exc.retryable:
                raise  # the command is retried as a whole
            log.warning("reference_lookup_refused", table=ref.table, status=exc.status, error=str(exc)[:200])
            return None, "", "refused"
        found = value(rows[0].get("sys_id")) if rows else ""
        extra = value(rows[0].get(ref.extra)) if rows and ref.extra else ""
        self.cache[key] = (found or None, extra, now + (self.ttl if found else self.miss_ttl))
        return found or None, extra, "bound" if found else "unresolved"

    def bind(self, fields: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The fields with each reference bound to a sys_id, and a line for each name left unbound."""
        out = dict(fields)
        unbound: list[str] = []
        for name, ref in self.refs.items():
            given = fields.get(name)
            if given in (None, ""):
                continue
            if ref.person:
                note = self._person(out, name, ref, str(given))
                if note:
                    unbound.append(note)
                continue
            sys_id, extra, outcome = self._sys_id(ref, str(given))
            BINDINGS.labels(name, outcome).inc()
            if sys_id:
                out[name] = sys_id
                if ref.extra == "support_group" and extra and not fields.get("assignment_group"):
                    # No owner group in the command: the group supporting the CI in the CMDB.
                    out["assignment_group"] = extra
                    BINDINGS.labels("assignment_group", "from_ci").inc()
            else:
                del out[name]
                why = "could not be looked up" if outcome == "refused" else "has no record"
                unbound.append(f"{name}: {given} ({ref.table} where {ref.lookup}={given} {why})")
        return out, unbound

    def _person(self, out: dict[str, Any], name: str, ref: Reference, given: str) -> str | None:
        """Bind an identity: the table's user, else the ITSM's own, else the integration user (and
        a line for the description naming the original)."""
        table = self.identities.get()
        mapped = table.mapped(self.target, given)
        sys_id, _, outcome = self._sys_id(ref, mapped or given)
        BINDINGS.labels(name, outcome).inc()
        if sys_id:
            out[name] = sys_id
            IDENTITIES.labels(self.target, name, "mapped" if mapped else "found").inc()
            return None
        IDENTITIES.labels(self.target, name, "unmapped").inc()
        stand_in = table.integration(self.target, self.integration_user)
        tried = f"{given} as {mapped}" if mapped else given
        fallback, _, _ = self._sys_id(ref, stand_in) if stand_in else (None, "", "unresolved")
        if fallback:
            out[name] = fallback
            return f"{name}: {tried} (no {ref.table} user; recorded as {stand_in})"
        del out[name]
        return f"{name}: {tried} (no {ref.table} user, nor the integration user {stand_in or '(none)'})"


def with_unbound(fields: dict[str, Any], unbound: list[str]) -> dict[str, Any]:
    """The names no record was found for, kept in the description."""
    if not unbound:
        return fields
    note = "Not linked in the ITSM (no matching record):\n" + "\n".join(f"- {u}" for u in unbound)
    description = str(fields.get("description") or "")
    return {**fields, "description": f"{description}\n\n{note}" if description else note}
