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
    from streams.core.kafka import BrokerProbe
    from streams.core.topics import ITSM_RESULTS

    settings = runtime.settings()
    runtime.configure_logging(settings)
    runtime.announce_kafka(settings, f"sink-{args.target}")
    telemetry.configure_tracing("itsm-sink")
    limiter = RateLimiter(
        settings.sink_rate_limit_rps,
        settings.sink_rate_limit_burst,
        settings.sink_concurrency,
        target=args.target,
    )
    known = KnownIds(args.target)
    if not args.skip_check:
        preflight(settings, args.target)
    try:
        # One sink instance per lane (its own HTTP connection and per-command state), sharing the
        # target's rate limiter and known ids: ITSM_SINK_CONCURRENCY commands in flight at once.
        lanes = [
            build_sink(args.target, settings, runtime.retry_policy(settings), limiter, known)
            for _ in range(settings.sink_concurrency)
        ]
    except ValueError as exc:
        raise runtime.CommandError(str(exc)) from None
    sink = lanes[0]
    serde = runtime.serde(settings)
    # correlation id -> ITSM id from everything this target delivered before (itsm.results).
    results = TopicFollower(settings, settings.topic(ITSM_RESULTS), known.apply).start()
    try:
        results.wait_ready(settings.view_ready_timeout_seconds)
    except RuntimeError as exc:
        results.stop()
        raise runtime.CommandError(f"{exc}; {runtime.kafka_hint(settings)}") from None
    runner = SinkRunner(settings, serde, sink, KINDS[args.kind], known, more=lanes[1:])
    checks: dict[str, telemetry.Check] = {
        "broker": BrokerProbe(settings),
        "results_view": lambda: None if results.ready.is_set() else "itsm.results not caught up",
        "target": lambda: runner.target_problem,
    }
    port = runtime.serve_metrics(
        settings.metrics_host, settings.sink_metrics_port, "ITSM_SINK_METRICS_PORT", checks
    )
    telemetry.get_logger("sink").info("metrics_listening", port=port, target=args.target, kind=args.kind)
    telemetry.get_logger("sink").info("sink_ready", known_ids=len(known))

    def results_alive() -> None:
        # The results view failed (refused past ITSM_KAFKA_REFUSAL_GRACE_SECONDS, say): one line.
        try:
            results.check()
        except RuntimeError as exc:
            raise runtime.CommandError(f"{exc}; {runtime.kafka_hint(settings)}") from None

    try:
        runner.run(runtime.stop_on_signals(), check=results_alive)
    finally:
        results.stop()
    return runtime.EXIT_OK


def preflight(settings: Any, target: str) -> None:
    """`itsmctl itsm check TARGET` before delivering anything: a problem refuses the start (exit 2,
    each problem named with its fix); warnings are logged; an ITSM that does not answer yet is
    logged and the sink starts (its deliveries retry as they always do)."""
    from connectors.preflight import Level, Unreachable
    from connectors.registry import preflight as findings_of

    log = telemetry.get_logger("sink")
    try:
        findings = findings_of(target, settings)
    except ValueError as exc:
        raise runtime.CommandError(str(exc)) from None
    except Unreachable as exc:
        log.warning("preflight_unreachable", target=target, error=str(exc))
        return
    for f in findings:
        if f.level is Level.WARN:
            log.warning("preflight_warning", target=target, check=f.check, detail=f.detail, fix=f.fix)
    problems = [f for f in findings if f.level is Level.PROBLEM]
    if problems:
        named = "; ".join(f"{f.check}: {f.detail} (fix: {f.fix})" for f in problems)
        raise runtime.CommandError(
            f"{target} is not ready ({named}); `itsmctl itsm check {target}` shows every check"
        )
    log.info("preflight_passed", target=target, checks=len(findings))


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
    p.add_argument(
        "--skip-check",
        action="store_true",
        help="start without the preflight (`itsmctl itsm check TARGET`), e.g. while a warning is known",
    )
