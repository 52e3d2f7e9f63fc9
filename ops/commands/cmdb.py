"""itsmctl cmdb show: a CI as the pipeline's CMDB (cmdb.ci) holds it, with each field's source and age."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from ops import runtime

SECTION = "change management"
SUMMARY = "show a CI from cmdb.ci with the source and age of each field"


def _age(seconds: float) -> str:
    """3d 4h, 2h 5m, 40s: the two largest units."""
    seconds = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def latest(settings: Any, ci_id: str) -> Any:
    """The newest cmdb.ci record keyed ci_id (a retired CI too), or None."""
    from ops.dlq import read_all
    from streams.core.models import ConfigurationItem
    from streams.core.serde import SerdeError
    from streams.core.topics import CMDB_CI

    serde = runtime.serde(settings)
    found = None
    key = ci_id.encode()
    for msg in read_all(settings, settings.topic(CMDB_CI)):
        if msg.key() != key:
            continue
        if msg.value() is None:
            found = None  # a tombstone
            continue
        try:
            found = serde.decode(msg.value() or b"", ConfigurationItem)
        except SerdeError as exc:
            print(f"(record at offset {msg.offset()} skipped: {exc})", file=sys.stderr)
    return found


def show(args: argparse.Namespace) -> int:
    from streams.stages.changes.validation import field_values

    settings = runtime.settings(kafka=True)
    ci = latest(settings, args.ci)
    if ci is None:
        print(
            f"cmdb show: no CI {args.ci!r} in {settings.topic('cmdb.ci')} (ids are case-sensitive; "
            "was it accepted? see itsmctl dlq list cmdb.ci.updates.dlq)",
            file=sys.stderr,
        )
        return runtime.EXIT_PROBLEMS
    now = datetime.now(UTC)
    values = field_values(ci)
    rows: list[dict[str, Any]] = []
    for path in sorted(values):
        held = ci.provenance.get(path)
        rows.append(
            {
                "field": path,
                "value": values[path],
                "source": held.source if held else None,
                "reported_at": held.at if held else None,
                "age_seconds": round((now - held.at).total_seconds()) if held else None,
            }
        )
    if args.output == "json":
        runtime.print_json(
            {
                "ci_id": ci.ci_id,
                "ci_class": ci.ci_class,
                "deleted": ci.deleted,
                "source_system": ci.source_system,
                "updated_at": ci.updated_at,
                "fields": rows,
            }
        )
        return runtime.EXIT_OK
    state = " (retired)" if ci.deleted else ""
    print(
        f"{ci.ci_id}{state}: {ci.name}, class {ci.ci_class}; this version from {ci.source_system}, "
        f"{ci.updated_at.isoformat(timespec='seconds')}"
    )
    wide = {k: max([len(k)] + [len(str(r[k] or "")) for r in rows]) for k in ("field", "value", "source")}
    wide["value"] = min(wide["value"], 48)
    print(f"{'FIELD':<{wide['field']}}  {'VALUE':<{wide['value']}}  {'SOURCE':<{wide['source']}}  AGE")
    for r in rows:
        value = str(r["value"])
        value = value if len(value) <= 48 else value[:45] + "..."
        age = (
            f"{_age(r['age_seconds'])} ({r['reported_at'].isoformat(timespec='seconds')})"
            if r["source"]
            else "-"
        )
        source = r["source"] or "-"
        print(f"{r['field']:<{wide['field']}}  {value:<{wide['value']}}  {source:<{wide['source']}}  {age}")
    if not ci.provenance:
        print("(no field provenance: this version was written before reconciliation rules kept it)")
    return runtime.EXIT_OK


def register(sub: Any) -> None:
    group = runtime.command(
        sub,
        "cmdb",
        SUMMARY,
        description="show: the newest version of a CI in cmdb.ci and, per field, the source whose value "
        "it holds and how long ago that source last reported it. Which source wins a field is decided "
        "by the [[reconcile]] rules of ops/rules/changes.toml.",
    )
    acts = runtime.actions(group)
    p = runtime.action(
        acts,
        "cmdb",
        "show",
        "a CI with the source and age of each field",
        show,
        description="The newest version of CI in cmdb.ci, each field with the source that set it and "
        "its age (provenance kept by the reconciliation rules).\n\n  itsmctl cmdb show web-1\n"
        "  itsmctl cmdb show web-1 -o json",
    )
    p.add_argument("ci", metavar="CI", help="the CI's id (ConfigurationItem.ci_id)")
    runtime.add_output(p)
