"""itsmctl changes: sync change state from the ITSM, report change success per service."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from ops import runtime
from streams.core import telemetry
from streams.stages.changes.analytics import PERIODS

SECTION = "change management"
SUMMARY = "sync change state from the ITSM, or report change success per service"


def sync(args: argparse.Namespace) -> int:
    from confluent_kafka import Producer

    from connectors.sinks.http import SinkError
    from connectors.sources.changes.source import ChangeSync
    from streams.core.kafka import DeliveryError, producer_config, track

    settings = runtime.settings()
    runtime.configure_logging(settings)
    runtime.announce_kafka(settings, "changes-sync")
    telemetry.configure_tracing("itsm-changes-sync")
    client = runtime.servicenow_client(settings, "servicenow-changes")
    producer = track(Producer(producer_config(settings)))
    sync = ChangeSync(
        client, producer, runtime.serde(settings), settings, maintenance=not args.no_maintenance
    )
    try:
        if args.once:
            print(f"changes sync: {sync.run_once()} change(s) published")
            return runtime.EXIT_OK
        port = runtime.serve_metrics(settings.metrics_host, args.metrics_port, "--metrics-port")
        telemetry.get_logger("changes.sync").info(
            "changes_sync_started", metrics_port=port, interval=settings.changes_sync_interval_seconds
        )
        sync.run(runtime.stop_on_signals(), settings.changes_sync_interval_seconds)
        return runtime.EXIT_OK
    except (SinkError, DeliveryError) as exc:
        raise runtime.CommandError(str(exc)) from None
    finally:
        client.close()
        producer.flush(10)


def report(args: argparse.Namespace) -> int:
    from dataclasses import asdict
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from ops.dlq import read_all
    from streams.core.models import AuditEvent
    from streams.core.serde import SerdeError
    from streams.core.topics import AUDIT_EVENTS
    from streams.stages.changes.analytics import render, summarize

    try:
        zone = ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise runtime.CommandError(f"--tz: {exc}") from None
    since = runtime.when(args.since, "--since", datetime.now(UTC))
    assert since is not None
    settings = runtime.settings(kafka=True)
    serde = runtime.serde(settings)
    events, skipped = [], 0
    for msg in read_all(settings, settings.topic(AUDIT_EVENTS)):
        try:
            event = serde.decode(msg.value() or b"", AuditEvent)
        except SerdeError:
            skipped += 1
            continue
        if event.occurred_at >= since and (not args.service or event.details.get("service") == args.service):
            events.append(event)
    rows = summarize(events, args.period, zone)
    if skipped:
        print(f"({skipped} undecodable audit record(s) skipped)", file=sys.stderr)
    if args.output == "json":
        out = []
        for r in rows:
            row = {k: v for k, v in asdict(r).items() if not k.startswith("_") and k != "durations_ms"}
            row |= {
                "deploys": r.deploys,
                "success_rate": r.success_rate,
                "mean_duration_s": r.mean_duration_s,
                "causes": dict(r.causes.most_common()),
                "change_failure_rate": r.change_failure_rate,
                "mean_time_to_restore_s": r.mean_time_to_restore_s,
            }
            out.append(row)
        runtime.print_json(
            {"period": args.period, "since": since, "time_zone": args.tz, "rows": out, "skipped": skipped}
        )
        return runtime.EXIT_OK
    print(
        f"Change success per service and {args.period} "
        f"since {since.isoformat(timespec='seconds')} ({args.tz}),"
        " from linked deployment outcomes and the incidents they caused, in audit.events:"
    )
    print(render(rows) if rows else "(no deployments in this period)")
    return runtime.EXIT_OK


def register(sub: Any) -> None:
    group = runtime.command(
        sub,
        "changes",
        SUMMARY,
        description="sync: read change requests the ITSM changed (state, approval, window) onto "
        "itsm.changes, and approved changes' windows onto maintenance.windows. report: success rate, "
        "failure causes and mean deploy duration per service and period, from linked deployment outcomes; "
        "the change failure rate (CFR: deployments an incident named as its probable cause) and the "
        "mean time to restore (MTTR) of those incidents.",
    )
    acts = runtime.actions(group)
    p = runtime.action(acts, "changes", "sync", "read changed change requests from the ITSM", sync)
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--no-maintenance", action="store_true", help="do not open maintenance windows")
    p.add_argument("--metrics-port", type=int, default=9466, help="/metrics port (0: any free)")
    p = runtime.action(acts, "changes", "report", "change success per service and period", report)
    p.add_argument("--period", choices=PERIODS, default="week", help="period")
    p.add_argument("--since", default="30d", help="RFC 3339, or an age (30m, 12h, 30d, 4w)")
    p.add_argument("--tz", default="UTC", help="time zone the periods are counted in")
    p.add_argument("--service", help="only this service")
    runtime.add_output(p)
