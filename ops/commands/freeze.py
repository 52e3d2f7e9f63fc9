"""itsmctl freeze import: change freezes (an iCalendar file, or ServiceNow blackout schedules)
onto maintenance.windows."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connectors.sources.freeze.mapping import HORIZON
from ops import runtime
from streams.core.models import WindowScope

SECTION = "change management"
SUMMARY = "import change freezes (iCalendar, ServiceNow blackouts) onto maintenance.windows"


def _blackouts(
    settings: Any, source: str, now: datetime, scope: WindowScope, target: str, zone: str | None
) -> Any:
    from connectors.sources.freeze.servicenow import blackout_windows, read_blackouts

    client = runtime.servicenow_client(settings, "servicenow-blackouts")
    try:
        schedules, spans = read_blackouts(client)
    finally:
        client.close()
    return blackout_windows(schedules, spans, source, now, scope, target, zone)


def import_(args: argparse.Namespace) -> int:
    from confluent_kafka import Producer

    from connectors.sinks.http import SinkError
    from connectors.sources.freeze.mapping import CalendarError, freeze_windows
    from connectors.sources.freeze.source import plan
    from streams.core.kafka import DeliveryError, producer_config, publish_batch
    from streams.core.messages import encoded
    from streams.core.topics import MAINTENANCE_WINDOWS

    if (args.file is None) == (args.from_itsm is None):
        raise runtime.CommandError("give a calendar FILE or --from servicenow (one of them)")
    settings = runtime.settings()
    serde = runtime.serde(settings)
    now = datetime.now(UTC)
    scope, target = WindowScope(args.scope), args.target or ""
    source = args.source or (Path(args.file).stem if args.file else "servicenow-blackouts")
    try:
        if args.file:
            text = Path(args.file).read_text(encoding="utf-8")
            horizon = timedelta(days=args.horizon_days)
            windows = freeze_windows(text, source, now, scope, target, args.timezone, horizon)
        else:
            windows = _blackouts(settings, source, now, scope, target, args.timezone)
    except OSError as exc:
        raise runtime.CommandError(f"cannot read {args.file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise runtime.CommandError(f"cannot read {args.file}: not UTF-8 text") from None
    except CalendarError as exc:
        raise runtime.CommandError(f"{args.file or args.from_itsm}: {exc}") from None
    except (SinkError, ValueError) as exc:
        raise runtime.CommandError(f"cannot read blackout schedules: {exc}") from None
    runtime.reachable(settings)  # the calendar is read first: its problems are named before Kafka's
    views = runtime.start_views(settings, serde, "windows")
    current = views["windows"].windows()
    views.stop()
    steps = plan(windows, current, source, now)
    topic = settings.topic(MAINTENANCE_WINDOWS)
    out = [encoded(serde, topic, s.window.window_id, s.window) for s in steps if s.action != "unchanged"]
    if args.output == "text":
        for step in steps:
            w = step.window
            print(
                f"{step.action:<10} {w.window_id:<40} {w.scope.value}:{w.target or '*'} "
                f"{w.starts_at.isoformat()} .. {w.ends_at.isoformat()}  {w.reason}"
            )
    if not args.dry_run:
        try:
            publish_batch(Producer(producer_config(settings)), out)
        except DeliveryError as exc:
            raise runtime.CommandError(str(exc)) from None
    if args.output == "json":
        runtime.print_json(
            {
                "source": source,
                "dry_run": args.dry_run,
                "published": 0 if args.dry_run else len(out),
                "unchanged": len(steps) - len(out),
                "steps": [
                    {
                        "action": s.action,
                        "window_id": s.window.window_id,
                        "scope": s.window.scope,
                        "target": s.window.target,
                        "starts_at": s.window.starts_at,
                        "ends_at": s.window.ends_at,
                        "reason": s.window.reason,
                    }
                    for s in steps
                ],
            }
        )
    elif args.dry_run:
        print(f"dry run: {len(out)} window(s) would be published")
    else:
        print(
            f"freeze import from {source}: {len(out)} window(s) published, {len(steps) - len(out)} unchanged"
        )
    return runtime.EXIT_OK


def register(sub: Any) -> None:
    group = runtime.command(
        sub,
        "freeze",
        SUMMARY,
        description="Each VEVENT (or blackout schedule entry, with --from servicenow) becomes a FREEZE "
        "window. Re-importing the same source updates its windows and cancels the ones no longer in the "
        "file. Scope per event with X-ITSM-SCOPE:SERVICE:checkout, or for the whole file with "
        "--scope/--target.",
    )
    acts = runtime.actions(group)
    p = runtime.action(acts, "freeze", "import", "import a freeze calendar onto maintenance.windows", import_)
    p.add_argument("file", nargs="?", help="the .ics file (or --from servicenow)")
    p.add_argument(
        "--from",
        dest="from_itsm",
        choices=["servicenow"],
        help="read the ITSM's change blackout schedules (cmn_schedule_blackout) instead of a file",
    )
    p.add_argument("--source", help="name of this calendar (default: the file name)")
    p.add_argument("--scope", default=WindowScope.GLOBAL.value, choices=[s.value for s in WindowScope])
    p.add_argument("--target", help="the environment, service or CI of --scope")
    p.add_argument("--timezone", help="zone of floating times and all-day dates (e.g. Europe/Berlin)")
    p.add_argument(
        "--horizon-days",
        type=runtime.int_between(1, 3650),
        default=HORIZON.days,
        metavar="DAYS",
        help=f"expand recurrences other than plain weekly ones this far ahead (default {HORIZON.days}; "
        "re-import to extend)",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would change, publish nothing")
    runtime.add_output(p)
