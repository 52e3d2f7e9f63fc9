"""itsmctl gateway: the HTTP ingest gateway (webhooks -> alerts.raw)."""

from __future__ import annotations

import argparse
from typing import Any

from ops import runtime
from streams.core import telemetry

SECTION = "run the pipeline"
SUMMARY = "run the HTTP ingest gateway (webhooks -> alerts.raw)"


def run(_: argparse.Namespace) -> int:
    from aiohttp import web

    from connectors.registry import webhook_sources
    from connectors.sources.gateway import create_gateway
    from streams.core.follower import TopicFollower
    from streams.core.kafka import AckedProducer
    from streams.core.models import CorrelationSample
    from streams.core.topics import ALERTS_CORRELATION_SAMPLES
    from streams.processors.indexes import RecordIndex

    settings = runtime.settings()
    telemetry.configure_logging(settings.log_level)
    rules = runtime.rules(settings)
    serde = runtime.serde(settings)
    sources = webhook_sources(settings)
    # Verdicts must name a sample the worker took: follow alerts.correlation.samples.
    samples = RecordIndex(
        serde, settings.topic(ALERTS_CORRELATION_SAMPLES), CorrelationSample, lambda s: s.sample_id
    )
    follower = TopicFollower(settings, samples.topic, samples.apply).start()
    try:
        follower.wait_ready(settings.view_ready_timeout_seconds)
    except RuntimeError as exc:
        follower.stop()
        raise runtime.CommandError(f"{exc}; {runtime.kafka_hint(settings)}") from None
    producer = AckedProducer(
        settings, **{"delivery.timeout.ms": int(settings.gateway_publish_timeout_seconds * 1000)}
    )
    app = create_gateway(
        settings, serde, producer, sources, fingerprints=rules.fingerprint, samples=samples.get
    )

    async def on_cleanup(_: web.Application) -> None:
        follower.stop()
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
    return runtime.EXIT_OK


def register(sub: Any) -> None:
    runtime.command(sub, "gateway", SUMMARY, run).set_defaults(long_running=True)
