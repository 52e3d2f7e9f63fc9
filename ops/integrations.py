"""The integration inventory (ops/integrations.toml): what is declared, what the live broker shows
(consumer groups, producers seen in recent records, topics, ACL principals), the difference
(audit), the dependency document (doc) and retirement (retire)."""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streams.core.settings import Settings

DEFAULT = Path(__file__).resolve().parent / "integrations.toml"
DEFAULT_IDLE = 7 * 86400.0

# API versions their vendors removed or deprecated, with the page that says so. An endpoint
# declared with one of these, or configured so that our client would call one, is reported.
DEPRECATED: dict[tuple[str, str], str] = {
    ("jira-cloud-rest", "2-search"): (
        "Jira Cloud removed GET/POST /rest/api/{2,3}/search (it answers 410 Gone); use "
        "/rest/api/3/search/jql (developer.atlassian.com/changelog/#CHANGE-2046)"
    ),
    ("alertmanager-api", "v1"): (
        "Alertmanager removed API v1 in 0.27.0; use /api/v2 (github.com/prometheus/alertmanager "
        "CHANGELOG, 0.27.0)"
    ),
}


class InventoryError(ValueError):
    """The inventory file is missing or invalid; the message names the file and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Endpoint(_Strict):
    name: str
    direction: Literal["in", "out"]
    api: str
    version: str
    setting: str | None = None  # the ITSM_* setting holding its URL, when it is one of ours
    url: str | None = None


class Integration(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    owner: str
    business_service: str
    status: Literal["active", "deprecated", "retired"] = "active"
    serves: list[str] = Field(min_length=1)
    excludes: dict[str, str] = Field(default_factory=dict)  # ITSM process -> why not
    reads: list[str] = Field(default_factory=list)
    writes: list[str] = Field(default_factory=list)
    external_writes: list[str] = Field(default_factory=list)
    consumer_groups: list[str] = Field(default_factory=list)
    producers: list[str] = Field(default_factory=list)
    principals: list[str] = Field(default_factory=list)
    endpoints: list[Endpoint] = Field(default_factory=list)
    idle_after: float = Field(DEFAULT_IDLE, gt=0)  # seconds without activity before it counts as dead

    @model_validator(mode="after")
    def _excluded_not_served(self) -> Integration:
        both = sorted(set(self.excludes) & set(self.serves))
        if both:
            raise ValueError(f"{self.name}: {both} both served and excluded")
        return self

    @property
    def live(self) -> bool:
        return self.status != "retired"

    def group_patterns(self, app_id: str) -> list[str]:
        return [g.format(app_id=app_id) for g in self.consumer_groups]

    def owns_group(self, group: str, app_id: str) -> bool:
        return any(fnmatch.fnmatchcase(group, p) for p in self.group_patterns(app_id))


class Inventory(_Strict):
    version: int
    integration: list[Integration] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Inventory:
        names = [i.name for i in self.integration]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"integrations named twice: {twice}")
        return self

    def get(self, name: str) -> Integration | None:
        return next((i for i in self.integration if i.name == name), None)

    def live(self) -> list[Integration]:
        return [i for i in self.integration if i.live]


def load(path: Path = DEFAULT, acl_principals: Iterable[str] | None = None) -> Inventory:
    """Read and check the inventory: valid, every topic declared (streams/core/topics.py), every
    principal in ops/acls.toml."""
    from streams.core.topics import declared

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InventoryError(f"inventory {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{path}: not valid TOML: {exc}") from None
    try:
        inventory = Inventory.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise InventoryError(f"{path}: {problems}") from None
    topics = {t.name for t in declared()}
    principals = set(acl_principals) if acl_principals is not None else None
    for i in inventory.integration:
        unknown = sorted({*i.reads, *i.writes, *i.external_writes} - topics)
        if unknown:
            raise InventoryError(
                f"{path}: {i.name}: topics not declared in streams/core/topics.py: {unknown}"
            )
        if principals is not None and set(i.principals) - principals:
            missing = sorted(set(i.principals) - principals)
            raise InventoryError(f"{path}: {i.name}: principals not in ops/acls.toml: {missing}")
    return inventory


# --- what the broker shows --------------------------------------------------------------------


@dataclass
class Live:
    """What the broker shows: groups (id -> state, member client ids), topics, the producers seen
    in the newest records of each topic (topic -> producer name or None -> newest record time),
    and the principals with grants (None: the broker has no authorizer)."""

    groups: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    topics: set[str] = field(default_factory=set)
    producers: dict[str, dict[str | None, datetime]] = field(default_factory=dict)
    principals: set[str] | None = None


@dataclass(frozen=True, order=True)
class Finding:
    # shadow_group, shadow_producer, shadow_principal, shadow_topic, dead, deprecated_api, retired_live
    kind: str
    subject: str
    integration: str
    detail: str


def audit(
    inventory: Inventory,
    live: Live,
    settings: Settings,
    now: datetime,
    environment: dict[str, str] | None = None,
) -> list[Finding]:
    """Shadow integrations (live but undeclared), dead ones (declared, idle), retired ones still
    live, and deprecated or removed API versions in use."""
    app_id, prefix = settings.app_id, settings.topic_prefix
    active = inventory.live()
    out: list[Finding] = []
    for group, (state, members) in sorted(live.groups.items()):
        owners = [i for i in inventory.integration if i.owns_group(group, app_id)]
        who = f"{state.lower()}, members {', '.join(sorted(set(members))) or 'none'}"
        if not owners:
            out.append(Finding("shadow_group", group, "", f"consumer group nobody declared ({who})"))
        elif not any(i.live for i in owners) and members:
            out.append(Finding("retired_live", group, owners[0].name, f"retired, still consuming ({who})"))
    producers = {p: i for i in inventory.integration for p in i.producers}
    external = {prefix + t for i in active for t in i.external_writes}
    for topic, seen in sorted(live.producers.items()):
        for name, at in sorted(seen.items(), key=lambda kv: kv[0] or ""):
            if name is None:
                if topic not in external:
                    out.append(
                        Finding(
                            "shadow_producer",
                            topic,
                            "",
                            "records without an itsm.producer header (newest "
                            f"{at.isoformat(timespec='seconds')}) on a topic no integration declares "
                            "as an external write",
                        )
                    )
                continue
            owner = producers.get(name)
            if owner is None:
                out.append(Finding("shadow_producer", topic, "", f"producer {name!r} nobody declared"))
            elif not owner.live:
                out.append(
                    Finding("retired_live", topic, owner.name, f"retired, producer {name!r} still writes")
                )
    if live.principals is not None:
        declared = {p for i in inventory.integration for p in i.principals} | {"admin"}
        for principal in sorted(live.principals - declared):
            out.append(Finding("shadow_principal", principal, "", "has grants but belongs to no integration"))
    used = {prefix + t for i in inventory.integration for t in (*i.reads, *i.writes, *i.external_writes)}
    for topic in sorted(live.topics):
        if not topic.startswith(prefix) or topic.startswith("__") or topic.startswith(f"{app_id}-"):
            continue  # another prefix's, the broker's own, or Faust's changelogs
        if topic not in used:
            out.append(Finding("shadow_topic", topic, "", "topic no integration reads or writes"))
    for i in active:
        if i.status == "active":
            idle = _idle(i, live, app_id, prefix, now)
            if idle is not None:
                out.append(Finding("dead", i.name, i.name, idle))
        for problem in deprecated(i, environment or {}):
            out.append(Finding("deprecated_api", problem[0], i.name, problem[1]))
    return sorted(out)


def _idle(i: Integration, live: Live, app_id: str, prefix: str, now: datetime) -> str | None:
    """Why an active integration looks dead, or None when something shows it working (or it
    declares nothing the broker could show)."""
    groups = [g for g in live.groups if i.owns_group(g, app_id)]
    if any(live.groups[g][1] for g in groups):
        return None  # a member is consuming
    newest: datetime | None = None
    for topic, seen in live.producers.items():
        for name, at in seen.items():
            mine = (
                name in i.producers if name is not None else topic in {prefix + t for t in i.external_writes}
            )
            if mine and (newest is None or at > newest):
                newest = at
    if newest is not None and (now - newest).total_seconds() <= i.idle_after:
        return None
    evidence = [g for g in i.consumer_groups if "-view-" not in g and ".peek-" not in g]
    if not evidence and not i.producers and not i.external_writes:
        return None
    last = f"last record {newest.isoformat(timespec='seconds')}" if newest else "no record seen"
    return f"no consuming member in {evidence or 'its groups'} and {last} (idle_after {i.idle_after:.0f}s)"


def deprecated(i: Integration, environment: dict[str, str]) -> Iterator[tuple[str, str]]:
    """(endpoint, why) for each endpoint of i on a deprecated or removed API version, declared or
    as configured (a Jira Data Center search against a Jira Cloud site)."""
    for e in i.endpoints:
        why = DEPRECATED.get((e.api, e.version))
        if why:
            yield e.name, f"{e.api} {e.version}: {why}"
        url = e.url or (environment.get(e.setting, "") if e.setting else "")
        host = urlsplit(url).hostname or ""
        if e.api.startswith("jira") and host.endswith(".atlassian.net"):
            flavour = environment.get("ITSM_JIRA_DEPLOYMENT", "cloud")
            if e.api == "jira-datacenter-rest" or flavour != "cloud":
                yield (
                    e.name,
                    f"{host} is Jira Cloud but the sink is set up for Data Center "
                    f"(ITSM_JIRA_DEPLOYMENT={flavour}), whose search /rest/api/2/search Jira Cloud "
                    "removed (410 Gone); set ITSM_JIRA_DEPLOYMENT=cloud "
                    "(developer.atlassian.com/changelog/#CHANGE-2046)",
                )


def gather(settings: Settings, admin: Any, sample: int = 200, timeout: float = 15.0) -> Live:
    """The live facts: consumer groups with their members, the topics, the producers of each
    topic's newest `sample` records per partition, the principals with grants."""
    from confluent_kafka import KafkaException

    from ops.acls import current
    from streams.core.kafka import PRODUCER_HEADER

    live = Live()
    listed = admin.list_consumer_groups(request_timeout=timeout).result()
    ids = [g.group_id for g in listed.valid]
    if ids:
        for gid, future in admin.describe_consumer_groups(ids, request_timeout=timeout).items():
            d = future.result()
            members = [m.client_id for m in d.members]
            live.groups[gid] = (d.state.name, members)
    metadata = admin.list_topics(timeout=timeout)
    live.topics = set(metadata.topics)
    prefix = settings.topic_prefix
    for topic in sorted(t for t in live.topics if t.startswith(prefix) and not t.startswith("__")):
        if topic.startswith(f"{settings.app_id}-"):
            continue
        seen: dict[str | None, datetime] = {}
        for msg in _newest(settings, topic, list(metadata.topics[topic].partitions), sample):
            name = next((v.decode() for k, v in msg.headers() or [] if k == PRODUCER_HEADER and v), None)
            at = datetime.fromtimestamp(msg.timestamp()[1] / 1000, UTC)
            if name not in seen or at > seen[name]:
                seen[name] = at
        if seen:
            live.producers[topic] = seen
    try:
        live.principals = {g.principal.removeprefix("User:") for g in current(admin, timeout)}
    except KafkaException as exc:
        if "SECURITY_DISABLED" not in str(exc) and "No Authorizer" not in str(exc):
            raise
        live.principals = None  # a broker without an authorizer: there are no grants to compare
    return live


def _newest(settings: Settings, topic: str, partitions: list[int], sample: int) -> Iterator[Any]:
    """The newest `sample` records of each partition (headers and timestamps are what we need)."""
    from confluent_kafka import TopicPartition

    from streams.core.kafka import reader

    consumer = reader(settings, "integrations")
    try:
        ends: dict[int, int] = {}
        assign = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                assign.append(TopicPartition(topic, p, max(low, high - sample)))
        if not assign:
            return
        consumer.assign(assign)
        idle = 0
        while ends and idle < 10:
            msg = consumer.poll(1.0)
            if msg is None:
                idle += 1
                continue
            if msg.error() is not None:
                continue
            part, offset = msg.partition() or 0, msg.offset() or 0
            yield msg
            if offset + 1 >= ends.get(part, 0):
                ends.pop(part, None)
    finally:
        consumer.close()


# --- the dependency document -------------------------------------------------------------------


def document(inventory: Inventory, settings: Settings) -> str:
    """Markdown: each integration with its owner and purpose, and who reads and writes each topic."""
    lines = [
        "# Integration dependencies",
        "",
        f"Generated from ops/integrations.toml (version {inventory.version}) by `itsmctl integrations doc`; "
        f"topic prefix {settings.topic_prefix!r}, app id {settings.app_id!r}.",
        "",
        "## Integrations",
        "",
        "| integration | status | owner | business service | serves | excludes (why) | principals "
        "| endpoints |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i in inventory.integration:
        excludes = "; ".join(f"{k} ({v})" for k, v in i.excludes.items()) or "-"
        endpoints = "; ".join(f"{e.name} ({e.direction}: {e.api} {e.version})" for e in i.endpoints) or "-"
        lines.append(
            f"| {i.name} | {i.status} | {i.owner} | {i.business_service} | {', '.join(i.serves)} | "
            f"{excludes} | {', '.join(i.principals) or '-'} | {endpoints} |"
        )
    lines += [
        "",
        "## Topics: who writes and who reads",
        "",
        "| topic | written by | read by |",
        "|---|---|---|",
    ]
    topics = sorted({t for i in inventory.integration for t in (*i.reads, *i.writes, *i.external_writes)})
    for t in topics:
        writers = [
            i.name + ("" if i.live else " (retired)")
            for i in inventory.integration
            if t in (*i.writes, *i.external_writes)
        ]
        readers = [i.name + ("" if i.live else " (retired)") for i in inventory.integration if t in i.reads]
        lines.append(f"| {settings.topic(t)} | {', '.join(writers) or '-'} | {', '.join(readers) or '-'} |")
    lines += ["", "## Consumer groups", "", "| group | integration |", "|---|---|"]
    for i in inventory.integration:
        for g in i.group_patterns(settings.app_id):
            lines.append(f"| {g} | {i.name} |")
    return "\n".join(lines) + "\n"


def set_status(path: Path, name: str, status: str) -> bool:
    """Rewrite the status line of one [[integration]] block in place (comments kept); False when
    the block has no status line to change."""
    text = path.read_text(encoding="utf-8")
    blocks = text.split("[[integration]]")
    for n, block in enumerate(blocks[1:], start=1):
        lines = block.split("\n")
        if not any(line.strip() == f'name = "{name}"' for line in lines):
            continue
        for k, line in enumerate(lines):
            if line.strip().startswith("status ="):
                lines[k] = f'status = "{status}"'
                blocks[n] = "\n".join(lines)
                path.write_text("[[integration]]".join(blocks), encoding="utf-8")
                return True
    return False
