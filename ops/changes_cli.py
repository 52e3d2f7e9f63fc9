"""itsmctl commands of change management: the gate (serve, check, token), change sync and
report, freeze import, and deploy events for pipelines without an Avro producer."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streams.core import telemetry
from streams.core.settings import Settings

GATE_EPILOG = """exit codes: 0 allowed, 1 denied (or no approval before --timeout), 2 error (gate
unreachable, token refused, bad request). The token comes from ITSM_GATE_TOKEN or, better,
ITSM_GATE_TOKEN_FILE; never from the command line."""


def _settings() -> Settings:
    from ops.cli import _settings as settings

    return settings()


def _serde(settings: Settings) -> Any:
    from ops.cli import _serde as serde

    return serde(settings)


def _views(settings: Settings, serde: Any, *wanted: str) -> dict[str, Any]:
    """The global views this process needs, started and caught up."""
    from streams.core.follower import TopicFollower
    from streams.core.topics import CMDB_CI, GATE_REQUESTS, ITSM_CHANGES, MAINTENANCE_WINDOWS
    from streams.processors.indexes import ChangeIndex, CMDBTopicIndex, GateRequestIndex, WindowIndex

    makers: dict[str, tuple[str, Any]] = {
        "cmdb": (CMDB_CI, CMDBTopicIndex),
        "windows": (MAINTENANCE_WINDOWS, WindowIndex),
        "changes": (ITSM_CHANGES, ChangeIndex),
        "requests": (GATE_REQUESTS, GateRequestIndex),
    }
    out: dict[str, Any] = {"_followers": []}
    for name in wanted:
        base, cls = makers[name]
        view = cls(serde, settings.topic(base))
        follower = TopicFollower(settings, settings.topic(base), view.apply).start()
        out[name] = view
        out["_followers"].append(follower)
    for follower in out["_followers"]:
        follower.wait_ready(settings.view_ready_timeout_seconds)
    return out


# --- gate --------------------------------------------------------------------------------------


def cmd_gate(args: argparse.Namespace) -> int:
    return {"serve": _gate_serve, "check": _gate_check, "token": _gate_token}[args.action](args)


def _gate_serve(_: argparse.Namespace) -> int:
    from aiohttp import web

    from connectors.gate.callers import CallersError, CallersFile
    from connectors.gate.server import GATE_PRODUCER, create_gate
    from ops.cli import _rules
    from streams.core.kafka import AckedProducer
    from streams.stages.changes.gate import ChangeGate, GatePolicy
    from streams.stages.windows import WindowCalendar

    settings = _settings()
    telemetry.configure_logging(settings.log_level)
    if not settings.gate_callers_file:
        sys.exit("itsmctl gate serve: set ITSM_GATE_CALLERS_FILE (make one with `itsmctl gate token NAME`)")
    try:
        callers = CallersFile(Path(settings.gate_callers_file))
    except CallersError as exc:
        sys.exit(f"itsmctl gate serve: {exc}")
    rules = _rules(settings)
    serde = _serde(settings)
    views = _views(settings, serde, "cmdb", "windows", "changes", "requests")
    topology = rules.correlation.topology
    calendar = WindowCalendar(
        views["windows"], views["cmdb"], frozenset(topology.relationships), topology.max_depth
    )
    gate = ChangeGate(
        GatePolicy(settings.gate_environment_set(), callers.get().bypassers()), calendar, views["cmdb"]
    )
    producer = AckedProducer(settings, **GATE_PRODUCER)
    app = create_gate(
        settings, serde, producer, gate, views["changes"], views["requests"], callers, views["_followers"]
    )

    async def on_cleanup(_: web.Application) -> None:
        producer.close()
        for follower in views["_followers"]:
            follower.stop()

    app.on_cleanup.append(on_cleanup)
    telemetry.get_logger("gate").info(
        "gate_listening",
        host=settings.gate_host,
        port=settings.gate_port,
        callers=len(callers.get().callers),
        environments=sorted(settings.gate_environment_set()),
        changes=len(views["changes"].values()),
        windows=len(views["windows"].windows()),
    )
    web.run_app(app, host=settings.gate_host, port=settings.gate_port, print=None, shutdown_timeout=10)
    return 0


def _gate_token(args: argparse.Namespace) -> int:
    from connectors.gate.callers import CallersError, add_caller

    settings = _settings()
    path = Path(args.callers_file or settings.gate_callers_file or "gate-callers.toml")
    try:
        token = add_caller(path, args.name, args.bypass)
    except CallersError as exc:
        print(f"itsmctl gate token: {exc}", file=sys.stderr)
        return 2
    print(
        f"caller {args.name} added to {path} (bypass: {str(args.bypass).lower()}); its token, shown once:",
        file=sys.stderr,
    )
    print(token)
    return 0


def _gate_check(args: argparse.Namespace) -> int:
    from connectors.gate.client import ERROR, Answer, GateClient, GateUnavailable

    settings = _settings()
    if settings.gate_token is None:
        print("itsmctl gate check: set ITSM_GATE_TOKEN_FILE (or ITSM_GATE_TOKEN)", file=sys.stderr)
        return ERROR
    if not args.service or not args.env:
        print("itsmctl gate check: --service and --env are required", file=sys.stderr)
        return ERROR
    if args.bypass and not (args.justification or "").strip():
        print("itsmctl gate check: --bypass needs --justification", file=sys.stderr)
        return ERROR

    def show(answer: Answer, heading: str | None = None) -> None:
        if heading:
            print(heading)
        for reason in answer.reasons:
            print(f"  - {reason}")

    try:
        client = GateClient(
            settings.gate_url,
            settings.gate_token.get_secret_value(),
            settings.tls_verify("gate"),
            settings.http_timeout_seconds,
        )
    except ValueError as exc:
        print(f"itsmctl gate check: {exc}", file=sys.stderr)
        return ERROR
    try:
        answer = client.check(**_check_body(args), bypass=args.bypass, justification=args.justification or "")
        if answer.exit_code != 0 and args.wait and not args.bypass:
            print(
                f"gate: {args.service} -> {args.env}: deny for now; "
                f"waiting for an approval (up to {args.timeout:.0f}s)"
            )
            show(answer)
            if args.change:
                answer = _recheck(client, args)
            else:
                pending = client.submit(
                    service=args.service,
                    environment=args.env,
                    commit=args.commit,
                    ci_ids=args.ci or [],
                    short_description=args.summary or "",
                )
                request_id = pending.body["request_id"]
                print(f"gate: change requested ({request_id}); polling every {args.interval:.0f}s")
                answer = client.wait(
                    request_id,
                    args.timeout,
                    args.interval,
                    progress=lambda a: show(a, f"gate: {a.status}"),
                )
    except GateUnavailable as exc:
        print(f"itsmctl gate check: {exc}", file=sys.stderr)
        return ERROR
    finally:
        client.close()
    verdict = {0: "allow", 1: "deny"}[answer.exit_code]
    print(
        f"gate: {args.service} -> {args.env}: {verdict}"
        + (f" (change {answer.body['change_id']})" if answer.body.get("change_id") else "")
    )
    show(answer)
    if answer.body.get("emergency_change"):
        corr = answer.body["emergency_change"]
        print(f"gate: emergency change {corr} will be recorded; report the deploy with --change {corr}")
    return answer.exit_code


def _check_body(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "service": args.service,
        "environment": args.env,
        "change_id": args.change,
        "commit": args.commit,
        "ci_ids": args.ci or [],
    }


def _recheck(client: Any, args: argparse.Namespace) -> Any:
    import time

    deadline = time.monotonic() + args.timeout
    while True:
        answer = client.check(**_check_body(args))
        if answer.exit_code == 0 or time.monotonic() + args.interval > deadline:
            return answer
        time.sleep(args.interval)


# --- changes -----------------------------------------------------------------------------------


def cmd_changes(args: argparse.Namespace) -> int:
    return {"sync": _changes_sync, "report": _changes_report}[args.action](args)


def _changes_sync(args: argparse.Namespace) -> int:
    from confluent_kafka import Producer

    from connectors.sinks.http import RetryPolicy, SinkError
    from connectors.sinks.servicenow.client import ServiceNowClient
    from connectors.sinks.servicenow.config import ServiceNowConfig
    from connectors.sources.changes.source import ChangeSync
    from ops.cli import _stop_on_signals
    from streams.core.kafka import DeliveryError, producer_config

    settings = _settings()
    telemetry.configure_logging(settings.log_level)
    try:
        client = ServiceNowClient(
            ServiceNowConfig.from_settings(settings),
            RetryPolicy(
                settings.sink_retry_budget_seconds,
                settings.sink_backoff_initial_seconds,
                settings.sink_backoff_max_seconds,
            ),
            target="servicenow-changes",
        )
    except ValueError as exc:
        sys.exit(f"itsmctl changes sync: {exc}")
    producer = Producer(producer_config(settings))
    sync = ChangeSync(client, producer, _serde(settings), settings, maintenance=not args.no_maintenance)
    try:
        if args.once:
            print(f"changes sync: {sync.run_once()} change(s) published")
            return 0
        port = telemetry.start_metrics_server(settings.metrics_host, args.metrics_port)
        telemetry.get_logger("changes.sync").info(
            "changes_sync_started", metrics_port=port, interval=settings.changes_sync_interval_seconds
        )
        sync.run(_stop_on_signals(), settings.changes_sync_interval_seconds)
        return 0
    except (SinkError, DeliveryError) as exc:
        print(f"itsmctl changes sync: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
        producer.flush(10)


def _parse_since(text: str, now: datetime) -> datetime:
    units = {"h": 3600, "d": 86400, "w": 7 * 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return now - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"--since {text!r} needs a time zone (or use 30d, 12h, 4w)")
    return value


def _changes_report(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from ops.dlq import read_all
    from streams.core.models import AuditEvent
    from streams.core.serde import SerdeError
    from streams.core.topics import AUDIT_EVENTS
    from streams.stages.changes.analytics import render, summarize

    settings = _settings()
    serde = _serde(settings)
    try:
        zone = ZoneInfo(args.tz)
        since = _parse_since(args.since, datetime.now(UTC))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        print(f"itsmctl changes report: {exc}", file=sys.stderr)
        return 2
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
    print(
        f"Change success per service and {args.period} "
        f"since {since.isoformat(timespec='seconds')} ({args.tz}),"
        " from linked deployment outcomes in audit.events:"
    )
    print(render(rows) if rows else "(no deployments in this period)")
    if skipped:
        print(f"({skipped} undecodable audit record(s) skipped)", file=sys.stderr)
    return 0


# --- freeze ------------------------------------------------------------------------------------


def _blackouts(
    settings: Settings, source: str, now: datetime, scope: Any, target: str, zone: str | None
) -> Any:
    from connectors.sinks.http import RetryPolicy
    from connectors.sinks.servicenow.client import ServiceNowClient
    from connectors.sinks.servicenow.config import ServiceNowConfig
    from connectors.sources.freeze.servicenow import blackout_windows, read_blackouts

    client = ServiceNowClient(
        ServiceNowConfig.from_settings(settings),
        RetryPolicy(
            settings.sink_retry_budget_seconds,
            settings.sink_backoff_initial_seconds,
            settings.sink_backoff_max_seconds,
        ),
        target="servicenow-blackouts",
    )
    try:
        schedules, spans = read_blackouts(client)
    finally:
        client.close()
    return blackout_windows(schedules, spans, source, now, scope, target, zone)


def cmd_freeze(args: argparse.Namespace) -> int:
    from confluent_kafka import Producer

    from connectors.sinks.http import SinkError
    from connectors.sources.freeze.mapping import CalendarError, freeze_windows
    from connectors.sources.freeze.source import plan
    from streams.core.kafka import DeliveryError, producer_config, publish_batch
    from streams.core.models import WindowScope
    from streams.core.topics import MAINTENANCE_WINDOWS

    settings = _settings()
    serde = _serde(settings)
    now = datetime.now(UTC)
    scope, target = WindowScope(args.scope), args.target or ""
    if (args.file is None) == (args.from_itsm is None):
        print(
            "itsmctl freeze import: give a calendar FILE or --from servicenow (one of them)", file=sys.stderr
        )
        return 2
    source = args.source or (Path(args.file).stem if args.file else "servicenow-blackouts")
    try:
        if args.file:
            text = Path(args.file).read_text(encoding="utf-8")
            windows = freeze_windows(text, source, now, scope, target, args.timezone)
        else:
            windows = _blackouts(settings, source, now, scope, target, args.timezone)
    except OSError as exc:
        print(f"itsmctl freeze import: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    except CalendarError as exc:
        print(f"itsmctl freeze import: {args.file or args.from_itsm}: {exc}", file=sys.stderr)
        return 2
    except (SinkError, ValueError) as exc:
        print(f"itsmctl freeze import: cannot read blackout schedules: {exc}", file=sys.stderr)
        return 2
    views = _views(settings, serde, "windows")
    current = views["windows"].windows()
    for follower in views["_followers"]:
        follower.stop()
    steps = plan(windows, current, source, now)
    topic = settings.topic(MAINTENANCE_WINDOWS)
    for step in steps:
        w = step.window
        print(
            f"{step.action:<10} {w.window_id:<40} {w.scope.value}:{w.target or '*'} "
            f"{w.starts_at.isoformat()} .. {w.ends_at.isoformat()}  {w.reason}"
        )
    out: list[tuple[str, bytes | None, bytes | None]] = [
        (topic, s.window.window_id.encode(), serde.encode(s.window, topic))
        for s in steps
        if s.action != "unchanged"
    ]
    if args.dry_run:
        print(f"dry run: {len(out)} window(s) would be published")
        return 0
    try:
        publish_batch(Producer(producer_config(settings)), out)
    except DeliveryError as exc:
        print(f"itsmctl freeze import: {exc}", file=sys.stderr)
        return 2
    print(f"freeze import from {source}: {len(out)} window(s) published, {len(steps) - len(out)} unchanged")
    return 0


# --- deploy ------------------------------------------------------------------------------------


def cmd_deploy(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from streams.core.kafka import AckedProducer, DeliveryError
    from streams.core.models import DeploymentEvent
    from streams.core.topics import DEPLOY_EVENTS

    settings = _settings()
    serde = _serde(settings)
    now = datetime.now(UTC)
    duration = args.duration_ms
    if duration is None and args.started_at:
        started = datetime.fromisoformat(args.started_at)
        if started.tzinfo is None:
            print("itsmctl deploy report: --started-at needs a time zone", file=sys.stderr)
            return 2
        duration = max(0, int((now - started).total_seconds() * 1000))
    try:
        event = DeploymentEvent(
            event_id=f"{args.deployment_id}-{args.phase.lower()}",
            deployment_id=args.deployment_id,
            phase=args.phase,
            service=args.service,
            environment=args.env,
            ci_ids=args.ci or [],
            commit_ids=args.commit or [],
            build_number=args.build,
            pipeline=args.pipeline or "",
            change_id=args.change,
            duration_ms=duration,
            failure_reason=args.failure_reason,
            triggered_by=args.triggered_by or "",
            occurred_at=now,
        )
    except ValidationError as exc:
        print(f"itsmctl deploy report: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    topic = settings.topic(DEPLOY_EVENTS)

    async def send() -> None:
        producer = AckedProducer(settings)
        try:
            await producer.send(topic, event.deployment_id.encode(), serde.encode(event, topic))
        finally:
            producer.close()

    try:
        asyncio.run(send())
    except DeliveryError as exc:
        print(f"itsmctl deploy report: {exc}", file=sys.stderr)
        return 2
    print(f"deploy {event.deployment_id}: {event.phase.value} reported to {topic}")
    return 0


def add_parsers(sub: Any) -> None:
    """The change management subcommands of itsmctl."""
    g = sub.add_parser(
        "gate",
        help="the change gate: serve its API, check a deploy, make a caller token",
        description="serve: run the gate's HTTP API. check: may this deploy go now? (what a pipeline step "
        "runs). token NAME: make a caller and print its token once.",
        epilog=GATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g.add_argument("action", choices=["serve", "check", "token"])
    g.add_argument("name", nargs="?", help="token: the caller's name")
    g.add_argument("--service", help="check: the service to deploy")
    g.add_argument("--env", help="check: the target environment")
    g.add_argument("--change", help="check: the change this deploy implements (number or correlation id)")
    g.add_argument("--commit", help="check: the commit to deploy")
    g.add_argument("--ci", action="append", help="check: a CI the deploy touches (repeatable)")
    g.add_argument("--bypass", action="store_true", help="check: emergency bypass (needs --justification)")
    g.add_argument("--justification", help="check: why the emergency bypass")
    g.add_argument(
        "--wait",
        action="store_true",
        help="check: if denied, request a change (or, with --change, wait for it) and poll",
    )
    g.add_argument("--summary", help="check --wait: title of the change requested")
    g.add_argument(
        "--timeout", type=float, default=3600.0, help="check --wait: give up after this many seconds"
    )
    g.add_argument("--interval", type=float, default=15.0, help="check --wait: seconds between polls")
    g.add_argument("--callers-file", help="token: callers file (default ITSM_GATE_CALLERS_FILE)")
    g.set_defaults(func=lambda a: cmd_gate(a) if a.action != "token" or a.name else _need_name())

    c = sub.add_parser(
        "changes",
        help="sync change state from the ITSM, or report change success per service",
        description="sync: read change requests the ITSM changed (state, approval, window) onto "
        "itsm.changes, "
        "and approved changes' windows onto maintenance.windows. report: success rate, failure causes and "
        "mean deploy duration per service and period, from linked deployment outcomes.",
    )
    c.add_argument("action", choices=["sync", "report"])
    c.add_argument("--once", action="store_true", help="sync: one pass, then exit")
    c.add_argument("--no-maintenance", action="store_true", help="sync: do not open maintenance windows")
    c.add_argument("--metrics-port", type=int, default=9466, help="sync: /metrics port (0: any free)")
    c.add_argument("--period", choices=["day", "week", "month"], default="week", help="report: period")
    c.add_argument("--since", default="30d", help="report: 30d, 12h, 4w or an RFC 3339 time")
    c.add_argument("--tz", default="UTC", help="report: time zone the periods are counted in")
    c.add_argument("--service", help="report: only this service")
    c.set_defaults(func=cmd_changes)

    f = sub.add_parser(
        "freeze",
        help="import change freezes (an iCalendar .ics, or ServiceNow blackout schedules) "
        "onto maintenance.windows",
        description="Each VEVENT (or blackout schedule entry, with --from servicenow) becomes a FREEZE "
        "window. Re-importing the same source updates its windows and "
        "cancels the ones no longer in the file. Scope per event with X-ITSM-SCOPE:SERVICE:checkout, or for "
        "the whole file with --scope/--target.",
    )
    f.add_argument("action", choices=["import"])
    f.add_argument("file", nargs="?", help="the .ics file (or --from servicenow)")
    f.add_argument(
        "--from",
        dest="from_itsm",
        choices=["servicenow"],
        help="read the ITSM's change blackout schedules (cmn_schedule_blackout) instead of a file",
    )
    f.add_argument("--source", help="name of this calendar (default: the file name)")
    f.add_argument(
        "--scope", default="GLOBAL", choices=["GLOBAL", "ENVIRONMENT", "SERVICE", "CI", "CI_AND_DEPENDENTS"]
    )
    f.add_argument("--target", help="the environment, service or CI of --scope")
    f.add_argument("--timezone", help="zone of floating times and all-day dates (e.g. Europe/Berlin)")
    f.add_argument("--dry-run", action="store_true", help="print what would change, publish nothing")
    f.set_defaults(func=cmd_freeze)

    d = sub.add_parser(
        "deploy",
        help="report a deployment event (started, succeeded, failed, rolled back) onto deploy.events",
    )
    d.add_argument("action", choices=["report"])
    d.add_argument("--deployment-id", required=True, help="groups the events of one deployment")
    d.add_argument("--phase", required=True, choices=["STARTED", "SUCCEEDED", "FAILED", "ROLLED_BACK"])
    d.add_argument("--service", required=True)
    d.add_argument("--env", required=True)
    d.add_argument("--change", help="the change this deploy implements, if known")
    d.add_argument("--commit", action="append", help="a commit deployed (repeatable)")
    d.add_argument("--build", help="build number")
    d.add_argument("--pipeline", help="pipeline name or URL")
    d.add_argument("--ci", action="append", help="a CI the deploy touches (repeatable)")
    d.add_argument("--duration-ms", type=int, help="how long it took (finished phases)")
    d.add_argument("--started-at", help="or: when it started (RFC 3339), the duration is computed")
    d.add_argument("--failure-reason", help="why it failed or was rolled back")
    d.add_argument("--triggered-by", help="person or automation")
    d.set_defaults(func=cmd_deploy)


def _need_name() -> int:
    print(
        "itsmctl gate token: give the caller's name, e.g. `itsmctl gate token release-bot`", file=sys.stderr
    )
    return 2
