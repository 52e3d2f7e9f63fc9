"""itsmctl poll prometheus: a Prometheus that cannot push, polled for its alerts onto alerts.raw."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ops import runtime

SECTION = "run the pipeline"
SUMMARY = "poll a source that cannot push (a Prometheus' active alerts) onto alerts.raw"


def prometheus(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException, Producer

    from connectors.sources.prometheus import PollError, PrometheusPoller
    from streams.core import telemetry
    from streams.core.kafka import DeliveryError, producer_config, publish_batch, track
    from streams.core.messages import encoded
    from streams.core.topics import ALERTS_RAW

    settings = runtime.settings(kafka=True)
    runtime.configure_logging(settings)
    runtime.announce_kafka(settings, "poll-prometheus")
    log = telemetry.get_logger("poll.prometheus")
    serde = runtime.serde(settings)
    producer = track(Producer(producer_config(settings)))
    topic = settings.topic(ALERTS_RAW)

    def publish(alerts: list[Any]) -> None:
        publish_batch(producer, [encoded(serde, topic, a.fingerprint, a) for a in alerts])

    host = args.url.split("://", 1)[-1].strip("/").replace("/", "_").replace(":", "_")
    state = Path(args.state or f".itsm/poll-prometheus-{host}.json")
    try:
        poller = PrometheusPoller(
            args.url,
            publish,
            state,
            include_pending=args.include_pending,
            repeat=args.repeat,
            min_interval=1.0 / args.rate,
            log=log,
        )
    except PollError as exc:
        raise runtime.CommandError(str(exc)) from None
    stop = runtime.stop_on_signals()
    while True:
        try:
            done = poller.poll_once(datetime.now(UTC))
        except PollError as exc:
            if args.once:
                raise runtime.CommandError(f"{exc}; is the URL right and is Prometheus running?") from None
            log.warning("poll_failed", url=args.url, error=str(exc)[:300])
        except (KafkaException, DeliveryError) as exc:
            if args.once:
                raise runtime.kafka_failure(exc) from None
            log.warning("poll_publish_failed", url=args.url, error=str(exc)[:300])  # cursor kept: retried
        else:
            log.info(
                "poll_pass",
                url=args.url,
                firing=done.firing,
                published=done.published,
                resolved=done.resolved,
                skipped=done.skipped,
            )
            if args.once:
                print(
                    f"poll prometheus: {done.firing} firing, {done.published} published, "
                    f"{done.resolved} resolved, {done.skipped} skipped (state {state})"
                )
                return runtime.EXIT_OK
        if stop.wait(args.interval):
            print("poll prometheus: stopped", file=sys.stderr)
            return runtime.EXIT_OK


def register(sub: Any) -> None:
    group = runtime.command(
        sub,
        "poll",
        SUMMARY,
        description="Sources that cannot push are polled. prometheus: GET URL/api/v1/alerts every "
        "--interval seconds; firing alerts (and pending ones with --include-pending) are published to "
        "alerts.raw when new or changed and again every --repeat seconds; an alert published as "
        "firing that the Prometheus no longer lists is published RESOLVED. The cursor (what was "
        "published) is a state file, written only after the broker acknowledged.",
    )
    acts = runtime.actions(group)
    p = runtime.action(
        acts,
        "poll",
        "prometheus",
        "a Prometheus' active alerts onto alerts.raw",
        prometheus,
        description="Poll a Prometheus' active alerts (GET /api/v1/alerts) onto alerts.raw, as source "
        "PROMETHEUS with Alertmanager's fingerprints; resolved when gone.\n\n"
        "  itsmctl poll prometheus http://prometheus:9090\n"
        "  itsmctl poll prometheus http://127.0.0.1:9090 --once --state /var/lib/itsm/prom.json",
    )
    p.add_argument("url", metavar="URL", help="the Prometheus' base URL (https is verified)")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between passes (default 30)")
    p.add_argument("--once", action="store_true", help="one pass, then exit (exit 2 if it fails)")
    p.add_argument("--state", help="the cursor file (default .itsm/poll-prometheus-<host>.json)")
    p.add_argument("--include-pending", action="store_true", help="publish pending alerts too")
    p.add_argument(
        "--repeat", type=float, default=3600.0, help="seconds after which a firing alert is published again"
    )
    p.add_argument(
        "--rate", type=float, default=1.0, help="at most this many requests per second (default 1)"
    )
