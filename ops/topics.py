"""Apply the declared topics to a cluster: create what is missing, alter what drifted, report all."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from streams.core.topics import TopicSpec


@dataclass(frozen=True)
class TopicState:
    """One declared topic compared with the cluster."""

    name: str
    action: str  # ok | created | altered | missing | drifted | cannot-fix
    detail: str = ""


def _actual(
    admin: AdminClient, names: list[str], timeout: float
) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    meta = admin.list_topics(timeout=timeout)
    partitions = {n: len(meta.topics[n].partitions) for n in names if n in meta.topics}
    configs: dict[str, dict[str, str]] = {}
    if partitions:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in partitions]
        for res, fut in admin.describe_configs(resources, request_timeout=timeout).items():
            configs[res.name] = {k: v.value for k, v in fut.result().items()}
    return partitions, configs


def _wait_visible(
    admin: AdminClient,
    names: list[str],
    partitions: dict[str, int],
    configs: dict[str, dict[str, str]],
    timeout: float,
) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    """Re-read metadata until the named topics show (metadata reaches brokers asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        more_partitions, more_configs = _actual(admin, names, timeout)
        if set(names) <= set(more_partitions) or time.monotonic() > deadline:
            return {**partitions, **more_partitions}, {**configs, **more_configs}
        time.sleep(0.2)


def _diff(spec: TopicSpec, partitions: int, config: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    want = spec.configs()
    drift = {k: v for k, v in want.items() if config.get(k) != v}
    notes = [f"{k}: {config.get(k)} -> {v}" for k, v in drift.items()]
    if partitions < spec.partitions:
        notes.append(f"partitions: {partitions} -> {spec.partitions}")
    return drift, notes


def inspect(admin: AdminClient, specs: Iterable[TopicSpec], timeout: float = 15.0) -> list[TopicState]:
    """Declared versus actual, changing nothing."""
    specs = list(specs)
    partitions, configs = _actual(admin, [s.name for s in specs], timeout)
    out = []
    for spec in specs:
        if spec.name not in partitions:
            out.append(TopicState(spec.name, "missing", f"declared {spec.partitions} partitions"))
            continue
        _, notes = _diff(spec, partitions[spec.name], configs[spec.name])
        if partitions[spec.name] > spec.partitions:
            notes.append(
                f"has {partitions[spec.name]} partitions, declared {spec.partitions} (cannot shrink)"
            )
        out.append(
            TopicState(
                spec.name,
                "drifted" if notes else "ok",
                "; ".join(notes) or f"{partitions[spec.name]} partitions, {spec.configs()['cleanup.policy']}",
            )
        )
    return out


def apply(
    admin: AdminClient, specs: Iterable[TopicSpec], replication: int = 1, timeout: float = 30.0
) -> list[TopicState]:
    """Make the cluster match the declaration as far as Kafka allows; idempotent."""
    specs = list(specs)
    partitions, configs = _actual(admin, [s.name for s in specs], timeout)
    out: list[TopicState] = []
    missing = [s for s in specs if s.name not in partitions]
    existed: list[str] = []
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, s.partitions, replication, config=s.configs()) for s in missing],
            request_timeout=timeout,
            operation_timeout=timeout,
        )
        for spec in missing:
            try:
                futures[spec.name].result()
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
                # Our metadata was stale (the topic was just made): check it like any other.
                existed.append(spec.name)
                continue
            out.append(
                TopicState(
                    spec.name, "created", f"{spec.partitions} partitions, {spec.configs()['cleanup.policy']}"
                )
            )
    if existed:
        partitions, configs = _wait_visible(admin, existed, partitions, configs, timeout)
    created = {o.name for o in out}
    for spec in specs:
        if spec.name not in partitions or spec.name in created:
            continue
        drift, notes = _diff(spec, partitions[spec.name], configs[spec.name])
        if drift:
            res = ConfigResource(
                ConfigResource.Type.TOPIC,
                spec.name,
                incremental_configs=[
                    ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in drift.items()
                ],
            )
            for fut in admin.incremental_alter_configs([res], request_timeout=timeout).values():
                fut.result()
        if partitions[spec.name] < spec.partitions:
            for fut in admin.create_partitions(
                [NewPartitions(spec.name, spec.partitions)], request_timeout=timeout
            ).values():
                fut.result()
        if partitions[spec.name] > spec.partitions:
            out.append(
                TopicState(
                    spec.name,
                    "cannot-fix",
                    f"has {partitions[spec.name]} partitions, declared {spec.partitions}: "
                    "Kafka cannot shrink a topic",
                )
            )
        elif notes:
            out.append(TopicState(spec.name, "altered", "; ".join(notes)))
        else:
            out.append(TopicState(spec.name, "ok", "matches the declaration"))
    return out
