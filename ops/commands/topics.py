"""itsmctl topics: apply the declared topics, or compare them with the cluster."""

from __future__ import annotations

import argparse
from typing import Any

from ops import runtime

SECTION = "run the pipeline"
SUMMARY = "apply or list the declared topics"
PROBLEMS = ("missing", "drifted", "cannot-fix")


def _run(args: argparse.Namespace, change: bool) -> int:
    from confluent_kafka.admin import AdminClient

    from ops import topics
    from streams.core.kafka import client_config
    from streams.core.topics import declared

    settings = runtime.settings(kafka=True)
    admin = AdminClient(client_config(settings))
    specs = list(declared(settings.topic_prefix))
    if change:
        states = topics.apply(admin, specs, settings.topic_replication)
    else:
        states = topics.inspect(admin, specs)
    if args.output == "json":
        runtime.print_json([{"topic": s.name, "state": s.action, "detail": s.detail} for s in states])
    else:
        width = max(len(s.name) for s in states)
        for s in states:
            print(f"{s.name:<{width}}  {s.action:<10}  {s.detail}")
    bad = [s for s in states if s.action in PROBLEMS]
    return runtime.EXIT_PROBLEMS if bad else runtime.EXIT_OK


def apply(args: argparse.Namespace) -> int:
    return _run(args, change=True)


def list_topics(args: argparse.Namespace) -> int:
    return _run(args, change=False)


def register(sub: Any) -> None:
    group = runtime.command(
        sub, "topics", SUMMARY, description="Topics are declared once, in streams/core/topics.py."
    )
    acts = runtime.actions(group)
    p = runtime.action(
        acts,
        "topics",
        "apply",
        "create missing topics, alter drifted configs, add missing partitions (idempotent); "
        "exit 1 if one could not be fixed",
        apply,
    )
    runtime.add_output(p)
    p = runtime.action(
        acts, "topics", "list", "declared vs actual; exit 1 on any missing or drifted topic", list_topics
    )
    runtime.add_output(p)
