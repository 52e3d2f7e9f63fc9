"""Pure mapping of commands to RT REST 2 bodies, TicketSQL and comments."""

from __future__ import annotations

from typing import Any

from streams.core.models import ChangeCommand, CloseCode, IncidentCommand

INACTIVE = frozenset({"resolved", "rejected", "deleted"})


def ticket_query(queue: str | None, correlation_field: str, correlation_id: str) -> str:
    """TicketSQL finding the tickets of a correlation id, in one queue or (None) in every queue the
    sink's account may see; ValueError if it cannot be quoted safely."""
    if "'" in correlation_id or "\\" in correlation_id:
        raise ValueError(f"correlation id {correlation_id!r} cannot be quoted in TicketSQL")
    found = f"'CF.{{{correlation_field}}}'='{correlation_id}'"
    return f"Queue='{queue}' AND {found}" if queue else found


def ticket_body(
    queue: str, cmd: IncidentCommand | ChangeCommand, correlation_field: str, ci_field: str
) -> dict[str, Any]:
    """POST /ticket body: subject, text content, and the correlation id and CI custom fields."""
    ci = cmd.ci_id if isinstance(cmd, IncidentCommand) else (cmd.ci_ids[0] if cmd.ci_ids else None)
    fields = {correlation_field: cmd.correlation_id}
    if ci:
        fields[ci_field] = ci
    # An incident's template for RT (templates.toml), when it has one, gives subject and content.
    own = cmd.target_fields.get("rt", {}) if isinstance(cmd, IncidentCommand) else {}
    subject = own.get("short_description") or cmd.short_description
    return {
        "Queue": queue,
        "Subject": subject,
        "Content": own.get("description") or cmd.description or subject,
        "ContentType": "text/plain",
        "CustomFields": fields,
    }


def change_note(cmd: ChangeCommand) -> str:
    details = [
        f"Commits: {', '.join(cmd.commit_ids)}" if cmd.commit_ids else "",
        f"Build: {cmd.build_number}" if cmd.build_number else "",
        f"Deploy duration: {cmd.deploy_duration_ms / 1000:.0f} s" if cmd.deploy_duration_ms else "",
    ]
    return "\n".join(x for x in [cmd.description, *details] if x) or "Change updated by the pipeline."


def close_status(cmd: ChangeCommand) -> str:
    """RT status that closes a change: rejected when it failed, resolved otherwise."""
    return "rejected" if cmd.close_code is CloseCode.UNSUCCESSFUL else "resolved"
