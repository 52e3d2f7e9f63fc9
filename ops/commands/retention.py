"""itsmctl retention report: what is kept where, for how long and why; personal data past its period."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from ops import runtime

SECTION = "operate"
SUMMARY = "what the pipeline keeps where, for how long and why (retention report)"


def report(args: argparse.Namespace) -> int:
    from ops.retention import report as build
    from ops.retention import short

    settings = runtime.settings()
    found = build(settings, runtime.serde(settings, strict=False).store, datetime.now(UTC))
    if args.output == "json":
        runtime.print_json(
            {
                "personal_data_days": settings.personal_data_days,
                "field_keys": found.keys,
                "kept": [asdict(k) for k in found.entries],
                "findings": found.findings,
            }
        )
    else:
        print(
            "Personal data = the schemas' sensitive fields; declared period "
            f"{settings.personal_data_days} days (ITSM_PERSONAL_DATA_DAYS); field keys: "
            f"{found.keys['file'] or 'none (kept in clear)'}"
        )
        for k in found.entries:
            personal = f"; personal: {', '.join(short(k.personal))}" if k.personal else ""
            print(f"- {k.what} ({k.where}): {k.kept}{personal}\n    {k.why}")
        for f in found.findings:
            print(f"finding: {f}")
        if not found.findings:
            print("no personal data outlives its declared period")
    return runtime.EXIT_PROBLEMS if found.findings else runtime.EXIT_OK


def register(sub: Any) -> None:
    group = runtime.command(
        sub,
        "retention",
        SUMMARY,
        description="report: every topic (with its retention, the personal data its records carry and "
        "why it is kept), the worker's state, logs, cursors and archives; and every place where "
        "personal data stays readable longer than ITSM_PERSONAL_DATA_DAYS (kept in clear on a topic "
        "kept longer, or sealed under a field key older than the period). Exit 1 when there is any.",
    )
    acts = runtime.actions(group)
    p = runtime.action(
        acts, "retention", "report", "what is kept where, for how long and why; exit 1 on findings", report
    )
    runtime.add_output(p)
