"""Who is who in an ITSM: identities from monitoring, CI/CD and gate callers mapped to ITSM users.

A change request names who asked for it (`requested_by`): a gate caller's principal
(`release-bot`), the person or automation that started a deployment (`jane.doe@example.com`,
`github-actions`), or the system that sent a CI update. An ITSM's user field takes only its own
users, so each identity goes through, in order:

1. the mapping table (`ITSM_IDENTITIES_FILE`, TOML; reread when it changes):

       integration_user = "itsm.pipeline"     # what an identity nobody knows becomes
       [users]
       "jane.doe@example.com" = "jane.doe"
       "release-bot" = "svc.release"
       [targets.servicenow]                   # per target, over the above
       integration_user = "svc.itsm"
       [targets.servicenow.users]
       "github-actions" = "svc.github"

2. the ITSM's own users, looked up and cached (ServiceNow: `sys_user` where `user_name` or
   `email` is the identity);
3. else the integration user (the table's, or the sink's own account): the record gets a user
   that exists, the original identity is written into the record's description, and the
   identity is counted as unmapped.

Each outcome is counted in `itsm_pipeline_identities_total{target,field,outcome}` (mapped: from the
table; found: the ITSM knew it; unmapped: the integration user stood in). The original stays in
the command on its topic and in the audit record of the gate call that asked.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.core import telemetry
from streams.core.watched import Watched

IDENTITIES = telemetry.Counter(
    "itsm_pipeline_identities_total",
    "Identities a sink wrote into an ITSM user field, by outcome (mapped: by the identities file; "
    "found: the ITSM has such a user; unmapped: the integration user stood in).",
    ["target", "field", "outcome"],
)


class IdentitiesError(ValueError):
    """An identities file that cannot be used."""


def _key(identity: str) -> str:
    # User names and e-mail addresses compare without regard to case in every ITSM we write to.
    return identity.strip().lower()


def _users(origin: str, raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) and v.strip() for v in raw.values()):
        raise IdentitiesError(f"{origin}: [users] maps each identity to an ITSM user name (a string)")
    return {_key(k): v.strip() for k, v in raw.items()}


@dataclass(frozen=True)
class Identities:
    """The mapping table: identity -> ITSM user, globally and per target."""

    users: dict[str, str] = field(default_factory=dict)
    integration_user: str = ""
    targets: dict[str, tuple[dict[str, str], str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, origin: str) -> Identities:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise IdentitiesError(f"{origin}: not TOML: {exc}") from None
        unknown = set(doc) - {"users", "integration_user", "targets"}
        if unknown:
            raise IdentitiesError(f"{origin}: unknown key(s) {', '.join(sorted(unknown))}")
        targets: dict[str, tuple[dict[str, str], str]] = {}
        for name, section in (doc.get("targets") or {}).items():
            if not isinstance(section, dict) or set(section) - {"users", "integration_user"}:
                raise IdentitiesError(f"{origin}: [targets.{name}] takes users and integration_user")
            targets[name] = (
                _users(f"{origin} [targets.{name}]", section.get("users")),
                str(section.get("integration_user", "")),
            )
        return cls(_users(origin, doc.get("users")), str(doc.get("integration_user", "")), targets)

    @classmethod
    def load(cls, path: Path) -> Identities:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise IdentitiesError(f"identities file {path}: {exc.strerror or exc}") from None
        return cls.parse(text, f"identities file {path}")

    def mapped(self, target: str, identity: str) -> str | None:
        """The ITSM user the table names for identity at target, if any."""
        own, _ = self.targets.get(target, ({}, ""))
        return own.get(_key(identity)) or self.users.get(_key(identity))

    def integration(self, target: str, default: str) -> str:
        """The user an unknown identity becomes at target."""
        _, own = self.targets.get(target, ({}, ""))
        return own or self.integration_user or default


NONE = Identities()


class IdentitiesFile:
    """The table from a file reread when it changes, or the empty table without one."""

    def __init__(self, path: str | None) -> None:
        self.watched = (
            Watched(
                Path(path),
                Identities.load,
                errors=(IdentitiesError,),
                interval=1.0,
                what="identities",
                describe=lambda t: {"users": len(t.users), "targets": len(t.targets)},
            )
            if path
            else None
        )

    def get(self) -> Identities:
        return self.watched.get() if self.watched is not None else NONE
