"""itsmctl sink NAME: deliver incident or change commands to one ITSM."""

from __future__ import annotations

import argparse
from typing import Any

from connectors.registry import SINKS, build_sink
from ops import runtime
from streams.core import telemetry
from streams.core.models import RecordType

SECTION = "run the pipeline"
SUMMARY = "run an ITSM sink: incident (or change) commands -> ServiceNow, Jira, RT, webhook"
DESCRIPTION = (
    "Delivers itsm.incident.commands (or, with --kind change, itsm.change.commands) to one ITSM, within "
    "its rate limit; results go to itsm.results, what cannot be delivered to the commands' .dlq."
)
KINDS = {"incident": RecordType.INCIDENT, "change": RecordType.CHANGE}


def run(args: argparse.Namespace) -> int:
    from connectors.sinks.known import KnownIds
    from connectors.sinks.ratelimit import RateLimiter
    from connectors.sinks.runner import SinkRunner
    from streams.core.follower import TopicFollower
    from streams.core.topics import ITSM_RESULTS

    settings = runtime.settings()
    telemetry.configure_logging(settings.log_level)
    telemetry.configure_tracing("itsm-sink")
    limiter = RateLimiter(
        settings.sink_rate_limit_rps,
        settings.sink_rate_limit_burst,
        settings.sink_concurrency,
        target=args.target,
    )
    known = KnownIds(args.target)
    try:
        sink = build_sink(args.target, settings, runtime.retry_policy(settings), limiter, known)
    except ValueError as exc:
        raise runtime.CommandError(str(exc)) from None
    serde = runtime.serde(settings)
    # correlation id -> ITSM id from everything this target delivered before (itsm.results).
    results = TopicFollower(settings, settings.topic(ITSM_RESULTS), known.apply).start()
    try:
        results.wait_ready(settings.view_ready_timeout_seconds)
    except RuntimeError as exc:
        results.stop()
        raise runtime.CommandError(f"{exc}; {runtime.kafka_hint(settings)}") from None
    port = telemetry.start_metrics_server(settings.metrics_host, settings.sink_metrics_port)
    telemetry.get_logger("sink").info("metrics_listening", port=port, target=args.target, kind=args.kind)
    runner = SinkRunner(settings, serde, sink, KINDS[args.kind], known)
    telemetry.get_logger("sink").info("sink_ready", known_ids=len(known))
    try:
        runner.run(runtime.stop_on_signals(), check=results.check)
    finally:
        results.stop()
    return runtime.EXIT_OK


def register(sub: Any) -> None:
    p = runtime.command(sub, "sink", SUMMARY, run, DESCRIPTION)
    p.set_defaults(long_running=True)
    p.add_argument(
        "target",
        nargs="?",
        default="servicenow",
        choices=SINKS,
        help="which ITSM API (the development ITSM speaks the ServiceNow one); webhook POSTs signed JSON",
    )
    p.add_argument(
        "--kind",
        choices=list(KINDS),
        default="incident",
        help="incident: itsm.incident.commands (default); change: itsm.change.commands",
    )
