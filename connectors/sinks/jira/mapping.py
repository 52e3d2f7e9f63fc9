"""Pure mapping of commands to Jira Service Management request fields and comments."""

from __future__ import annotations

import hashlib
from typing import Any

from streams.core.models import ChangeCommand, IncidentCommand

LABEL_PREFIX = "itsmp-"
# Every request the pipeline opens also carries the label of its kind (incident sync and the
# preflight find them by it).
INCIDENT_LABEL = "itsm-pipeline-incident"
CHANGE_LABEL = "itsm-pipeline-change"
CORRELATION_LINE = "Correlation id: "


def correlation_label(correlation_id: str) -> str:
    """A label that identifies the request of a correlation id (labels allow no spaces, so a hash)."""
    return LABEL_PREFIX + hashlib.sha256(correlation_id.encode()).hexdigest()[:24]


def request_fields(cmd: IncidentCommand | ChangeCommand) -> dict[str, Any]:
    # An incident's template for Jira (templates.toml), when it has one, gives title and body.
    own = cmd.target_fields.get("jira", {}) if isinstance(cmd, IncidentCommand) else {}
    title = own.get("short_description") or cmd.short_description
    lines = [
        own.get("description") or cmd.description or title,
        "",
        f"{CORRELATION_LINE}{cmd.correlation_id}",
    ]
    if isinstance(cmd, IncidentCommand):
        if cmd.ci_id:
            lines.append(f"CI: {cmd.ci_id}")
        if cmd.impact and cmd.urgency:
            lines.append(f"Impact {cmd.impact}, urgency {cmd.urgency}")
    else:
        lines.append(f"Change type: {cmd.change_type.value.lower()}")
        if cmd.ci_ids:
            lines.append(f"CIs: {', '.join(cmd.ci_ids)}")
    return {
        "summary": title[:255],
        "description": "\n".join(lines),
        "labels": [
            correlation_label(cmd.correlation_id),
            INCIDENT_LABEL if isinstance(cmd, IncidentCommand) else CHANGE_LABEL,
        ],
    }


def change_comment(cmd: ChangeCommand) -> str:
    parts = [cmd.description or "Change updated by the pipeline."]
    if cmd.commit_ids:
        parts.append(f"Commits: {', '.join(cmd.commit_ids)}")
    if cmd.build_number:
        parts.append(f"Build: {cmd.build_number}")
    if cmd.deploy_duration_ms is not None:
        parts.append(f"Deploy duration: {cmd.deploy_duration_ms / 1000:.0f} s")
    if cmd.close_code:
        parts.append(f"Outcome: {cmd.close_code.value.lower()}")
    return "\n".join(parts)
