"""Drift between the CMDB and monitoring: which hosts monitoring sees that the CMDB lacks, which
CMDB hosts monitoring has not seen for the period, and which fields differ. Pure: the CIs, the
observations and the moment decide."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from streams.core.models import Alert, CMDBDrift, ConfigurationItem, DriftKind
from streams.stages.cmdb import CMDBIndex, is_address, normalize_host, normalize_ip

# Alert labels naming the host (as the correlation rules read them), the service, and the owner.
HOST_LABELS = ("hostname", "host", "instance", "nodename")
ADDRESS_LABELS = ("ip", "address")
SERVICE_LABELS = ("service", "app")
OWNER_LABELS = ("team", "owner", "owner_group")


@dataclass
class Observation:
    """What one monitoring source reports about one host."""

    host: str  # normalized (normalize_host): no domain, no port, lower case; or an address
    source: str  # alerts, prometheus
    seen_at: datetime
    service: str | None = None
    address: str | None = None
    owner: str | None = None


def from_alert(alert: Alert) -> Observation | None:
    """The host an alert is about, from its labels; None when it names none."""
    labels = alert.labels
    raw = next((labels[k] for k in HOST_LABELS if labels.get(k)), None)
    if raw is None:
        return None
    address = next((labels[k] for k in ADDRESS_LABELS if labels.get(k)), None)
    return Observation(
        host=normalize_host(raw),
        source="alerts",
        seen_at=alert.received_at,
        service=next((labels[k] for k in SERVICE_LABELS if labels.get(k)), None),
        address=normalize_ip(address) if address and is_address(address) else None,
        owner=next((labels[k] for k in OWNER_LABELS if labels.get(k)), None),
    )


def from_target(labels: dict[str, str], seen_at: datetime) -> Observation | None:
    """A Prometheus target (a series of `up`): instance is the host, job or service the service."""
    instance = labels.get("instance")
    if not instance:
        return None
    return Observation(
        host=normalize_host(instance),
        source="prometheus",
        seen_at=seen_at,
        service=labels.get("service"),
        owner=next((labels[k] for k in OWNER_LABELS if labels.get(k)), None),
    )


@dataclass
class Seen:
    """Everything observed about one host, merged."""

    host: str
    sources: set[str] = field(default_factory=set)
    last: datetime | None = None
    services: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)
    owners: set[str] = field(default_factory=set)

    def add(self, o: Observation) -> None:
        self.sources.add(o.source)
        self.last = o.seen_at if self.last is None else max(self.last, o.seen_at)
        if o.service:
            self.services.add(o.service)
        if o.address:
            self.addresses.add(o.address)
        if o.owner:
            self.owners.add(o.owner)


def classify(
    cis: Iterable[ConfigurationItem],
    observations: Iterable[Observation],
    now: datetime,
    period_seconds: float,
) -> list[CMDBDrift]:
    """The drift records for this pass (first_detected_at = now; the caller keeps an earlier one).

    - MISSING_IN_CMDB: a host monitoring saw that no CI has (by hostname or address).
    - NOT_MONITORED: a CI with a hostname, not retired, that no observation in the period matched.
    - ATTRIBUTE_MISMATCH: a matched CI whose service is not among the services monitoring reports
      for it (when monitoring reports one), or whose addresses lack one monitoring reports."""
    index = CMDBIndex()
    hosts: list[ConfigurationItem] = []
    for ci in cis:
        if ci.deleted:
            continue
        index.upsert(ci)
        if ci.hostname:
            hosts.append(ci)
    seen: dict[str, Seen] = {}
    for o in observations:
        if (now - o.seen_at).total_seconds() > period_seconds:
            continue
        seen.setdefault(o.host, Seen(o.host)).add(o)
    out: list[CMDBDrift] = []
    matched: set[str] = set()

    def drift(drift_id: str, kind: DriftKind, s: Seen | None, detail: str, **kw: str | None) -> CMDBDrift:
        return CMDBDrift(
            drift_id=drift_id,
            kind=kind,
            observed_by=sorted(s.sources) if s else [],
            first_detected_at=now,
            last_seen_at=s.last if s else None,
            detected_at=now,
            detail=detail,
            **kw,
        )

    for host, s in sorted(seen.items()):
        found = index.lookup("hostname", host) or index.lookup("ip", host)
        for address in sorted(s.addresses):
            found = found or index.lookup("ip", address)
        if found is None:
            out.append(
                drift(
                    f"missing:{host}",
                    DriftKind.MISSING_IN_CMDB,
                    s,
                    f"{host} is monitored ({', '.join(sorted(s.sources))}) but no CI has this host name "
                    "or address",
                    host=host,
                    observed_value=", ".join(sorted(s.services)) or None,
                )
            )
            continue
        ci = found
        matched.add(ci.ci_id)
        if s.services and ci.service and ci.service not in s.services:
            out.append(
                drift(
                    f"mismatch:{ci.ci_id}:service",
                    DriftKind.ATTRIBUTE_MISMATCH,
                    s,
                    f"the CMDB says service {ci.service!r}, monitoring reports {sorted(s.services)}",
                    ci_id=ci.ci_id,
                    host=host,
                    field="service",
                    cmdb_value=ci.service,
                    observed_value=sorted(s.services)[0],
                )
            )
        known = {normalize_ip(a) for a in ci.ip_addresses}
        unknown = sorted(s.addresses - known)
        if unknown:
            out.append(
                drift(
                    f"mismatch:{ci.ci_id}:ip_addresses",
                    DriftKind.ATTRIBUTE_MISMATCH,
                    s,
                    f"monitoring reaches {host} at {', '.join(unknown)}, which the CMDB does not list",
                    ci_id=ci.ci_id,
                    host=host,
                    field="ip_addresses",
                    cmdb_value=", ".join(sorted(known)) or None,
                    observed_value=", ".join(unknown),
                )
            )
    for ci in sorted(hosts, key=lambda c: c.ci_id):
        if ci.ci_id in matched:
            continue
        out.append(
            drift(
                f"unseen:{ci.ci_id}",
                DriftKind.NOT_MONITORED,
                None,
                f"no monitoring source saw {ci.hostname} in the last {period_seconds / 3600:g} h",
                ci_id=ci.ci_id,
                host=normalize_host(ci.hostname or ""),
            )
        )
    return sorted(out, key=lambda d: d.drift_id)


def carry(new: list[CMDBDrift], previous: dict[str, CMDBDrift]) -> tuple[list[CMDBDrift], list[str]]:
    """This pass's records with the first detection of drift already known kept, and the ids of
    drift that is gone (to be tombstoned)."""
    out = []
    for d in new:
        old = previous.get(d.drift_id)
        out.append(d.model_copy(update={"first_detected_at": old.first_detected_at}) if old else d)
    gone = sorted(set(previous) - {d.drift_id for d in new})
    return out, gone


def proposal(
    d: CMDBDrift, ci: ConfigurationItem | None, owner: str | None, now: datetime
) -> ConfigurationItem | None:
    """The CI update that would correct this drift, from the drift job as a source (it goes through
    the same validation and reconciliation as any other update); None when there is nothing to
    propose (a host monitoring does not see may be switched off: people decide)."""
    source = "monitoring-drift"
    if d.kind is DriftKind.MISSING_IN_CMDB and d.host:
        return ConfigurationItem(
            ci_id=f"monitoring-{d.host}",
            name=d.host,
            ci_class="cmdb_ci_computer",
            hostname=d.host,
            service=(d.observed_value or "").split(", ")[0] or None,
            owner_group=owner,
            source_system=source,
            attributes={"discovered_by": source},
            updated_at=now,
        )
    if d.kind is DriftKind.ATTRIBUTE_MISMATCH and ci is not None and d.observed_value:
        if d.field == "service":
            return ci.model_copy(
                update={"service": d.observed_value, "source_system": source, "updated_at": now}
            )
        if d.field == "ip_addresses":
            added = sorted({*ci.ip_addresses, *d.observed_value.split(", ")})
            return ci.model_copy(
                update={"ip_addresses": added, "source_system": source, "updated_at": now, "provenance": {}}
            )
    return None
