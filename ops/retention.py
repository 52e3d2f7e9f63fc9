"""What the pipeline keeps where, for how long and why, and where personal data outlives its
declared period (itsmctl retention report).

Personal data is what the schemas mark `"sensitive": true` (streams/core/fieldcrypt.py). On a
topic kept longer than ITSM_PERSONAL_DATA_DAYS it may stay readable only that long: it is
encrypted under field keys, and a key older than the period is retired (crypto-shredding: the
records stay, their personal fields can no longer be read)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.core import models as m
from streams.core import topics as t
from streams.core.settings import Settings

DAY_MS = 24 * 60 * 60 * 1000

# The record each topic carries (None: internal bytes without people's data).
TOPIC_RECORDS: dict[str, type[m.Record] | None] = {
    t.ALERTS_RAW: m.Alert,
    t.ALERTS_SUPPRESSED: m.SuppressedAlert,
    t.ALERTS_CORRELATION_SAMPLES: m.CorrelationSample,
    t.ALERTS_TICKS: None,
    t.ALERTS_CI_INCIDENTS: None,
    t.CMDB_CI: m.ConfigurationItem,
    t.CMDB_CI_UPDATES: m.ConfigurationItem,
    t.CMDB_DRIFT: m.CMDBDrift,
    t.CHANGE_REQUESTS: m.ChangeCommand,
    t.CHANGES_TICKS: None,
    t.ITSM_CHANGES: m.ChangeRecord,
    t.ITSM_INCIDENTS: m.IncidentRecord,
    t.GATE_REQUESTS: m.GateRequest,
    t.MAINTENANCE_WINDOWS: m.MaintenanceWindow,
    t.DEPLOY_EVENTS: m.DeploymentEvent,
    t.INCIDENT_COMMANDS: m.IncidentCommand,
    t.CHANGE_COMMANDS: m.ChangeCommand,
    t.ITSM_RESULTS: m.SinkResult,
    t.DLQ_REPLAYS: None,
    t.AUDIT_EVENTS: m.AuditEvent,
    t.RULES: m.RuleSet,
}


@dataclass
class Kept:
    what: str
    where: str
    kept: str  # "7 days", "until deleted (compacted)", ...
    days: float | None  # None: until deleted
    personal: list[str]  # sensitive fields it holds
    why: str


@dataclass
class Report:
    entries: list[Kept] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    keys: dict[str, Any] = field(default_factory=dict)


def _days(ms: int) -> str:
    days = ms / DAY_MS
    return f"{days:g} days" if days >= 1 else f"{ms / 3_600_000:g} hours"


def sensitive_fields(store: Any) -> dict[str, list[str]]:
    """Avro full name -> its sensitive field paths."""
    from streams.core.fieldcrypt import plan_for

    return {name: plan_for(raw).fields() for name, raw in store.expanded.items()}


def key_created(kid: str) -> datetime | None:
    """When a key was made, from its id (itsmctl fieldkeys rotate names keys by time)."""
    try:
        return datetime.strptime(kid.split("-")[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def report(settings: Settings, store: Any, now: datetime) -> Report:
    from streams.core.fieldcrypt import entries

    out = Report()
    marked = sensitive_fields(store)
    period = settings.personal_data_days
    keys_file = Path(settings.field_keys_file) if settings.field_keys_file else None
    active, keys = entries(keys_file) if keys_file else (None, {})
    out.keys = {"file": str(keys_file) if keys_file else None, "active": active, "keys": sorted(keys)}
    stale = []  # keys older than the period: personal data they sealed must become unreadable
    for kid in sorted(keys):
        made = key_created(kid)
        if made is None:
            out.findings.append(
                f"field key {kid}: its age is unknown (not named by time); retire it once {period} days old"
            )
        elif (now - made).days > period:
            stale.append(kid)
    for spec in t.declared():
        base = spec.name.removesuffix(t.DLQ_SUFFIX)
        record = TOPIC_RECORDS.get(base)
        personal = marked.get(record.avro_name, []) if record is not None else []
        if spec.compacted:
            kept, days = "until deleted (compacted: the newest record per key)", None
        else:
            kept, days = _days(spec.retention_ms), spec.retention_ms / DAY_MS
        why = spec.doc or ""
        if spec.name.endswith(t.DLQ_SUFFIX):
            why = f"Dead letters of {base}: kept for inspection and replay (itsmctl dlq)."
        out.entries.append(Kept(f"topic {settings.topic(spec.name)}", "Kafka", kept, days, personal, why))
        if personal and (days is None or days > period):
            longer = "until deleted" if days is None else f"for {kept}"
            name = settings.topic(spec.name)
            if keys_file is None:
                out.findings.append(
                    f"{name} keeps personal data ({', '.join(short(personal))}) in clear {longer}, longer "
                    f"than the declared {period} days: set ITSM_FIELD_KEYS_FILE (itsmctl fieldkeys rotate) "
                    "and retire keys older than the period"
                )
            for kid in stale:
                out.findings.append(
                    f"{name}: field key {kid} is older than {period} days and still makes the personal data "
                    "it sealed readable: itsmctl fieldkeys expire (or rotate, then "
                    f"itsmctl fieldkeys retire {kid} --shred)"
                )
    state = marked.get(m.Alert.avro_name, [])
    out.entries.append(
        Kept(
            f"worker tables ({settings.app_id}-*-changelog topics)",
            "Kafka, compacted",
            "until the state is deleted (an alert's, once resolved and past its reopen period)",
            None,
            state,
            "The worker's alert, incident and parked-record state, restored on restart.",
        )
    )
    out.entries.append(
        Kept(
            f"worker store ({settings.worker_data_dir})",
            "local disk",
            "mirrors the worker tables",
            None,
            state,
            f"Faust's {settings.worker_store} store: a restart need not replay the changelogs.",
        )
    )
    if settings.log_file:
        logs = Kept(
            settings.log_file,
            "local disk",
            f"{settings.log_retention_days} days (rotated at UTC midnight)",
            settings.log_retention_days,
            [],
            "Process logs (JSON lines, secrets redacted, sensitive fields never logged).",
        )
    else:
        logs = Kept(
            "process logs",
            "stderr",
            "the supervisor's (journald, Docker's log driver)",
            None,
            [],
            "Process logs (JSON lines, secrets redacted); ITSM_LOG_FILE makes the process rotate them.",
        )
    out.entries.append(logs)
    out.entries.append(
        Kept(
            "poll cursors (.itsm/poll-prometheus-*.json)",
            "local disk",
            "until deleted",
            None,
            [],
            "What itsmctl poll published as firing, so an alert that is gone is resolved.",
        )
    )
    out.entries.append(
        Kept(
            "integration archives (archive/<name>-<time>/*.avro)",
            "local disk",
            "until deleted by people",
            None,
            ["(as on their topics; encrypted fields stay encrypted)"],
            "Records of a retired integration's topics (itsmctl integrations retire), for audits.",
        )
    )
    return out


def short(paths: list[str]) -> list[str]:
    return [p.split(".", 3)[-1] if p.count(".") >= 3 else p for p in paths]


@dataclass
class SealedScan:
    """What a scan of the retained records found for one field key."""

    records: int = 0  # records read
    topics: int = 0  # topics read (with at least one record)
    sealed: dict[str, int] = field(default_factory=dict)  # topic -> records holding a value it sealed


def holding_sealed_values(settings: Settings) -> list[str]:
    """The broker's topics that can hold values a field key sealed: every declared topic of this
    deployment and its dead letters, and the worker's table changelogs ({app id}-*-changelog).
    CommandError when a declared one is not there (not created, or hidden from this principal),
    since records it may hold could not be read."""
    from ops.dlq import topic_names
    from ops.runtime import CommandError

    ours = {settings.topic(spec.name) for spec in t.declared()}
    names = topic_names(settings)
    if missing := sorted(ours - names):
        raise CommandError(
            f"cannot read {len(missing)} of the deployment's topics ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}): the broker does not show them to this principal "
            "(one that may read every topic is needed) or they were never created (itsmctl topics apply)"
        )
    tables = f"{settings.app_id}-"
    return sorted(ours | {n for n in names if n.startswith(tables) and n.endswith("-changelog")})


def sealed_with(
    settings: Settings,
    kid: str,
    progress: Callable[[SealedScan], None] | None = None,
    every: float = 2.0,
) -> SealedScan:
    """Read every retained record that can hold a sealed value and count, per topic, those
    holding one key kid sealed (_holds).
    progress(scan) is called every `every` seconds while it reads."""
    from ops.dlq import read_topics
    from streams.core.fieldcrypt import PREFIX

    needle = f"{PREFIX}{kid}:".encode()
    scan, seen = SealedScan(), set()
    last = time.monotonic()
    for msg in read_topics(settings, holding_sealed_values(settings)):
        topic = str(msg.topic())
        scan.records += 1
        seen.add(topic)
        value = msg.value()
        if value is not None and _holds(value, needle):
            scan.sealed[topic] = scan.sealed.get(topic, 0) + 1
        if progress is not None and time.monotonic() - last >= every:
            scan.topics, last = len(seen), time.monotonic()
            progress(scan)
    scan.topics = len(seen)
    return scan


def _holds(value: bytes, needle: bytes) -> bool:
    """Whether a record's bytes hold a value sealed under the key whose `enc:v1:<key id>:` is
    needle. A sealed value is a string that holds it verbatim in Avro (topics, and dead letters,
    whose value is the original record's bytes) and in MessagePack (the worker's alert states);
    the changes table keeps a parked record's bytes base64-encoded in JSON (Parked), so those are
    decoded first."""
    if needle in value:
        return True
    if value[:1] != b"{":
        return False
    from streams.processors.changes import Parked

    try:
        return needle in (Parked.model_validate_json(value).record().value or b"")
    except ValueError:  # not a parked record (pydantic's ValidationError, base64's Error)
        return False
