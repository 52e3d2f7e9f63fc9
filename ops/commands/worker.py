"""itsmctl worker: the Faust stream worker."""

from __future__ import annotations

import argparse
from typing import Any

from ops import runtime
from streams.core import telemetry

SECTION = "run the pipeline"
SUMMARY = "run the stream worker: alerts -> incidents, CI updates and deploys -> changes"
DESCRIPTION = (
    "The Faust worker: alerts.raw -> itsm.incident.commands, alerts.suppressed, "
    "alerts.correlation.samples (dead letters to alerts.raw.dlq); cmdb.ci.updates -> cmdb.ci and change "
    "requests; change.requests and deploy.events -> itsm.change.commands and audit.events."
)


def run(_: argparse.Namespace) -> int:
    from faust.worker import Worker

    from streams.agents.app import create_app, rotate_credentials
    from streams.agents.delivery import BrokerOffsets
    from streams.core.follower import TopicFollower
    from streams.core.kafka import BrokerProbe, client_config, count_aiokafka_refusals, on_credentials
    from streams.core.topics import ALERTS_CI_INCIDENTS, DEPLOY_EVENTS
    from streams.processors.indexes import CIIncidentIndex, DeployIndex

    settings = runtime.settings()
    runtime.configure_logging(settings)
    runtime.announce_kafka(settings, "worker")
    telemetry.configure_tracing("itsm-worker")
    log = telemetry.get_logger("worker")
    local_rules = runtime.rules(settings)
    serde = runtime.serde(settings)
    followers: list[TopicFollower] = []

    def views_ready() -> str | None:
        if not followers:
            return "views starting"
        return next((p for p in (f.problem() for f in followers) if p), None)

    checks: dict[str, telemetry.Check] = {"broker": BrokerProbe(settings), "views": views_ready}
    port = runtime.serve_metrics(
        settings.metrics_host, settings.worker_metrics_port, "ITSM_WORKER_METRICS_PORT", checks
    )
    runtime.reachable(settings)
    # The rule set to run: the rules.sets topic's current set when one was applied (itsmctl rules
    # apply), else the local files; a later set is switched to between records, without a restart.
    switch, rule_sets = runtime.follow_rules(settings, serde, local_rules, "worker")
    followers.append(rule_sets)
    rules = switch.current()[1]
    # Alerts are correlated only once the CMDB and the calendar are complete.
    views = runtime.start_views(settings, serde, "changes", "cmdb", "windows", "itsm_incidents")
    incidents = CIIncidentIndex()
    views.followers.append(
        TopicFollower(settings, settings.topic(ALERTS_CI_INCIDENTS), incidents.apply).start()
    )
    # Deployments that finished lately: an incident opening where one did names it (causes.py).
    deploys = DeployIndex(serde, settings.topic(DEPLOY_EVENTS), rules.correlation.cause.change_lookback)
    views.followers.append(TopicFollower(settings, settings.topic(DEPLOY_EVENTS), deploys.apply).start())
    followers.extend(views.followers)
    try:
        for follower in views.followers[-2:]:  # the incident index and the deployments
            follower.wait_ready(settings.view_ready_timeout_seconds)
    except RuntimeError as exc:
        views.stop()
        rule_sets.stop()
        raise runtime.CommandError(f"{exc}; {runtime.kafka_hint(settings)}") from None
    log.info(
        "worker_starting",
        metrics_port=port,
        rules=rules.versions(),
        rule_set=switch.set_id,
        cis=len(views["cmdb"]),
        windows=len(views["windows"].windows()),
        changes=len(views["changes"].values()),
    )
    offsets = BrokerOffsets(
        client_config(settings), settings.app_id, grace=settings.kafka_refusal_grace_seconds
    )
    app = create_app(
        settings,
        serde,
        rules,
        switch=switch,
        cmdb=views["cmdb"],
        incidents=incidents,
        windows=views["windows"],
        changes=views["changes"],
        itsm=views["itsm_incidents"],
        deploys=deploys,
        offsets=offsets,
    )

    def rotated(user: str, password: str) -> None:
        rotate_credentials(app, user, password)

    on_credentials(rotated)
    count_aiokafka_refusals()  # refusals aiokafka meets, counted as librdkafka's are

    @app.timer(5.0, name="views-alive")
    async def views_alive() -> None:
        # A view that died after startup would leave a stale CMDB or calendar: stop the worker.
        for follower in views.followers:
            follower.check()

    # Faust's and aiokafka's lines through the JSON handler configure_logging installed.
    worker = Worker(
        app,
        loglevel=settings.log_level.upper(),
        quiet=True,
        logging_config=telemetry.faust_logging_config(),
        # Our lines go to stderr as they are: Faust's redirect would wrap each one in its own
        # format (and loop our handler back into itself).
        redirect_stdouts=False,
    )
    # No terminal spinner: it writes escape codes into the log and sets the root logger to DEBUG
    # (every aiokafka and Faust debug call then builds a record, about 9% of the worker's time).
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    finally:
        rule_sets.signal_stop()
        views.stop()
        rule_sets.stop()
        offsets.close()
    return runtime.EXIT_OK


def register(sub: Any) -> None:
    runtime.command(sub, "worker", SUMMARY, run, DESCRIPTION).set_defaults(long_running=True)
