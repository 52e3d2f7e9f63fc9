"""itsmctl incidents: incident state back from the ITSMs, and time to restore."""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import UTC, datetime
from typing import Any

from connectors.registry import INCIDENT_TARGETS
from ops import runtime
from streams.core import telemetry

SECTION = "incident management"
SUMMARY = "sync incident state back from the ITSMs, or report time to restore"


def sync(args: argparse.Namespace) -> int:
    from confluent_kafka import Producer

    from connectors.registry import incident_reader
    from connectors.sinks.http import SinkError
    from connectors.sources.incidents.sync import IncidentSync
    from streams.core.kafka import DeliveryError, producer_config, track

    settings = runtime.settings(kafka=True)
    runtime.configure_logging(settings)
    runtime.announce_kafka(settings, "incidents-sync")
    telemetry.configure_tracing("itsm-incidents-sync")
    targets = args.target or ["servicenow"]
    readers = []
    try:
        for target in dict.fromkeys(targets):
            readers.append(incident_reader(target, settings, runtime.retry_policy(settings)))
    except ValueError as exc:
        for reader in readers:
            reader.close()
        raise runtime.CommandError(str(exc)) from None
    producer = track(Producer(producer_config(settings)))
    sync = IncidentSync(readers, producer, runtime.serde(settings), settings)
    log = telemetry.get_logger("incidents.sync")
    try:
        try:
            known = sync.load(settings.view_ready_timeout_seconds)
        except RuntimeError as exc:
            raise runtime.CommandError(f"{exc}; {runtime.kafka_hint(settings)}") from None
        log.info(
            "incidents_known",
            incidents=known,
            watermarks={t: w.isoformat() for t, w in sync.watermarks.items()},
        )
        if args.once:
            print(f"incidents sync: {sync.run_once()} incident(s) published ({known} known before)")
            return runtime.EXIT_OK
        port = runtime.serve_metrics(settings.metrics_host, args.metrics_port, "--metrics-port")
        log.info(
            "incidents_sync_started",
            metrics_port=port,
            targets=targets,
            interval=settings.incidents_sync_interval_seconds,
        )
        sync.run(runtime.stop_on_signals(), settings.incidents_sync_interval_seconds)
        return runtime.EXIT_OK
    except (SinkError, DeliveryError) as exc:
        raise runtime.CommandError(str(exc)) from None
    finally:
        sync.close()
        producer.flush(10)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(args: argparse.Namespace) -> int:
    from ops.dlq import read_all
    from streams.core.models import IncidentRecord
    from streams.core.serde import SerdeError
    from streams.core.topics import ITSM_INCIDENTS

    since = runtime.when(args.since, "--since", datetime.now(UTC))
    assert since is not None
    settings = runtime.settings(kafka=True)
    serde = runtime.serde(settings)
    latest: dict[str, IncidentRecord] = {}
    skipped = 0
    for msg in read_all(settings, settings.topic(ITSM_INCIDENTS)):
        if msg.value() is None:
            continue
        try:
            record = serde.decode(msg.value() or b"", IncidentRecord)
        except SerdeError:
            skipped += 1
            continue
        latest[record.key] = record
    rows: dict[tuple[str, str], list[float]] = {}
    open_now: dict[str, int] = {}
    for r in latest.values():
        if args.target and r.target != args.target:
            continue
        if r.time_to_restore_seconds is None:
            if r.status.value == "OPEN":
                open_now[r.target] = open_now.get(r.target, 0) + 1
            continue
        end = r.resolved_at or r.closed_at
        if end is None or end < since:
            continue
        by = "pipeline" if r.resolved_by_pipeline else ("person" if r.resolved_by else "unknown")
        rows.setdefault((r.target, by), []).append(r.time_to_restore_seconds)
    table: list[dict[str, Any]] = [
        {
            "target": target,
            "resolved_by": by,
            "incidents": len(v),
            "mean_s": statistics.fmean(v),
            "p50_s": _percentile(v, 0.5),
            "p90_s": _percentile(v, 0.9),
            "max_s": max(v),
        }
        for (target, by), v in sorted(rows.items())
    ]
    if skipped:
        print(f"({skipped} undecodable incident record(s) skipped)", file=sys.stderr)
    if args.output == "json":
        runtime.print_json({"since": since, "rows": table, "open": open_now, "skipped": skipped})
        return runtime.EXIT_OK
    when = since.isoformat(timespec="seconds")
    print(f"Time to restore (opened -> resolved) of incidents resolved since {when}:")
    if not table:
        print("(no resolved incidents in this period)")
    else:
        heads = " ".join(f"{h:>9}" for h in ("INCIDENTS", "MEAN", "P50", "P90", "MAX"))
        print(f"  {'TARGET':<11} {'RESOLVED BY':<12} {heads}")
        for row in table:
            print(
                f"  {row['target']:<11} {row['resolved_by']:<12} {row['incidents']:>9} "
                + " ".join(f"{_human(row[k]):>9}" for k in ("mean_s", "p50_s", "p90_s", "max_s"))
            )
    for target, n in sorted(open_now.items()):
        print(f"  {target}: {n} incident(s) open now")
    return runtime.EXIT_OK


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def register(sub: Any) -> None:
    group = runtime.command(
        sub,
        "incidents",
        SUMMARY,
        description="sync: read the incidents the pipeline opened, as the ITSMs have them now (state, "
        "assignment, who resolved them and when), onto the compacted itsm.incidents; the worker follows it "
        "(an incident a person resolved while its alert fires, a person's assignment or priority). "
        "report: time to restore per target and resolver, from itsm.incidents.",
    )
    acts = runtime.actions(group)
    p = runtime.action(acts, "incidents", "sync", "read changed incidents back from the ITSMs", sync)
    p.add_argument(
        "--target",
        action="append",
        choices=INCIDENT_TARGETS,
        help="an ITSM to read (repeatable; default servicenow), configured as for `itsmctl sink`",
    )
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--metrics-port", type=int, default=9467, help="/metrics port (0: any free)")
    p = runtime.action(acts, "incidents", "report", "time to restore per target and resolver", report)
    p.add_argument("--since", default="30d", help="RFC 3339, or an age (30m, 12h, 30d, 4w)")
    p.add_argument("--target", choices=INCIDENT_TARGETS, help="only this ITSM")
    runtime.add_output(p)
