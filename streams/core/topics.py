"""Every topic the pipeline uses, declared once, and the command that applies them to a cluster."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name without prefix, layout and retention, and whether it has a .dlq twin."""

    name: str
    partitions: int
    retention_ms: int = 7 * DAY_MS
    compacted: bool = False
    dlq: bool = False
    doc: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def configs(self) -> dict[str, str]:
        """Topic-level configs as Kafka spells them."""
        cfg = {
            "cleanup.policy": "compact" if self.compacted else "delete",
            "retention.ms": "-1" if self.compacted else str(self.retention_ms),
        }
        if self.compacted:
            # Keep tombstones long enough for every consumer to see deletions.
            cfg["delete.retention.ms"] = str(DAY_MS)
            cfg["min.compaction.lag.ms"] = "0"
        cfg.update(self.extra)
        return cfg


ALERTS_RAW = "alerts.raw"
ALERTS_SUPPRESSED = "alerts.suppressed"
ALERTS_CORRELATION_SAMPLES = "alerts.correlation.samples"
ALERTS_TICKS = "alerts.ticks"
ALERTS_CI_INCIDENTS = "alerts.ci.incidents"
CMDB_CI = "cmdb.ci"
CMDB_CI_UPDATES = "cmdb.ci.updates"
CMDB_DRIFT = "cmdb.drift"
CHANGE_REQUESTS = "change.requests"
CHANGES_TICKS = "changes.ticks"
ITSM_CHANGES = "itsm.changes"
ITSM_INCIDENTS = "itsm.incidents"
GATE_REQUESTS = "gate.requests"
MAINTENANCE_WINDOWS = "maintenance.windows"
DEPLOY_EVENTS = "deploy.events"
INCIDENT_COMMANDS = "itsm.incident.commands"
CHANGE_COMMANDS = "itsm.change.commands"
ITSM_RESULTS = "itsm.results"
AUDIT_EVENTS = "audit.events"
DLQ_REPLAYS = "dlq.replays"
RULES = "rules.sets"

DLQ_SUFFIX = ".dlq"
DLQ_RETENTION_MS = 30 * DAY_MS

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(ALERTS_RAW, 6, dlq=True, doc="Canonical Alert records from gateway and producers."),
    TopicSpec(
        ALERTS_SUPPRESSED, 3, retention_ms=90 * DAY_MS, doc="Alerts kept quiet, with the reason (audit)."
    ),
    TopicSpec(
        ALERTS_CORRELATION_SAMPLES,
        1,
        retention_ms=30 * DAY_MS,
        doc="Sampled correlation decisions for review.",
    ),
    TopicSpec(
        ALERTS_TICKS,
        6,
        retention_ms=60 * 60 * 1000,
        doc="Internal timer ticks, co-partitioned with alerts.raw (auto-resolve, timeouts, window ends).",
    ),
    TopicSpec(
        ALERTS_CI_INCIDENTS,
        3,
        compacted=True,
        doc="Internal: CI id -> correlation id of its open incident (root-cause grouping across workers).",
    ),
    TopicSpec(
        CMDB_CI,
        3,
        compacted=True,
        dlq=True,
        doc="Latest accepted ConfigurationItem per ci_id (written by the change worker, or trusted loaders).",
    ),
    TopicSpec(
        CMDB_CI_UPDATES,
        3,
        dlq=True,
        doc="Proposed ConfigurationItem updates from source systems, keyed by ci_id; validated into cmdb.ci.",
    ),
    TopicSpec(
        CMDB_DRIFT,
        1,
        compacted=True,
        doc="CMDBDrift per drift id: hosts monitoring sees that the CMDB lacks, CMDB hosts monitoring has "
        "not seen, fields that differ (itsmctl cmdb reconcile); a tombstone once resolved.",
    ),
    TopicSpec(
        CHANGE_REQUESTS,
        3,
        dlq=True,
        doc="ChangeCommand requests from pipelines and the gate; checked for known CIs, then to the sinks.",
    ),
    TopicSpec(
        CHANGES_TICKS,
        3,
        retention_ms=60 * 60 * 1000,
        doc="Internal timer ticks, co-partitioned with change.requests and deploy.events (parked records).",
    ),
    TopicSpec(
        ITSM_CHANGES,
        3,
        compacted=True,
        doc="ChangeRecord per change number: state, approval and window as the ITSM has them.",
    ),
    TopicSpec(
        ITSM_INCIDENTS,
        3,
        compacted=True,
        doc="IncidentRecord per target and correlation id: state, assignment and resolution as the ITSM "
        "has them (itsmctl incidents sync).",
    ),
    TopicSpec(
        GATE_REQUESTS,
        1,
        compacted=True,
        doc="GateRequest per request id: deploys waiting on the approval of the change they asked for.",
    ),
    TopicSpec(
        MAINTENANCE_WINDOWS, 1, compacted=True, dlq=True, doc="Latest MaintenanceWindow per window_id."
    ),
    TopicSpec(DEPLOY_EVENTS, 3, dlq=True, doc="DeploymentEvent records from CI/CD."),
    TopicSpec(
        INCIDENT_COMMANDS, 6, dlq=True, doc="IncidentCommand records for the sinks, keyed by correlation id."
    ),
    TopicSpec(CHANGE_COMMANDS, 3, dlq=True, doc="ChangeCommand records for the sinks."),
    TopicSpec(ITSM_RESULTS, 3, dlq=True, doc="SinkResult records: ITSM ids back to the streams."),
    TopicSpec(
        DLQ_REPLAYS,
        1,
        compacted=True,
        doc="Ledger of replayed dead letters (<dlq topic>:<partition>:<offset>), so none is replayed twice.",
    ),
    TopicSpec(
        RULES,
        1,
        compacted=True,
        doc="RuleSet records: every rule set applied (set:<id>) and the one the workers run (current).",
    ),
    TopicSpec(AUDIT_EVENTS, 1, retention_ms=365 * DAY_MS, doc="AuditEvent records."),
)


def dlq_name(topic: str) -> str:
    """The dead-letter twin of a topic name."""
    return topic + DLQ_SUFFIX


def declared(prefix: str = "") -> Iterator[TopicSpec]:
    """Every declared topic with the prefix applied, each followed by its .dlq twin if it has one."""
    for spec in TOPICS:
        yield TopicSpec(
            prefix + spec.name,
            spec.partitions,
            spec.retention_ms,
            spec.compacted,
            spec.dlq,
            spec.doc,
            dict(spec.extra),
        )
        if spec.dlq:
            yield TopicSpec(
                dlq_name(prefix + spec.name), 1, DLQ_RETENTION_MS, doc=f"Dead letters of {spec.name}."
            )
