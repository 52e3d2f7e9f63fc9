"""The broker's ACLs from ops/acls.toml: what each principal is granted, what the cluster has, the
difference (apply) and what nobody declared (audit). Grants are ALLOW from any host; the
authorizer denies whatever no grant allows."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.core.settings import Settings
from streams.core.topics import declared

DEFAULT = Path(__file__).resolve().parent / "acls.toml"
# What each kind of entry grants.
TOPIC_OPERATIONS: Mapping[str, tuple[str, ...]] = {
    "read": ("READ", "DESCRIBE"),
    "write": ("WRITE", "DESCRIBE"),
    "own": ("CREATE", "READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS"),
    "describe": ("DESCRIBE",),
}
GROUP_OPERATIONS: Mapping[str, tuple[str, ...]] = {
    "groups": ("READ", "DESCRIBE"),
    "describe_groups": ("DESCRIBE",),
}
KEYS = {"description", *TOPIC_OPERATIONS, *GROUP_OPERATIONS}


class AclsError(ValueError):
    """The ACL file is missing or invalid; the message names the file and the problem."""


@dataclass(frozen=True, order=True)
class Grant:
    principal: str  # "User:worker"
    resource: str  # TOPIC or GROUP
    name: str
    pattern: str  # LITERAL or PREFIXED
    operation: str

    def __str__(self) -> str:
        star = "*" if self.pattern == "PREFIXED" else ""
        return f"{self.principal} {self.operation} {self.resource.lower()} {self.name}{star}"


@dataclass
class Declared:
    """The principals of an ACL file, as written."""

    principals: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = DEFAULT) -> Declared:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AclsError(f"ACL file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise AclsError(f"{path}: not valid TOML: {exc}") from None
        known = {t.name for t in declared()}
        principals = data.get("principals") or {}
        if not principals:
            raise AclsError(f"{path}: no [principals.<name>] entries")
        for name, entry in principals.items():
            unknown = set(entry) - KEYS
            if unknown:
                raise AclsError(f"{path}: {name}: unknown keys {sorted(unknown)}; known: {sorted(KEYS)}")
            for kind in TOPIC_OPERATIONS:
                for topic in entry.get(kind, []):
                    base = topic.rstrip("*")
                    if "{" not in topic and base not in known and not topic.endswith("*"):
                        raise AclsError(f"{path}: {name}: {kind} names {topic!r}, which is no declared topic")
        return cls(principals)

    def grants(self, settings: Settings) -> set[Grant]:
        """Every grant the file declares, with the topic prefix and app id filled in."""
        out: set[Grant] = set()
        for name, entry in self.principals.items():
            principal = f"User:{name}"
            for kind, operations in TOPIC_OPERATIONS.items():
                for topic in entry.get(kind, []):
                    resolved, pattern = _resolve(topic, settings, prefixed_topic=True)
                    out.update(Grant(principal, "TOPIC", resolved, pattern, op) for op in operations)
            for kind, operations in GROUP_OPERATIONS.items():
                for group in entry.get(kind, []):
                    resolved, pattern = _resolve(group, settings, prefixed_topic=False)
                    out.update(Grant(principal, "GROUP", resolved, pattern, op) for op in operations)
        return out


def _resolve(text: str, settings: Settings, prefixed_topic: bool) -> tuple[str, str]:
    pattern = "PREFIXED" if text.endswith("*") else "LITERAL"
    text = text.rstrip("*")
    if "{" in text:
        return text.format(app_id=settings.app_id), pattern
    return (settings.topic(text) if prefixed_topic else text), pattern


class NotAdministrator(RuntimeError):
    """The principal may not describe and alter the cluster's grants and credentials."""


def require_administrator(admin: Any, timeout: float = 15.0) -> None:
    """NotAdministrator unless this client may DESCRIBE and ALTER the cluster (what describing and
    changing ACLs and SCRAM credentials need). Asked first, because confluent-kafka 2.16 corrupts
    memory when a refused describe_user_scram_credentials is freed (the process aborts)."""
    from confluent_kafka.admin import AclOperation

    cluster = admin.describe_cluster(include_authorized_operations=True, request_timeout=timeout).result()
    allowed = set(cluster.authorized_operations or [])
    if not {AclOperation.DESCRIBE, AclOperation.ALTER} <= allowed:
        raise NotAdministrator("this principal may not describe and alter the cluster")


def current(admin: Any, timeout: float = 15.0) -> set[Grant]:
    """Every ALLOW grant the cluster has (DENY grants are reported by audit as undeclared too)."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    wanted = AclBindingFilter(  # None: any name, principal, host
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.ANY,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    bindings = admin.describe_acls(wanted, request_timeout=timeout).result()
    return {
        Grant(
            b.principal,
            b.restype.name,
            b.name,
            b.resource_pattern_type.name,
            b.operation.name if b.permission_type.name == "ALLOW" else f"DENY_{b.operation.name}",
        )
        for b in bindings
    }


def _binding(grant: Grant) -> Any:
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    return AclBinding(
        ResourceType[grant.resource],
        grant.name,
        ResourcePatternType[grant.pattern],
        grant.principal,
        "*",
        AclOperation[grant.operation],
        AclPermissionType.ALLOW,
    )


def _filter(grant: Grant) -> Any:
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    denied = grant.operation.startswith("DENY_")
    return AclBindingFilter(
        ResourceType[grant.resource],
        grant.name,
        ResourcePatternType[grant.pattern],
        grant.principal,
        None,  # type: ignore[arg-type]  # any host
        AclOperation[grant.operation.removeprefix("DENY_")],
        AclPermissionType.DENY if denied else AclPermissionType.ALLOW,
    )


@dataclass
class Plan:
    create: list[Grant]
    delete: list[Grant]


def plan(declared_grants: set[Grant], existing: set[Grant], principals: Iterable[str]) -> Plan:
    """What makes the cluster match the file for its principals (others are audit's business)."""
    mine = {f"User:{p}" for p in principals}
    return Plan(
        create=sorted(declared_grants - existing),
        delete=sorted(g for g in existing - declared_grants if g.principal in mine),
    )


def execute(admin: Any, todo: Plan, timeout: float = 15.0) -> None:
    if todo.create:
        for future in admin.create_acls([_binding(g) for g in todo.create], request_timeout=timeout).values():
            future.result()
    if todo.delete:
        for future in admin.delete_acls([_filter(g) for g in todo.delete], request_timeout=timeout).values():
            future.result()


@dataclass
class Findings:
    undeclared_grants: list[Grant]  # on the cluster, in no declaration
    undeclared_principals: list[str]  # with grants or SCRAM credentials, not in the file
    missing_grants: list[Grant]  # declared, not on the cluster (apply has not run)

    @property
    def clean(self) -> bool:
        return not (self.undeclared_grants or self.undeclared_principals or self.missing_grants)


def audit(
    declared_grants: set[Grant], existing: set[Grant], principals: Iterable[str], users: Iterable[str]
) -> Findings:
    names = set(principals)
    seen = {g.principal.removeprefix("User:") for g in existing} | set(users)
    return Findings(
        undeclared_grants=sorted(existing - declared_grants),
        undeclared_principals=sorted(seen - names - {"admin"}),
        missing_grants=sorted(declared_grants - existing),
    )


def scram_users(admin: Any, timeout: float = 15.0) -> list[str]:
    described = admin.describe_user_scram_credentials(request_timeout=timeout)
    result = (
        described.result() if hasattr(described, "result") else {u: f.result() for u, f in described.items()}
    )
    return sorted(result)
