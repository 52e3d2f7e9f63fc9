"""itsmctl acls apply|audit|user: the broker's ACLs and SCRAM principals from ops/acls.toml."""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ops import runtime

SECTION = "operate"
SUMMARY = "the broker's ACLs and principals: apply ops/acls.toml, audit the cluster, set a password"
DESCRIPTION = """One principal per component (gateway, worker, each sink, change and incident sync, gate,
replay tool, status), each granted only what ops/acls.toml declares. Run these as the broker's
administrator (ITSM_KAFKA_SASL_USERNAME=admin and its password file).

  itsmctl acls apply [--dry-run]      make the cluster's grants match the file (idempotent);
                                      each grant made or removed is an audit.events record
  itsmctl acls audit [-o json]        grants nobody declared, principals without a declaration,
                                      declared grants the cluster lacks; exit 1 when any
  itsmctl acls user worker --password-file /etc/itsm/kafka-worker.password
                                      create a principal's SCRAM-SHA-512 credential, or change
                                      it (a rotation: clients reconnect with the new one)

Exit 2 when the file is invalid or the broker refuses (not an administrator, unreachable)."""


def _admin(settings: Any) -> Any:
    """An admin client, once the broker said this principal is its administrator."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from ops.acls import NotAdministrator, require_administrator
    from streams.core.kafka import client_config

    runtime.reachable(settings)
    admin = AdminClient(client_config(settings))
    try:
        require_administrator(admin)
    except NotAdministrator:
        who = settings.kafka_sasl_username or "ANONYMOUS (PLAINTEXT)"
        raise runtime.CommandError(
            f"{who} is not the broker's administrator; run this with ITSM_KAFKA_SASL_USERNAME=admin "
            "and its ITSM_KAFKA_SASL_PASSWORD_FILE"
        ) from None
    except KafkaException as exc:
        raise runtime.kafka_failure(exc) from None
    return admin


def _declared(args: argparse.Namespace) -> Any:
    from ops.acls import DEFAULT, AclsError, Declared

    try:
        return Declared.load(Path(args.file) if args.file else DEFAULT)
    except AclsError as exc:
        raise runtime.CommandError(str(exc)) from None


def _audit_records(settings: Any, actor: str, changes: list[tuple[str, str, dict[str, str]]]) -> None:
    from streams.core.models import AuditEvent, AuditOutcome

    now = datetime.now(UTC)
    events = [
        (
            subject,
            AuditEvent(
                event_id=f"{action}-{i}-{int(now.timestamp() * 1000)}",
                occurred_at=now,
                actor=actor,
                action=action,
                subject_type="kafka_principal",
                subject_id=subject,
                outcome=AuditOutcome.DONE,
                reason="",
                details=details,
            ),
        )
        for i, (action, subject, details) in enumerate(changes)
    ]
    runtime.publish_audit(settings, events, "done, but its audit records could not be written")


def apply(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from ops import acls

    settings = runtime.settings()
    declared = _declared(args)
    admin = _admin(settings)
    try:
        wanted = declared.grants(settings)
        todo = acls.plan(wanted, acls.current(admin), declared.principals)
        for grant in todo.create:
            print(f"+ {grant}")
        for grant in todo.delete:
            print(f"- {grant}")
        if args.dry_run or not (todo.create or todo.delete):
            dry = " (dry run)" if args.dry_run else ""
            print(f"{len(todo.create)} to grant, {len(todo.delete)} to remove{dry}")
            return runtime.EXIT_OK
        acls.execute(admin, todo)
    except KafkaException as exc:
        raise runtime.kafka_failure(exc) from None
    changes = [("acl.grant", g.principal, {"grant": str(g)}) for g in todo.create]
    changes += [("acl.revoke", g.principal, {"grant": str(g)}) for g in todo.delete]
    _audit_records(settings, args.actor or getpass.getuser(), changes)
    print(f"{len(todo.create)} granted, {len(todo.delete)} removed")
    return runtime.EXIT_OK


def audit(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from ops import acls

    settings = runtime.settings()
    declared = _declared(args)
    admin = _admin(settings)
    try:
        found = acls.audit(
            declared.grants(settings), acls.current(admin), declared.principals, acls.scram_users(admin)
        )
    except KafkaException as exc:
        raise runtime.kafka_failure(exc) from None
    if args.output == "json":
        runtime.print_json(
            {
                "undeclared_grants": [str(g) for g in found.undeclared_grants],
                "undeclared_principals": found.undeclared_principals,
                "missing_grants": [str(g) for g in found.missing_grants],
            }
        )
    else:
        for grant in found.undeclared_grants:
            print(f"undeclared grant: {grant}")
        for name in found.undeclared_principals:
            print(f"undeclared principal: {name} (grants or a password, but no [principals.{name}])")
        for grant in found.missing_grants:
            print(f"missing grant: {grant} (run itsmctl acls apply)")
        if found.clean:
            print(f"the cluster matches the file: {len(declared.principals)} principals")
    return runtime.EXIT_OK if found.clean else runtime.EXIT_PROBLEMS


def user(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from ops.kafka.security import scram_user

    settings = runtime.settings()
    declared = _declared(args)
    if args.name not in declared.principals and args.name != "admin":
        raise runtime.CommandError(
            f"{args.name} has no [principals.{args.name}] in the ACL file; declare it first"
        )
    try:
        password = Path(args.password_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise runtime.CommandError(f"cannot read {args.password_file}: {exc.strerror}") from None
    if len(password) < 16:
        raise runtime.CommandError(f"{args.password_file}: a password needs at least 16 characters")
    admin = _admin(settings)
    try:
        scram_user(admin, args.name, password)
    except KafkaException as exc:
        raise runtime.kafka_failure(exc) from None
    _audit_records(settings, args.actor or getpass.getuser(), [("kafka.credential", f"User:{args.name}", {})])
    print(f"SCRAM-SHA-512 credential of {args.name} set", file=sys.stderr)
    return runtime.EXIT_OK


def register(sub: Any) -> None:
    group = runtime.command(sub, "acls", SUMMARY, description=DESCRIPTION)
    acts = runtime.actions(group)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--file", help="the ACL file (default ops/acls.toml)")

    p = runtime.action(acts, "acls", "apply", "make the cluster's grants match the file", apply)
    common(p)
    p.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    p.add_argument("--actor", help="who does it, for the audit records (default: your login name)")
    p = runtime.action(acts, "acls", "audit", "grants and principals nobody declared; exit 1 when any", audit)
    common(p)
    runtime.add_output(p)
    p = runtime.action(acts, "acls", "user", "create or change a principal's SCRAM credential", user)
    p.add_argument("name", help="a principal of the ACL file, e.g. worker")
    p.add_argument(
        "--password-file", required=True, help="a file holding its password (never the command line)"
    )
    common(p)
    p.add_argument("--actor", help="who does it, for the audit record (default: your login name)")
