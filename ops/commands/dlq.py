"""itsmctl dlq: list, show, count and replay dead letters."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from typing import Any

from ops import runtime
from ops.dlq import BUCKETS
from streams.core.dlq import ErrorClass

SECTION = "operate"
SUMMARY = "list, show, count and replay dead letters"


def _topic(args: argparse.Namespace, settings: Any) -> str:
    return args.topic if args.topic.startswith(settings.topic_prefix) else settings.topic(args.topic)


def _filter(args: argparse.Namespace) -> Any:
    from ops.dlq import Filter

    now = datetime.now(UTC)
    since = runtime.when(args.since, "--since", now)
    until = runtime.when(args.until, "--until", now)
    return Filter(frozenset(args.error_class or ()), args.key, since, until)


def _selection_of(args: argparse.Namespace) -> tuple[Any, str, Any]:
    """Settings, the DLQ topic and the filter of show, stats and replay; the arguments' problems
    are reported before Kafka's."""
    flt = _filter(args)
    settings = runtime.settings(kafka=True)
    return settings, _topic(args, settings), flt


def list_dlqs(args: argparse.Namespace) -> int:
    from ops import dlq

    settings = runtime.settings(kafka=True)
    counts = {topic: dlq.count(settings, topic) for topic in dlq.dlq_topics(settings)}
    if args.output == "json":
        runtime.print_json([{"topic": t, "records": n} for t, n in counts.items()])
    else:
        for topic, n in counts.items():
            print(f"{topic:<48} {n:>8} record(s)")
    return runtime.EXIT_OK


def show(args: argparse.Namespace) -> int:
    from ops import dlq

    settings, topic, flt = _selection_of(args)
    shown: list[dict[str, Any]] = []
    for rec in dlq.dead_records(settings, topic):
        if len(shown) >= args.limit:
            break
        if not flt(rec):
            continue
        i = rec.info
        row = {
            "ref": rec.ref,
            "key": (rec.key or b"").decode("utf-8", "replace"),
            "error_class": i.get("dlq.error.class"),
            "stage": i.get("dlq.stage"),
            "attempts": i.get("dlq.attempts"),
            "first_failed_at": i.get("dlq.first_failed_at"),
            "from_topic": i.get("dlq.topic"),
            "from_partition": i.get("dlq.partition"),
            "from_offset": i.get("dlq.offset"),
            "bytes": len(rec.value or b""),
            "reason": i.get("dlq.exception.message", ""),
        }
        shown.append(row)
        if args.output == "text":
            print(
                f"{row['ref']}  key={row['key']!r}  class={row['error_class']}  stage={row['stage']}  "
                f"attempts={row['attempts']}  failed={row['first_failed_at']}  "
                f"from={row['from_topic']}[{row['from_partition']}]@{row['from_offset']}  "
                f"bytes={row['bytes']}"
            )
            print(f"    {row['reason']}")
    if args.output == "json":
        runtime.print_json(shown)
    return runtime.EXIT_OK


def stats(args: argparse.Namespace) -> int:
    from ops import dlq

    settings, topic, flt = _selection_of(args)
    records = [r for r in dlq.dead_records(settings, topic) if flt(r)]
    by_class, by_stage, by_time = dlq.stats(records, args.bucket)
    tables = {"error_class": by_class, "stage": by_stage, args.bucket: by_time}
    if args.output == "json":
        runtime.print_json(
            {"topic": topic, "records": len(records)}
            | {f"by_{name}": dict(sorted(counter.items())) for name, counter in tables.items()}
        )
        return runtime.EXIT_OK
    print(f"{topic}: {len(records)} dead letter(s)")
    for name, counter in tables.items():
        print(f"  by {name.replace('_', ' ')}:")
        for key, n in sorted(counter.items()):
            print(f"    {key:<28} {n:>8}")
    return runtime.EXIT_OK


def replay(args: argparse.Namespace) -> int:
    from ops import dlq

    settings, topic, flt = _selection_of(args)
    actor = args.actor or os.environ.get("USER") or "itsmctl"
    report = dlq.replay(
        settings,
        topic,
        flt,
        dry_run=args.dry_run,
        rate=args.rate,
        actor=actor,
        progress=None if args.dry_run or args.output == "json" else dlq.progress_printer(),
    )
    n = report.selected - report.skipped_already if args.dry_run else report.replayed
    if args.output == "json":
        runtime.print_json(
            {
                "topic": topic,
                "dry_run": args.dry_run,
                "selected": report.selected,
                "already_replayed": report.skipped_already,
                "replayed": 0 if args.dry_run else report.replayed,
                "would_replay": n if args.dry_run else 0,
            }
        )
        return runtime.EXIT_OK
    verb = "would replay" if args.dry_run else "replayed"
    print(
        f"{verb} {n} of {report.selected} selected dead letter(s) from {topic}; "
        f"{report.skipped_already} already replayed before"
    )
    return runtime.EXIT_OK


def _selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("topic", help="the DLQ topic, e.g. itsm.incident.commands.dlq (prefix optional)")
    p.add_argument(
        "--error-class",
        action="append",
        choices=[c.value for c in ErrorClass],
        help="only this error class (repeatable)",
    )
    p.add_argument("--key", help="only records with this key")
    p.add_argument(
        "--since", help="only records that first failed at or after: RFC 3339, or an age (30m, 2h, 7d)"
    )
    p.add_argument("--until", help="only records that first failed before: RFC 3339, or an age (30m, 2h, 7d)")


def register(sub: Any) -> None:
    group = runtime.command(
        sub,
        "dlq",
        SUMMARY,
        description="Dead letters keep the original record and dlq.* headers saying why. replay sends "
        "the selected ones back to the topic they failed on, in order, once each (a ledger on dlq.replays "
        "remembers what was replayed), and records an audit event.",
    )
    acts = runtime.actions(group)
    runtime.add_output(
        runtime.action(acts, "dlq", "list", "every DLQ topic and how many records it holds", list_dlqs)
    )
    p = runtime.action(acts, "dlq", "show", "dead letters with their reasons", show)
    _selection(p)
    p.add_argument("--limit", type=int, default=50, help="at most this many records")
    runtime.add_output(p)
    p = runtime.action(acts, "dlq", "stats", "counts by error class, stage and hour or day", stats)
    _selection(p)
    p.add_argument("--bucket", choices=list(BUCKETS), default="hour", help="time bucket")
    runtime.add_output(p)
    p = runtime.action(
        acts, "dlq", "replay", "send the selected dead letters back to the topic they failed on", replay
    )
    _selection(p)
    p.add_argument("--dry-run", action="store_true", help="say what would be replayed, send nothing")
    p.add_argument("--rate", type=float, default=50.0, help="records per second at most (0: no limit)")
    p.add_argument("--actor", help="who replays, for the audit event (default $USER)")
    runtime.add_output(p)
