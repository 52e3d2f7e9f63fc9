"""itsmctl fieldkeys rotate|retire|list|fields: the keys that encrypt the schemas' sensitive fields."""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ops import runtime

SECTION = "operate"
SUMMARY = "keys that encrypt the sensitive fields of records on the broker"
DESCRIPTION = """Fields a schema marks "sensitive": true (free text, user names) are encrypted with
AES-256-GCM before a record reaches a topic, and decrypted by the processes that need them (the
worker, the sinks, change sync). The keys live in one TOML file (ITSM_FIELD_KEYS_FILE, or --file),
readable by the pipeline's account only; the running processes reread it when it changes, so a
rotation needs no restart.

  itsmctl fieldkeys rotate              a new key, made active; older keys stay to decrypt
  itsmctl fieldkeys retire KEY_ID       remove an old key (nothing retained may still use it)
  itsmctl fieldkeys list [-o json]      key ids and which one is active (never key material)
  itsmctl fieldkeys fields              every field the schemas mark sensitive

Rotate writes a new file when there is none (mode 0600). Retire the old key only once every topic
that holds values it encrypted has passed its retention (`itsmctl topics list` shows them), else
those records dead-letter with class `encryption`. The worker's state changelog is compacted:
an alert state last written under the old key keeps it until the alert is seen again. Each
rotation and retirement is an audit.events record (--offline skips it, and says so). Exit 2 when
the file is invalid, the key unknown or active, or the audit record cannot be written (then the
file is left as it was)."""


def _path(args: argparse.Namespace, settings: Any) -> Path:
    path = args.file or settings.field_keys_file
    if not path:
        raise runtime.CommandError("set ITSM_FIELD_KEYS_FILE or give --file")
    return Path(path)


def _audited(args: argparse.Namespace, action: str, subject: str, change: Any) -> Any:
    """Make the change, then its audit record; when the record cannot be written, put the file back."""
    from streams.core.fieldcrypt import FieldCryptError
    from streams.core.models import AuditEvent, AuditOutcome

    settings = runtime.settings()
    path = _path(args, settings)
    before = path.read_bytes() if path.exists() else None
    try:
        result = change(path)
    except FieldCryptError as exc:
        raise runtime.CommandError(str(exc)) from None
    if args.offline:
        print(f"{action} {subject}: not audited (--offline)", file=sys.stderr)
        return result
    now = datetime.now(UTC)
    event = AuditEvent(
        event_id=f"{action}-{subject}-{int(now.timestamp() * 1000)}",
        occurred_at=now,
        actor=args.actor or getpass.getuser(),
        action=action,
        subject_type="field_key",
        subject_id=subject,
        outcome=AuditOutcome.DONE,
        reason="",
        details={"file": str(path)},
    )
    runtime.audit_or_restore(settings, path, before, [(subject, event)])
    return result


def rotate(args: argparse.Namespace) -> int:
    from streams.core import fieldcrypt

    kid, ids = _audited(args, "fieldkey.rotate", "new", fieldcrypt.rotate)
    print(f"key {kid} is active; the file holds {len(ids)} key(s): {', '.join(ids)}")
    return runtime.EXIT_OK


def retire(args: argparse.Namespace) -> int:
    from streams.core import fieldcrypt

    left = _audited(args, "fieldkey.retire", args.key_id, lambda path: fieldcrypt.retire(path, args.key_id))
    print(f"key {args.key_id} removed; left: {', '.join(left)}")
    return runtime.EXIT_OK


def expire(args: argparse.Namespace) -> int:
    """Retire every key older than the personal-data period (rotating first when the active one
    is): what they sealed can no longer be read (crypto-shredding). Meant to run daily."""
    from ops.retention import key_created
    from streams.core import fieldcrypt

    settings = runtime.settings()
    path = _path(args, settings)
    days = args.older_than if args.older_than is not None else settings.personal_data_days
    try:
        active, keys = fieldcrypt.entries(path)
    except fieldcrypt.FieldCryptError as exc:
        raise runtime.CommandError(str(exc)) from None
    if not keys:
        raise runtime.CommandError(
            f"field keys file {path} does not exist (itsmctl fieldkeys rotate makes one)"
        )
    now = datetime.now(UTC)
    old = sorted(
        k for k in keys if (made := key_created(k)) is not None and now - made > timedelta(days=days)
    )
    unknown = sorted(k for k in keys if key_created(k) is None)
    if active in old:
        kid, _ = _audited(args, "fieldkey.rotate", "new", fieldcrypt.rotate)
        print(f"key {active} is older than {days} days: key {kid} is active now")
    for kid in old:
        _audited(args, "fieldkey.retire", kid, lambda p, kid=kid: fieldcrypt.retire(p, kid))
        print(f"key {kid} retired: what it sealed can no longer be read")
    for kid in unknown:
        print(f"key {kid}: its age is unknown (not named by time); retire it yourself once {days} days old")
    if not old:
        print(f"no key older than {days} days")
    return runtime.EXIT_OK


def listing(args: argparse.Namespace) -> int:
    from streams.core.fieldcrypt import FieldCryptError, KeyRing

    settings = runtime.settings()
    path = _path(args, settings)
    try:
        ring = KeyRing.load(path)
    except FieldCryptError as exc:
        raise runtime.CommandError(str(exc)) from None
    if args.output == "json":
        runtime.print_json({"file": str(path), "active": ring.active, "keys": sorted(ring.keys)})
        return runtime.EXIT_OK
    for kid in sorted(ring.keys):
        print(f"{kid}{'  active' if kid == ring.active else ''}")
    return runtime.EXIT_OK


def fields(args: argparse.Namespace) -> int:
    from streams.core.fieldcrypt import FieldCryptError, plan_for

    store = runtime.serde(runtime.settings()).store
    try:
        found = {name: plan_for(raw).fields() for name, raw in sorted(store.expanded.items())}
    except FieldCryptError as exc:
        raise runtime.CommandError(str(exc)) from None
    if args.output == "json":
        runtime.print_json({name: marked for name, marked in found.items() if marked})
        return runtime.EXIT_OK
    for name, marked in found.items():
        if marked:
            short = (f.rsplit(".", 1)[1] if f.startswith(name + ".") else f for f in marked)
            print(f"{name}: {', '.join(short)}")
    return runtime.EXIT_OK


def register(sub: Any) -> None:
    group = runtime.command(sub, "fieldkeys", SUMMARY, description=DESCRIPTION)
    acts = runtime.actions(group)

    def common(p: argparse.ArgumentParser, audited: bool = True) -> None:
        runtime.file_options(p, "ITSM_FIELD_KEYS_FILE", audited)

    p = runtime.action(acts, "fieldkeys", "rotate", "add a new key and make it active", rotate)
    common(p)
    p = runtime.action(acts, "fieldkeys", "retire", "remove an old (not active) key", retire)
    p.add_argument("key_id", metavar="KEY_ID")
    common(p)
    p = runtime.action(
        acts,
        "fieldkeys",
        "expire",
        "retire every key older than the personal-data period (run it daily)",
        expire,
        description="Retire every field key older than --older-than days (default ITSM_PERSONAL_DATA_DAYS), "
        "rotating first when the active key is that old: the personal data those keys sealed (on "
        "alerts.suppressed, audit.events, the DLQs, the worker's tables) can no longer be read "
        "(crypto-shredding). Keys are named by the time they were made. Each rotation and retirement "
        "is audited. Replay dead letters a key sealed before it expires.",
    )
    p.add_argument(
        "--older-than", type=runtime.int_between(1, 3650), metavar="DAYS", help="age limit in days"
    )
    common(p)
    p = runtime.action(acts, "fieldkeys", "list", "key ids and the active one", listing)
    common(p, audited=False)
    runtime.add_output(p)
    p = runtime.action(acts, "fieldkeys", "fields", "the fields the schemas mark sensitive", fields)
    runtime.add_output(p)
