"""itsmctl: run and operate the ITSM event pipeline (broker, topics, worker, gateway, sinks, gate, demo)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from streams.core import telemetry
from streams.core.settings import Settings

EPILOG = """Configuration comes from ITSM_* environment variables (see README: Configuration);
a secret can be given as a file with ITSM_<NAME>_FILE, e.g. ITSM_SERVICENOW_PASSWORD_FILE."""


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:
        sys.exit(f"itsmctl: invalid configuration: {exc}")


# --- kafka -----------------------------------------------------------------------------------


def _broker(args: argparse.Namespace, settings: Settings):  # type: ignore[no-untyped-def]
    from ops.kafka import Broker

    return Broker(
        Path(args.data_dir or settings.kafka_data_dir).resolve(),
        port=args.port or settings.kafka_port,
        controller_port=args.controller_port or settings.kafka_controller_port,
    )


def cmd_kafka(args: argparse.Namespace) -> int:
    from ops.kafka import KAFKA_VERSION, BrokerError, fetch_jars

    settings = _settings()
    try:
        if args.action == "fetch":
            libs = fetch_jars()
            print(f"kafka {KAFKA_VERSION} jars in {libs}")
            return 0
        broker = _broker(args, settings)
        if args.action == "up":
            pid = broker.start(wait=args.wait)
            print(
                f"kafka {KAFKA_VERSION} up: pid {pid}, bootstrap {broker.bootstrap}, data {broker.data_dir}"
            )
            return 0
        if args.action == "down":
            stopped = broker.stop()
            print("kafka stopped" if stopped else "kafka was not running")
            return 0
        pid = broker.running_pid()
        if pid is None:
            print(f"kafka down (no broker for {broker.data_dir})")
            return 3
        ok = broker.answers()
        print(
            f"kafka {'up' if ok else 'NOT ANSWERING'}: pid {pid}, "
            f"bootstrap {broker.bootstrap}, data {broker.data_dir}"
        )
        return 0 if ok else 1
    except BrokerError as exc:
        print(f"itsmctl kafka {args.action}: {exc}", file=sys.stderr)
        return 1


# --- topics ----------------------------------------------------------------------------------


def cmd_topics(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import AdminClient

    from ops import topics
    from streams.core.kafka import client_config
    from streams.core.topics import declared

    settings = _settings()
    admin = AdminClient(client_config(settings))
    specs = list(declared(settings.topic_prefix))
    if args.action == "apply":
        states = topics.apply(admin, specs, settings.topic_replication)
    else:
        states = topics.inspect(admin, specs)
    width = max(len(s.name) for s in states)
    for s in states:
        print(f"{s.name:<{width}}  {s.action:<10}  {s.detail}")
    bad = [s for s in states if s.action in ("missing", "drifted", "cannot-fix")]
    return 1 if bad else 0


# --- long-running processes ------------------------------------------------------------------


def _serde(settings: Settings):  # type: ignore[no-untyped-def]
    from streams.core.serde import AvroSerde, SchemaRegistryClient, SchemaStore

    registry = None
    if settings.schema_registry_url:
        registry = SchemaRegistryClient(
            settings.schema_registry_url,
            settings.schema_registry_user,
            settings.schema_registry_password,
            settings.http_timeout_seconds,
        )
    return AvroSerde(
        SchemaStore(Path(settings.schema_dir) if settings.schema_dir else None), registry=registry
    )


def cmd_gateway(_: argparse.Namespace) -> int:
    from aiohttp import web

    from connectors.registry import webhook_sources
    from connectors.sources.gateway import create_gateway
    from streams.core.follower import TopicFollower
    from streams.core.kafka import AckedProducer
    from streams.core.models import CorrelationSample
    from streams.core.topics import ALERTS_CORRELATION_SAMPLES
    from streams.processors.indexes import RecordIndex

    settings = _settings()
    telemetry.configure_logging(settings.log_level)
    producer = AckedProducer(
        settings, **{"delivery.timeout.ms": int(settings.gateway_publish_timeout_seconds * 1000)}
    )
    sources = webhook_sources(settings)
    serde = _serde(settings)
    # Verdicts must name a sample the worker took: follow alerts.correlation.samples.
    samples = RecordIndex(
        serde, settings.topic(ALERTS_CORRELATION_SAMPLES), CorrelationSample, lambda s: s.sample_id
    )
    samples_view = TopicFollower(settings, samples.topic, samples.apply).start()
    try:
        samples_view.wait_ready(settings.view_ready_timeout_seconds)
    except RuntimeError as exc:
        samples_view.stop()
        producer.close()
        sys.exit(
            f"itsmctl gateway: {exc}; is Kafka running at {settings.kafka_bootstrap} and were the "
            "topics applied (itsmctl topics apply)?"
        )
    app = create_gateway(
        settings, serde, producer, sources, fingerprints=_rules(settings).fingerprint, samples=samples.get
    )

    async def on_cleanup(_: web.Application) -> None:
        samples_view.stop()
        left = producer.close()
        telemetry.get_logger("gateway").info("gateway_stopped", undelivered=left)

    app.on_cleanup.append(on_cleanup)
    telemetry.get_logger("gateway").info(
        "gateway_listening",
        host=settings.gateway_host,
        port=settings.gateway_port,
        routes=[s.path for s in sources.values()],
    )
    web.run_app(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        print=None,
        handle_signals=True,
        shutdown_timeout=10,
    )
    return 0


def _rules(settings: Settings):  # type: ignore[no-untyped-def]
    from streams.core.rules import RuleError, load_rules

    try:
        return load_rules(Path(settings.rules_dir) if settings.rules_dir else None)
    except RuleError as exc:
        sys.exit(f"itsmctl: {exc}")


def cmd_worker(_: argparse.Namespace) -> int:
    from faust.worker import Worker

    from streams.agents.app import create_app
    from streams.agents.delivery import BrokerOffsets
    from streams.core.follower import TopicFollower
    from streams.core.kafka import client_config
    from streams.core.topics import ALERTS_CI_INCIDENTS, CMDB_CI, ITSM_CHANGES, MAINTENANCE_WINDOWS
    from streams.processors.indexes import ChangeIndex, CIIncidentIndex, CMDBTopicIndex, WindowIndex

    settings = _settings()
    telemetry.configure_logging(settings.log_level)
    telemetry.configure_tracing("itsm-worker")
    log = telemetry.get_logger("worker")
    rules = _rules(settings)
    serde = _serde(settings)
    port = telemetry.start_metrics_server(settings.metrics_host, settings.worker_metrics_port)
    cmdb = CMDBTopicIndex(serde, settings.topic(CMDB_CI))
    windows = WindowIndex(serde, settings.topic(MAINTENANCE_WINDOWS))
    incidents = CIIncidentIndex()
    changes = ChangeIndex(serde, settings.topic(ITSM_CHANGES))
    views = [
        TopicFollower(settings, settings.topic(ITSM_CHANGES), changes.apply).start(),
        TopicFollower(settings, settings.topic(CMDB_CI), cmdb.apply).start(),
        TopicFollower(settings, settings.topic(MAINTENANCE_WINDOWS), windows.apply).start(),
        TopicFollower(settings, settings.topic(ALERTS_CI_INCIDENTS), incidents.apply).start(),
    ]
    for view in views:
        # Alerts are correlated only once the CMDB and the calendar are complete.
        view.wait_ready(settings.view_ready_timeout_seconds)
    log.info(
        "worker_starting",
        metrics_port=port,
        rules=rules.versions(),
        cis=len(cmdb),
        windows=len(windows.windows()),
        changes=len(changes.values()),
    )
    offsets = BrokerOffsets(client_config(settings), settings.app_id)
    app = create_app(
        settings,
        serde,
        rules,
        cmdb=cmdb,
        incidents=incidents,
        windows=windows,
        changes=changes,
        offsets=offsets,
    )

    @app.timer(5.0, name="views-alive")
    async def views_alive() -> None:
        # A view that died after startup would leave a stale CMDB or calendar: stop the worker.
        for view in views:
            view.check()

    worker = Worker(app, loglevel="WARN" if settings.log_level != "debug" else "INFO", quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        for view in views:
            view.stop()
        offsets.close()
    return 0


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def build_sink(target: str, settings: Settings, policy: Any, limiter: Any, known: Any = None) -> Any:
    """The sink named target, configured from settings; ValueError if its configuration is incomplete."""
    from connectors.sinks.jira.config import JiraConfig
    from connectors.sinks.jira.sink import JiraSink
    from connectors.sinks.rt.config import RTConfig
    from connectors.sinks.rt.sink import RTSink
    from connectors.sinks.servicenow.client import ServiceNowClient
    from connectors.sinks.servicenow.config import ServiceNowConfig
    from connectors.sinks.servicenow.sink import ServiceNowSink
    from connectors.sinks.webhook.config import WebhookConfig
    from connectors.sinks.webhook.sink import WebhookSink

    if target == "servicenow":
        client = ServiceNowClient(ServiceNowConfig.from_settings(settings), policy, limiter=limiter)
        return ServiceNowSink(client, resolved_policy=settings.sink_resolved_policy, known=known)
    if target == "jira":
        return JiraSink(
            JiraConfig.from_settings(settings),
            policy,
            limiter,
            resolved_policy=settings.sink_resolved_policy,
            known=known,
        )
    if target == "rt":
        return RTSink(
            RTConfig.from_settings(settings),
            policy,
            limiter,
            resolved_policy=settings.sink_resolved_policy,
            known=known,
        )
    if target == "webhook":
        return WebhookSink(WebhookConfig.from_settings(settings), policy, limiter)
    raise ValueError(f"unknown sink {target!r}")


def cmd_sink(args: argparse.Namespace) -> int:
    from connectors.sinks.http import RetryPolicy
    from connectors.sinks.known import KnownIds
    from connectors.sinks.ratelimit import RateLimiter
    from connectors.sinks.runner import SinkRunner
    from streams.core.follower import TopicFollower
    from streams.core.models import RecordType
    from streams.core.topics import ITSM_RESULTS

    settings = _settings()
    telemetry.configure_logging(settings.log_level)
    telemetry.configure_tracing("itsm-sink")
    policy = RetryPolicy(
        settings.sink_retry_budget_seconds,
        settings.sink_backoff_initial_seconds,
        settings.sink_backoff_max_seconds,
    )
    limiter = RateLimiter(
        settings.sink_rate_limit_rps,
        settings.sink_rate_limit_burst,
        settings.sink_concurrency,
        target=args.target,
    )
    known = KnownIds(args.target)
    try:
        sink = build_sink(args.target, settings, policy, limiter, known)
    except ValueError as exc:
        sys.exit(f"itsmctl sink {args.target}: {exc}")
    # correlation id -> ITSM id from everything this target delivered before (itsm.results).
    results_view = TopicFollower(settings, settings.topic(ITSM_RESULTS), known.apply).start()
    results_view.wait_ready(settings.view_ready_timeout_seconds)
    port = telemetry.start_metrics_server(settings.metrics_host, settings.sink_metrics_port)
    telemetry.get_logger("sink").info("metrics_listening", port=port, target=args.target, kind=args.kind)
    kind = RecordType.INCIDENT if args.kind == "incident" else RecordType.CHANGE
    runner = SinkRunner(settings, _serde(settings), sink, kind, known)
    telemetry.get_logger("sink").info("sink_ready", known_ids=len(known))
    try:
        runner.run(_stop_on_signals(), check=results_view.check)
    finally:
        results_view.stop()
    return 0


def cmd_devitsm(_: argparse.Namespace) -> int:
    from aiohttp import web

    from connectors.devitsm.server import OAuthClient, create_devitsm
    from connectors.devitsm.store import Store

    settings = _settings()
    telemetry.configure_logging(settings.log_level)
    password = settings.devitsm_password.get_secret_value()
    if not password:
        sys.exit(
            "itsmctl devitsm: set ITSM_DEVITSM_PASSWORD (or ITSM_DEVITSM_PASSWORD_FILE); "
            "the development ITSM does not run without authentication"
        )
    store = Store(settings.devitsm_db)
    groups = frozenset(g.strip() for g in settings.devitsm_known_groups.split(",") if g.strip())
    oauth = None
    if settings.devitsm_client_id:
        oauth = OAuthClient(
            settings.devitsm_client_id,
            settings.devitsm_client_secret.get_secret_value(),
            settings.devitsm_token_ttl_seconds,
        )
    app = create_devitsm(
        store,
        settings.devitsm_user,
        password,
        settings.devitsm_rate_limit,
        groups,
        oauth,
        faults=settings.devitsm_fault_injection,
    )
    telemetry.get_logger("devitsm").info(
        "devitsm_listening", host=settings.devitsm_host, port=settings.devitsm_port, db=settings.devitsm_db
    )
    web.run_app(app, host=settings.devitsm_host, port=settings.devitsm_port, print=None, shutdown_timeout=5)
    store.close()
    return 0


def _dlq_filter(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ops.dlq import Filter
    from streams.core.timeutil import parse_rfc3339

    try:
        since = parse_rfc3339(args.since, "--since") if args.since else None
        until = parse_rfc3339(args.until, "--until") if args.until else None
    except ValueError as exc:
        sys.exit(f"itsmctl dlq: {exc}")
    return Filter(frozenset(args.error_class or ()), args.key, since, until)


def cmd_dlq(args: argparse.Namespace) -> int:
    import os

    from ops import dlq

    settings = _settings()
    if args.action == "list":
        for topic in dlq.dlq_topics(settings):
            print(f"{topic:<48} {dlq.count(settings, topic):>8} record(s)")
        return 0
    if not args.topic:
        sys.exit(f"itsmctl dlq {args.action}: name the DLQ topic (see `itsmctl dlq list`)")
    topic = args.topic if args.topic.startswith(settings.topic_prefix) else settings.topic(args.topic)
    flt = _dlq_filter(args)
    if args.action == "show":
        shown = 0
        for rec in dlq.dead_records(settings, topic):
            if not flt(rec):
                continue
            i = rec.info
            print(
                f"{rec.ref}  key={(rec.key or b'').decode('utf-8', 'replace')!r}  "
                f"class={i.get('dlq.error.class')}  stage={i.get('dlq.stage')}  "
                f"attempts={i.get('dlq.attempts')}  "
                f"failed={i.get('dlq.first_failed_at')}  from={i.get('dlq.topic')}[{i.get('dlq.partition')}]"
                f"@{i.get('dlq.offset')}  bytes={len(rec.value or b'')}"
            )
            print(f"    {i.get('dlq.exception.message', '')}")
            shown += 1
            if shown >= args.limit:
                break
        return 0
    if args.action == "stats":
        records = [r for r in dlq.dead_records(settings, topic) if flt(r)]
        by_class, by_stage, by_time = dlq.stats(records, args.bucket)
        print(f"{topic}: {len(records)} dead letter(s)")
        for title, counter in (
            ("by error class", by_class),
            ("by stage", by_stage),
            (f"by {args.bucket}", by_time),
        ):
            print(f"  {title}:")
            for name, n in sorted(counter.items()):
                print(f"    {name:<28} {n:>8}")
        return 0
    actor = args.actor or os.environ.get("USER") or "itsmctl"
    report = dlq.replay(
        settings,
        topic,
        flt,
        dry_run=args.dry_run,
        rate=args.rate,
        actor=actor,
        progress=None if args.dry_run else dlq.progress_printer(),
    )
    verb = "would replay" if args.dry_run else "replayed"
    n = report.selected - report.skipped_already if args.dry_run else report.replayed
    print(
        f"{verb} {n} of {report.selected} selected dead letter(s) from {topic}; "
        f"{report.skipped_already} already replayed before"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ops.demo import run_demo

    return run_demo(
        once=args.once, samples=Path(args.samples) if args.samples else None, workdir=Path(args.workdir)
    )


# --- argument parsing ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="itsmctl",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    k = sub.add_parser(
        "kafka",
        help="fetch, start, stop or probe the local single-node KRaft broker",
        description="The local Kafka broker (Apache Kafka jars from Maven Central, "
        "cached in ~/.cache/itsm-pipeline), bound to 127.0.0.1.",
    )
    k.add_argument(
        "action",
        choices=["fetch", "up", "down", "status"],
        help="fetch: download the jars; up: format (once) and start, wait until it answers; "
        "down: stop cleanly; status: exit 0 if it answers, 3 if not running",
    )
    k.add_argument("--data-dir", help="broker data directory (default ITSM_KAFKA_DATA_DIR or .itsm/kafka)")
    k.add_argument("--port", type=int, help="client port (default ITSM_KAFKA_PORT or 9092)")
    k.add_argument("--controller-port", type=int, help="KRaft controller port (default 9093)")
    k.add_argument("--wait", type=float, default=90.0, help="seconds to wait for the broker to answer")
    k.set_defaults(func=cmd_kafka)

    t = sub.add_parser(
        "topics",
        help="apply or list the declared topics",
        description="Topics are declared once in streams/core/topics.py.",
    )
    t.add_argument(
        "action",
        choices=["apply", "list"],
        help="apply: create missing, alter drifted, report (idempotent); list: declared vs actual",
    )
    t.set_defaults(func=cmd_topics)

    sub.add_parser("gateway", help="run the HTTP ingest gateway (webhooks -> alerts.raw)").set_defaults(
        func=cmd_gateway
    )
    sub.add_parser(
        "worker",
        help="run the Faust stream worker (alerts.raw -> incident commands; CI updates, change "
        "requests and deploy events -> cmdb.ci and change commands)",
    ).set_defaults(func=cmd_worker)
    s = sub.add_parser(
        "sink",
        help="run an ITSM sink (itsm.incident.commands or, with --kind change, itsm.change.commands -> ITSM)",
    )
    s.add_argument(
        "target",
        nargs="?",
        default="servicenow",
        choices=["servicenow", "jira", "rt", "webhook"],
        help="which ITSM API (the development ITSM speaks the ServiceNow one); webhook POSTs signed JSON",
    )
    s.add_argument(
        "--kind",
        choices=["incident", "change"],
        default="incident",
        help="incident: itsm.incident.commands (default); change: itsm.change.commands",
    )
    s.set_defaults(func=cmd_sink)
    sub.add_parser(
        "devitsm", help="run the development ITSM (ServiceNow Table API compatible, SQLite)"
    ).set_defaults(func=cmd_devitsm)

    q = sub.add_parser(
        "dlq",
        help="list, show, count and replay dead letters",
        description="Dead letters keep the original record and dlq.* headers saying why. replay sends "
        "the selected ones back to the topic they failed on, in order, once each (a ledger on dlq.replays "
        "remembers what was replayed), and records an audit event.",
    )
    q.add_argument("action", choices=["list", "show", "stats", "replay"])
    q.add_argument(
        "topic", nargs="?", help="the DLQ topic, e.g. itsm.incident.commands.dlq (prefix optional)"
    )
    q.add_argument(
        "--error-class",
        action="append",
        choices=[c for c in ("network", "auth", "schema", "validation", "rate_limit", "conflict", "unknown")],
        help="only this error class (repeatable)",
    )
    q.add_argument("--key", help="only records with this key")
    q.add_argument("--since", help="only records that first failed at or after this RFC 3339 time")
    q.add_argument("--until", help="only records that first failed before this RFC 3339 time")
    q.add_argument("--limit", type=int, default=50, help="show: at most this many records")
    q.add_argument("--bucket", choices=["hour", "day"], default="hour", help="stats: time bucket")
    q.add_argument("--dry-run", action="store_true", help="replay: say what would be replayed, send nothing")
    q.add_argument(
        "--rate", type=float, default=50.0, help="replay: records per second at most (0: no limit)"
    )
    q.add_argument("--actor", help="replay: who replays, for the audit event (default $USER)")
    q.set_defaults(func=cmd_dlq)

    from ops.changes_cli import add_parsers

    add_parsers(sub)

    d = sub.add_parser(
        "demo",
        help="run the whole pipeline locally and feed it the bundled sample alerts",
        description="Starts Kafka, applies topics, starts the development ITSM, worker, sinks, "
        "gateway, change sync and change gate, posts the bundled Alertmanager webhooks and prints "
        "what became of each alert, then runs a deployment pipeline through the change gate (denied "
        "in a freeze, a change requested and approved, allowed, the change closed with what was "
        "deployed). Runs until Ctrl-C, or with --once exits when every step is accounted for.",
    )
    d.add_argument(
        "--once",
        action="store_true",
        help="non-interactive: exit 0 when every sample alert and gate step is accounted for, 1 otherwise",
    )
    d.add_argument(
        "--samples", help="directory of Alertmanager webhook JSON files (default: the bundled ones)"
    )
    d.add_argument(
        "--workdir",
        default=".itsm/demo",
        help="where the demo keeps its broker and ITSM data (wiped at start)",
    )
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
