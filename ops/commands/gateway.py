"""itsmctl gateway: the HTTP ingest gateway (webhooks -> alerts.raw)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from ops import runtime
from streams.core import telemetry

SECTION = "run the pipeline"
SUMMARY = "run the HTTP ingest gateway (webhooks -> alerts.raw)"


CHILD = "ITSM_GATEWAY_CHILD"  # set by the supervisor in each process it starts


def run(_: argparse.Namespace) -> int:
    settings = runtime.settings()
    if settings.gateway_processes > 1 and not os.environ.get(CHILD):
        return supervise(settings.gateway_processes, settings.log_level)
    return serve(bool(os.environ.get(CHILD)))


def supervise(count: int, log_level: str) -> int:
    """Start count gateway processes on the one port (SO_REUSEPORT: the kernel spreads new
    connections over them), their metrics summed through a shared PROMETHEUS_MULTIPROC_DIR; stop
    them all on SIGTERM/SIGINT, or when one exits (its exit code is returned)."""
    telemetry.configure_logging(log_level)
    log = telemetry.get_logger("gateway")
    with tempfile.TemporaryDirectory(prefix="itsm-gateway-metrics-") as metrics_dir:
        env = {**os.environ, CHILD: "1", "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        children: list[subprocess.Popen[bytes]] = []
        stopping = False

        def stop(signum: int, _frame: Any) -> None:
            nonlocal stopping
            stopping = True
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)

        # Before the first child starts: a stop request never leaves one behind.
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        for _ in range(count):
            if stopping:
                break
            children.append(subprocess.Popen([sys.executable, "-m", "ops.cli", "gateway"], env=env))
        log.info("gateway_processes", count=count, pids=[c.pid for c in children])
        code = runtime.EXIT_OK
        while any(child.poll() is None for child in children):
            for child in children:
                if child.poll() is not None and not stopping:
                    log.error("gateway_process_exited", pid=child.pid, code=child.returncode)
                    code = child.returncode or 1
                    stop(signal.SIGTERM, None)
            time.sleep(0.2)
        for child in children:
            if child.wait() not in (0, -signal.SIGTERM) and code == runtime.EXIT_OK:
                code = child.returncode or 1
        return code


def serve(shared_port: bool) -> int:
    from aiohttp import web

    from connectors.auth import GATEWAY_SCOPES, TokensError, guard_for
    from connectors.registry import webhook_sources
    from connectors.sources.gateway import create_gateway
    from connectors.sources.silences import SilenceStore
    from streams.core.follower import TopicFollower
    from streams.core.kafka import AckedProducer, BrokerProbe
    from streams.core.models import CorrelationSample
    from streams.core.topics import ALERTS_CORRELATION_SAMPLES, MAINTENANCE_WINDOWS
    from streams.processors.indexes import RecordIndex, WindowIndex

    settings = runtime.settings()
    runtime.configure_logging(settings)
    runtime.announce_kafka(settings, "gateway")
    try:
        guard = guard_for("gateway", settings, GATEWAY_SCOPES, open_scopes=("alerts:write",))
    except TokensError as exc:
        raise runtime.CommandError(str(exc)) from None
    rules = runtime.rules(settings)
    serde = runtime.serde(settings)
    sources = webhook_sources(settings)
    # Verdicts must name a sample the worker took: follow alerts.correlation.samples.
    samples = RecordIndex(
        serde, settings.topic(ALERTS_CORRELATION_SAMPLES), CorrelationSample, lambda s: s.sample_id
    )
    # fingerprint.toml from the rule set the pipeline runs, switched between two requests.
    switch, rule_sets = runtime.follow_rules(settings, serde, rules, "gateway")
    follower = TopicFollower(settings, samples.topic, samples.apply).start()
    try:
        follower.wait_ready(settings.view_ready_timeout_seconds)
    except RuntimeError as exc:
        follower.stop()
        rule_sets.stop()
        raise runtime.CommandError(f"{exc}; {runtime.kafka_hint(settings)}") from None
    producer = AckedProducer(
        settings, **{"delivery.timeout.ms": int(settings.gateway_publish_timeout_seconds * 1000)}
    )
    # Alertmanager's silence API reads the silences from maintenance.windows.
    windows = WindowIndex(serde, settings.topic(MAINTENANCE_WINDOWS))
    windows_follower = TopicFollower(settings, windows.topic, windows.apply).start()
    try:
        windows_follower.wait_ready(settings.view_ready_timeout_seconds)
    except RuntimeError as exc:
        follower.stop()
        windows_follower.stop()
        rule_sets.stop()
        raise runtime.CommandError(f"{exc}; {runtime.kafka_hint(settings)}") from None
    app = create_gateway(
        settings,
        serde,
        producer,
        sources,
        fingerprints=lambda: switch.current()[1].fingerprint,
        samples=samples.get,
        silences=SilenceStore(windows.windows, windows.put),
        guard=guard,
    )
    checks: dict[str, telemetry.Check] = {
        "broker": BrokerProbe(settings),
        "samples_view": follower.problem,
        "windows_view": windows_follower.problem,
        "rule_sets_view": rule_sets.problem,
    }
    app.router.add_get("/readyz", telemetry.readyz_handler(checks))

    async def on_cleanup(_: web.Application) -> None:
        follower.stop()
        windows_follower.stop()
        rule_sets.stop()
        left = producer.close()
        telemetry.get_logger("gateway").info("gateway_stopped", undelivered=left)

    app.on_cleanup.append(on_cleanup)
    telemetry.get_logger("gateway").info(
        "gateway_listening",
        host=settings.gateway_host,
        port=settings.gateway_port,
        routes=[s.path for s in sources.values()],
        auth="tokens file"
        if settings.tokens_file
        else ("shared token" if settings.gateway_token else "none"),
    )
    if guard.insecure:
        telemetry.get_logger("gateway").warning(
            "insecure_no_authentication",
            detail="webhooks accept unauthenticated requests; verdicts and silences are refused. "
            "Set ITSM_TOKENS_FILE (itsmctl tokens issue) for scoped tokens.",
        )
    elif guard.shared is not None:
        telemetry.get_logger("gateway").warning(
            "shared_token",
            detail="one token with every gateway scope; ITSM_TOKENS_FILE gives each caller its own",
        )
    web.run_app(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        ssl_context=runtime.server_tls(settings, "gateway"),
        print=None,
        handle_signals=True,
        shutdown_timeout=10,
        reuse_port=shared_port,
    )
    return runtime.EXIT_OK


def register(sub: Any) -> None:
    runtime.command(sub, "gateway", SUMMARY, run).set_defaults(long_running=True)
