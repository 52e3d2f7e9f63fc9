"""itsmctl tokens issue|rotate|revoke|list|scopes: the bearer tokens of the pipeline's HTTP APIs."""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ops import runtime

SECTION = "operate"
SUMMARY = "bearer tokens with scopes for the gateway, silence API, gate and status service"
DESCRIPTION = """Each caller of the pipeline's HTTP APIs is a principal with its own token and only the
scopes it needs. The tokens file (ITSM_TOKENS_FILE, or --file) stores the SHA-256 of each token,
never the token; a token is printed once, on standard output, when it is made. The running
services reread the file when it changes: no restart. Every issue, rotation and revocation is an
audit.events record naming who did it (--actor, default your login name).

  itsmctl tokens issue prometheus --scope alerts:write:alertmanager > prometheus.token
  itsmctl tokens issue release-bot --scope 'gate:check:payments/*'
  itsmctl tokens rotate prometheus > new.token     old and new tokens both work ...
  itsmctl tokens revoke prometheus --old           ... until the old ones are revoked
  itsmctl tokens revoke prometheus                 the principal is gone
  itsmctl tokens list [-o json]                    principals and scopes (no hashes)
  itsmctl tokens scopes                            every scope and what it allows

A scope is RESOURCE:ACTION (every resource of that kind) or RESOURCE:ACTION:PATTERN, the pattern
shell-style over what a call names: the webhook source (alerts:write:grafana) or the gate call's
service/environment (gate:check:payments/*, gate:bypass:*/production).

--offline changes the file without the audit record (to make the first tokens before the broker
runs); it says so. Exit 2 when the file is invalid, the name unknown or taken, or the audit record
cannot be written (then the file is left as it was)."""


def _path(args: argparse.Namespace, settings: Any) -> Path:
    path = args.file or settings.tokens_file
    if not path:
        raise runtime.CommandError("set ITSM_TOKENS_FILE or give --file")
    return Path(path)


def _event(action: str, name: str, actor: str, details: dict[str, str]) -> Any:
    from streams.core.models import AuditEvent, AuditOutcome

    now = datetime.now(UTC)
    return AuditEvent(
        event_id=f"{action}-{name}-{int(now.timestamp() * 1000)}",
        occurred_at=now,
        actor=actor,
        action=action,
        subject_type="principal",
        subject_id=name,
        outcome=AuditOutcome.DONE,
        reason="",
        details=details,
    )


def _changed(
    settings: Any, path: Path, action: str, name: str, actor: str, offline: bool, change: Any
) -> Any:
    """Make the change, then its audit record; when the record cannot be written, put the file back."""
    from connectors.auth import TokensError

    before = path.read_bytes() if path.exists() else None
    try:
        result = change()
    except TokensError as exc:
        raise runtime.CommandError(str(exc)) from None
    principal = result[1] if isinstance(result, tuple) else result
    details = {"file": str(path), "scopes": " ".join(str(s) for s in principal.scopes)}
    if offline:
        print(f"{action} {name}: not audited (--offline)", file=sys.stderr)
        return result
    runtime.audit_or_restore(settings, path, before, [(name, _event(action, name, actor, details))])
    return result


def issue_audited(
    settings: Any, path: Path, name: str, scopes: list[str], actor: str | None, offline: bool = False
) -> int:
    from connectors import auth

    token, principal = _changed(
        settings,
        path,
        "token.issue",
        name,
        actor or getpass.getuser(),
        offline,
        lambda: auth.issue(path, name, scopes),
    )
    wanted = " ".join(str(s) for s in principal.scopes)
    print(f"{name} added to {path} with {wanted}; its token, shown once:", file=sys.stderr)
    print(token)
    return runtime.EXIT_OK


def issue(args: argparse.Namespace) -> int:
    settings = runtime.settings()
    return issue_audited(
        settings, _path(args, settings), args.name, args.scope or [], args.actor, args.offline
    )


def rotate(args: argparse.Namespace) -> int:
    from connectors import auth

    settings = runtime.settings()
    path = _path(args, settings)
    actor = args.actor or getpass.getuser()
    token, principal = _changed(
        settings, path, "token.rotate", args.name, actor, args.offline, lambda: auth.rotate(path, args.name)
    )
    print(
        f"{args.name} has {len(principal.token_sha256)} tokens now; the new one, shown once "
        f"(revoke the old ones with `itsmctl tokens revoke {args.name} --old` once callers moved):",
        file=sys.stderr,
    )
    print(token)
    return runtime.EXIT_OK


def revoke(args: argparse.Namespace) -> int:
    from connectors import auth

    settings = runtime.settings()
    path = _path(args, settings)
    actor = args.actor or getpass.getuser()
    action = "token.revoke_old" if args.old else "token.revoke"
    _changed(
        settings, path, action, args.name, actor, args.offline, lambda: auth.revoke(path, args.name, args.old)
    )
    print(f"{args.name}: {'every token but the newest' if args.old else 'every token'} revoked in {path}")
    return runtime.EXIT_OK


def listing(args: argparse.Namespace) -> int:
    from connectors.auth import Tokens, TokensError

    settings = runtime.settings()
    path = _path(args, settings)
    try:
        principals = Tokens.load(path).principals
    except TokensError as exc:
        raise runtime.CommandError(str(exc)) from None
    if args.output == "json":
        rows = [
            {"name": p.name, "tokens": len(p.token_sha256), "scopes": [str(s) for s in p.scopes]}
            for p in principals
        ]
        runtime.print_json({"file": str(path), "principals": rows})
        return runtime.EXIT_OK
    width = max(len(p.name) for p in principals)
    for p in principals:
        print(f"{p.name:<{width}}  tokens {len(p.token_sha256)}  {' '.join(map(str, p.scopes))}")
    return runtime.EXIT_OK


def scopes(_: argparse.Namespace) -> int:
    from connectors.auth import SCOPES

    width = max(map(len, SCOPES))
    for scope, what in SCOPES.items():
        print(f"{scope:<{width}}  {what}")
    return runtime.EXIT_OK


def register(sub: Any) -> None:
    group = runtime.command(sub, "tokens", SUMMARY, description=DESCRIPTION)
    acts = runtime.actions(group)

    def common(p: argparse.ArgumentParser, audited: bool = True) -> None:
        runtime.file_options(p, "ITSM_TOKENS_FILE", audited)

    p = runtime.action(acts, "tokens", "issue", "a new principal and its token (printed once)", issue)
    p.add_argument("name", help="the principal, e.g. prometheus-prod or release-bot")
    p.add_argument(
        "--scope", action="append", metavar="SCOPE", help="a scope it gets (repeatable; see `tokens scopes`)"
    )
    common(p)
    p = runtime.action(acts, "tokens", "rotate", "a second token for a principal (printed once)", rotate)
    p.add_argument("name")
    common(p)
    p = runtime.action(acts, "tokens", "revoke", "remove a principal, or with --old its older tokens", revoke)
    p.add_argument("name")
    p.add_argument("--old", action="store_true", help="keep only the newest token: the end of a rotation")
    common(p)
    p = runtime.action(acts, "tokens", "list", "principals, their token counts and scopes", listing)
    common(p, audited=False)
    runtime.add_output(p)
    runtime.action(acts, "tokens", "scopes", "every scope and what it allows", scopes)
