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
  itsmctl fieldkeys retire KEY_ID       remove an old key once no retained record uses it
  itsmctl fieldkeys list [-o json]      key ids and which one is active (never key material)
  itsmctl fieldkeys fields              every field the schemas mark sensitive

Rotate writes a new file when there is none (mode 0600). Retire reads the retained records first
and keeps the key while any holds a value it sealed (exit 1, naming the topics): once the key is
gone, those records could only dead-letter with class `encryption`. The worker's state changelog
is compacted: an alert state last written under the old key keeps it until the alert is seen
again. `--shred` retires a key anyway, to make what it sealed unreadable on purpose; `expire`
does that by age. Each rotation and retirement is an audit.events record (--offline skips it and
the check, and says so). Exit 2 when the file is invalid, the key unknown or active, a topic of the
deployment cannot be read, or the audit record cannot be written (then the file is left as it
was)."""


def _path(args: argparse.Namespace, settings: Any) -> Path:
    path = args.file or settings.field_keys_file
    if not path:
        raise runtime.CommandError("set ITSM_FIELD_KEYS_FILE or give --file")
    return Path(path)


def _audited(args: argparse.Namespace, action: str, subject: str, change: Any, checked: str = "") -> Any:
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
        details={"file": str(path), **({"checked": checked} if checked else {})},
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

    checked = _unused(args)
    left = _audited(
        args,
        "fieldkey.retire",
        args.key_id,
        lambda path: fieldcrypt.retire(path, args.key_id),
        checked,
    )
    print(f"key {args.key_id} removed; left: {', '.join(left)}")
    return runtime.EXIT_OK


def _unused(args: argparse.Namespace) -> str:
    """Before a key is retired: read the retained records and refuse (exit 1) while any holds a
    value it sealed, naming the topics; what was checked, for the audit record."""
    from ops.retention import SealedScan, sealed_with
    from streams.core import fieldcrypt

    settings = runtime.settings()
    kid = args.key_id
    try:
        active, keys = fieldcrypt.entries(_path(args, settings))
    except fieldcrypt.FieldCryptError as exc:
        raise runtime.CommandError(str(exc)) from None
    if kid not in keys or kid == active:
        return ""  # fieldcrypt.retire refuses it and says why
    if args.shred:
        return "not checked (--shred: what it sealed can no longer be read)"
    if args.offline:
        print(f"key {kid}: retained records not checked (--offline)", file=sys.stderr)
        return "not checked (--offline)"
    runtime.reachable(settings)

    def progress(scan: SealedScan) -> None:
        print(
            f"reading retained records for values key {kid} sealed: {scan.records:,} "
            f"on {scan.topics} topics so far",
            file=sys.stderr,
            flush=True,
        )

    scan = sealed_with(settings, kid, progress)
    if scan.sealed:
        where = ", ".join(f"{topic} ({n:,})" for topic, n in sorted(scan.sealed.items()))
        raise runtime.CommandError(
            f"key {kid} still sealed values in {sum(scan.sealed.values()):,} retained records: {where}; "
            "once it is retired they can never be read or replayed (dead letters of class encryption). "
            "Replay what must be delivered and wait until the rest pass their retention (a worker "
            "table keeps an alert's state until the alert is seen again), or retire it with --shred "
            "to make them unreadable on purpose",
            runtime.EXIT_PROBLEMS,
        )
    print(
        f"key {kid}: {scan.records:,} retained records on {scan.topics} topics read, none holds a "
        "value it sealed",
        file=sys.stderr,
    )
    return f"{scan.records} retained records on {scan.topics} topics read: none sealed with it"


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
    p = runtime.action(
        acts,
        "fieldkeys",
        "retire",
        "remove an old (not active) key once no retained record uses it",
        retire,
        description="Remove an old (not active) key. First every retained record that can hold a "
        "value it sealed is read (this deployment's topics, their dead letters and the worker's "
        "table changelogs; progress on stderr): while one does, the key stays and the command "
        "exits 1 naming the topics and counts, since once the key is gone those values can never "
        "be read or replayed. --shred retires it anyway, to make them unreadable on purpose "
        "(crypto-shredding); --offline does not read the broker (and says so). The retirement is "
        "audited with what was checked.",
    )
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument(
        "--shred",
        action="store_true",
        help="retire it even though retained records hold values it sealed: they become unreadable",
    )
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
