"""itsmctl deploy report: one deployment event onto deploy.events, for pipelines without an Avro
producer."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from typing import Any

from ops import runtime
from streams.core.models import DeployPhase
from streams.core.timeutil import offset_text

SECTION = "change management"
SUMMARY = "report a deployment event (STARTED, SUCCEEDED, FAILED, ROLLED_BACK)"


def report(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from streams.core.kafka import AckedProducer, DeliveryError
    from streams.core.messages import encoded
    from streams.core.models import DeploymentEvent
    from streams.core.topics import DEPLOY_EVENTS

    now = datetime.now(UTC)
    duration = args.duration_ms
    if duration is None and args.started_at:
        started = runtime.when(args.started_at, "--started-at", now)
        assert started is not None
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
            source_zone=offset_text(datetime.now().astimezone()),  # where the pipeline ran
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise runtime.CommandError(f"{first['loc']}: {first['msg']}") from None
    settings = runtime.settings(kafka=True)  # the event's problems first, then Kafka's
    serde = runtime.serde(settings)
    topic = settings.topic(DEPLOY_EVENTS)

    async def send() -> None:
        producer = AckedProducer(settings)
        try:
            await producer.send(*encoded(serde, topic, event.deployment_id, event))
        finally:
            producer.close()

    try:
        asyncio.run(send())
    except DeliveryError as exc:
        raise runtime.CommandError(str(exc)) from None
    print(f"deploy {event.deployment_id}: {event.phase.value} reported to {topic}")
    return runtime.EXIT_OK


def register(sub: Any) -> None:
    group = runtime.command(sub, "deploy", SUMMARY)
    acts = runtime.actions(group)
    p = runtime.action(acts, "deploy", "report", SUMMARY, report)
    p.add_argument("--deployment-id", required=True, help="groups the events of one deployment")
    p.add_argument("--phase", required=True, choices=[ph.value for ph in DeployPhase])
    p.add_argument("--service", required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--change", help="the change this deploy implements, if known")
    p.add_argument("--commit", action="append", help="a commit deployed (repeatable)")
    p.add_argument("--build", help="build number")
    p.add_argument("--pipeline", help="pipeline name or URL")
    p.add_argument("--ci", action="append", help="a CI the deploy touches (repeatable)")
    p.add_argument("--duration-ms", type=int, help="how long it took (finished phases)")
    p.add_argument(
        "--started-at", help="or: when it started (RFC 3339, or an age like 5m); the duration is computed"
    )
    p.add_argument("--failure-reason", help="why it failed or was rolled back")
    p.add_argument("--triggered-by", help="person or automation")
