"""itsmctl integrations audit|doc|retire: the integration inventory against the live broker."""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ops import runtime

SECTION = "operate"
SUMMARY = "the integration inventory (ops/integrations.toml): audit it, document it, retire one"
DESCRIPTION = """The inventory lists every integration: owner, business service, the ITSM processes it
serves and those it deliberately does not (with the reason), its topics, consumer groups, producers,
broker principals and external endpoints with their API versions, and its status.

  itsmctl integrations audit [-o json]   compare with the live broker: consumer groups, producers
                                         seen in recent records (the itsm.producer header), topics
                                         and ACL principals nobody declared; declared integrations
                                         that are idle; retired ones still live; deprecated or
                                         removed API versions in use. Exit 1 when anything is found.
  itsmctl integrations doc [--out FILE]  the dependency document (who reads and writes what), Markdown
  itsmctl integrations retire NAME       archive the topics only it writes to Avro container files,
                                         delete its consumer groups (refused while a member is
                                         connected), revoke the grants of principals only it uses,
                                         record it in audit.events and mark it retired in the file"""


def _inventory(args: argparse.Namespace) -> Any:
    from ops.acls import Declared
    from ops.integrations import DEFAULT, InventoryError, load

    try:
        return load(Path(args.file) if args.file else DEFAULT, Declared.load().principals)
    except InventoryError as exc:
        raise runtime.CommandError(str(exc)) from None


def _admin(settings: Any) -> Any:
    from confluent_kafka.admin import AdminClient

    from streams.core.kafka import client_config

    runtime.reachable(settings)
    return AdminClient(client_config(settings))


def _environment(settings: Any, inventory: Any) -> dict[str, str]:
    """The ITSM_* settings the endpoints name (their URLs), and the Jira flavour."""
    names = {e.setting for i in inventory.integration for e in i.endpoints if e.setting}
    names.add("ITSM_JIRA_DEPLOYMENT")
    return {n: str(getattr(settings, n.removeprefix("ITSM_").lower(), "") or "") for n in names}


KIND_TEXT = {
    "shadow_group": "shadow consumer group",
    "shadow_producer": "shadow producer",
    "shadow_principal": "shadow principal",
    "shadow_topic": "undeclared topic",
    "dead": "dead integration",
    "retired_live": "retired but live",
    "deprecated_api": "deprecated API",
}


def audit(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from confluent_kafka import KafkaException

    from ops import integrations

    settings = runtime.settings(kafka=True)
    inventory = _inventory(args)
    admin = _admin(settings)
    try:
        live = integrations.gather(settings, admin, sample=args.sample)
    except KafkaException as exc:
        raise runtime.kafka_failure(exc) from None
    found = integrations.audit(
        inventory, live, settings, datetime.now(UTC), _environment(settings, inventory)
    )
    if args.output == "json":
        runtime.print_json(
            {
                "integrations": len(inventory.integration),
                "live": {
                    "consumer_groups": len(live.groups),
                    "topics": len(live.topics),
                    "producers": sorted({p or "" for seen in live.producers.values() for p in seen}),
                    "acls": live.principals is not None,
                },
                "findings": [asdict(f) for f in found],
            }
        )
    else:
        statuses = [i.status for i in inventory.integration]
        print(
            f"{len(statuses)} integrations declared ({statuses.count('active')} active, "
            f"{statuses.count('deprecated')} deprecated, {statuses.count('retired')} retired); the broker "
            f"shows {len(live.groups)} consumer groups and {len(live.producers)} topics with records"
            + ("" if live.principals is not None else " (no authorizer: principals not compared)")
        )
        for f in found:
            owner = f" [{f.integration}]" if f.integration else ""
            print(f"{KIND_TEXT.get(f.kind, f.kind)}: {f.subject}{owner}: {f.detail}")
        if not found:
            print("nothing undeclared, idle or deprecated")
    return runtime.EXIT_PROBLEMS if found else runtime.EXIT_OK


def doc(args: argparse.Namespace) -> int:
    from ops.integrations import document

    settings = runtime.settings()
    text = document(_inventory(args), settings)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text, end="")
    return runtime.EXIT_OK


def retire(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from ops import acls
    from ops.integrations import DEFAULT, set_status

    settings = runtime.settings(kafka=True)
    inventory = _inventory(args)
    target = inventory.get(args.name)
    if target is None:
        names = ", ".join(i.name for i in inventory.integration)
        raise runtime.CommandError(f"no integration {args.name!r} in the inventory (there are: {names})")
    others = [i for i in inventory.live() if i.name != target.name]
    topics = [
        t
        for t in dict.fromkeys([*target.writes, *target.external_writes])
        if not any(t in (*o.writes, *o.external_writes) for o in others)
    ]
    principals = [p for p in target.principals if not any(p in o.principals for o in others)]
    admin = _admin(settings)
    try:
        listed = admin.list_consumer_groups(request_timeout=15).result()
        groups = [
            g.group_id
            for g in listed.valid
            if target.owns_group(g.group_id, settings.app_id)
            and not any(o.owns_group(g.group_id, settings.app_id) for o in others)
        ]
        busy = {}
        if groups:
            for gid, future in admin.describe_consumer_groups(groups, request_timeout=15).items():
                members = [f"{m.client_id}@{m.host}" for m in future.result().members]
                if members:
                    busy[gid] = members
    except KafkaException as exc:
        raise runtime.kafka_failure(exc) from None
    print(f"retire {target.name} ({target.status}, owner {target.owner}):")
    print(f"  archive {', '.join(settings.topic(t) for t in topics) or '(no topic only it writes)'}")
    print(f"  delete consumer groups {', '.join(groups) or '(none on the broker)'}")
    print(f"  revoke the grants of {', '.join(principals) or '(no principal only it uses)'}")
    if busy:
        detail = "; ".join(f"{g}: {', '.join(m)}" for g, m in busy.items())
        print(
            f"integrations retire: its consumers are still connected ({detail}); stop them first",
            file=sys.stderr,
        )
        return runtime.EXIT_PROBLEMS
    if args.dry_run:
        print("(dry run: nothing done)")
        return runtime.EXIT_OK
    folder = Path(args.archive_dir or f"archive/{target.name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
    archived = {t: archive(settings, settings.topic(t), folder) for t in topics}
    revoked: list[Any] = []
    try:
        if groups:
            for future in admin.delete_consumer_groups(groups, request_timeout=15).values():
                future.result()
        if principals:
            mine = {f"User:{p}" for p in principals}
            try:
                existing = acls.current(admin)
            except KafkaException as exc:
                if "SECURITY_DISABLED" not in str(exc) and "No Authorizer" not in str(exc):
                    raise
                existing = set()
                print("  (the broker has no authorizer: no grants to revoke)")
            revoked = sorted(g for g in existing if g.principal in mine)
            acls.execute(admin, acls.Plan(create=[], delete=revoked))
    except KafkaException as exc:
        raise runtime.kafka_failure(exc) from None
    _audited(settings, args.actor or getpass.getuser(), target.name, archived, groups, revoked, folder)
    path = Path(args.file) if args.file else DEFAULT
    marked = set_status(path, target.name, "retired")
    for topic, count in archived.items():
        name = settings.topic(topic)
        print(f"  archived {count} record(s) of {name} to {folder / (name + '.avro')}")
    print(f"  deleted {len(groups)} consumer group(s), revoked {len(revoked)} grant(s)")
    print(
        f"  marked retired in {path}"
        if marked
        else f'  set status = "retired" for {target.name} in {path} yourself'
    )
    return runtime.EXIT_OK


# Each archived record, whatever its topic: the bytes as the broker held them (Avro values stay
# Avro, encrypted fields stay encrypted), with where and when they were.
ARCHIVE_SCHEMA = {
    "type": "record",
    "name": "ArchivedRecord",
    "namespace": "io.itsmpipeline.archive",
    "doc": "One Kafka record as the broker held it, archived when its integration was retired.",
    "fields": [
        {"name": "topic", "type": "string"},
        {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long"},
        {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "key", "type": ["null", "bytes"], "default": None},
        {"name": "value", "type": ["null", "bytes"], "default": None},
        {
            "name": "headers",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Header",
                    "fields": [
                        {"name": "name", "type": "string"},
                        {"name": "value", "type": ["null", "bytes"]},
                    ],
                },
            },
            "default": [],
        },
    ],
}


def archive(settings: Any, topic: str, folder: Path) -> int:
    """Every record of topic into folder/<topic>.avro (an Avro object container file); the count."""
    import fastavro

    from ops.dlq import read_all

    folder.mkdir(parents=True, exist_ok=True)
    schema = fastavro.parse_schema(ARCHIVE_SCHEMA)
    count = 0

    def records() -> Any:
        nonlocal count
        for msg in read_all(settings, topic):
            count += 1
            if count % 10000 == 0:
                print(f"  {topic}: {count} records archived", file=sys.stderr)
            yield {
                "topic": topic,
                "partition": msg.partition(),
                "offset": msg.offset(),
                "timestamp": datetime.fromtimestamp(msg.timestamp()[1] / 1000, UTC),
                "key": msg.key(),
                "value": msg.value(),
                "headers": [{"name": h[0], "value": h[1]} for h in msg.headers() or []],
            }

    with open(folder / f"{topic}.avro", "wb") as out:
        fastavro.writer(out, schema, records(), codec="deflate", metadata={"itsm.topic": topic})
    return count


def _audited(
    settings: Any,
    actor: str,
    name: str,
    archived: dict[str, int],
    groups: list[str],
    revoked: list[Any],
    folder: Path,
) -> None:
    from streams.core.models import AuditEvent, AuditOutcome

    now = datetime.now(UTC)
    event = AuditEvent(
        event_id=f"integration.retired-{name}-{int(now.timestamp() * 1000)}",
        occurred_at=now,
        actor=actor,
        action="integration.retired",
        subject_type="integration",
        subject_id=name,
        outcome=AuditOutcome.DONE,
        reason="",
        details={
            "archived": ",".join(f"{t}={n}" for t, n in archived.items()),
            "archive_dir": str(folder),
            "consumer_groups": ",".join(groups),
            "revoked": ";".join(str(g) for g in revoked),
        },
    )
    runtime.publish_audit(settings, [(name, event)], "retired, but its audit record could not be written")


def register(sub: Any) -> None:
    group = runtime.command(sub, "integrations", SUMMARY, description=DESCRIPTION)
    acts = runtime.actions(group)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--file", help="the inventory (default ops/integrations.toml)")

    p = runtime.action(
        acts, "integrations", "audit", "compare the inventory with the live broker; exit 1 on findings", audit
    )
    common(p)
    p.add_argument(
        "--sample",
        type=runtime.int_between(1, 100000),
        default=200,
        help="newest records read per partition to see who produces (default 200)",
    )
    runtime.add_output(p)
    p = runtime.action(acts, "integrations", "doc", "the dependency document, Markdown", doc)
    common(p)
    p.add_argument("--out", help="write it to this file instead of standard output")
    p = runtime.action(
        acts,
        "integrations",
        "retire",
        "archive, stop and revoke one integration, and mark it retired",
        retire,
    )
    p.add_argument("name", metavar="NAME", help="the integration's name in the inventory")
    common(p)
    p.add_argument("--archive-dir", help="where the Avro archives go (default archive/NAME-<UTC time>)")
    p.add_argument("--dry-run", action="store_true", help="print what would be done, do nothing")
    p.add_argument("--actor", help="who does it, for the audit record (default: your login name)")
