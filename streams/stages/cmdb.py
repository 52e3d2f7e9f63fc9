"""CMDBIndex: configuration items by id, hostname, IP and service, and their topology."""

from __future__ import annotations

import functools
import ipaddress
import re
import threading
from collections import defaultdict, deque
from typing import Protocol

from streams.core.models import ConfigurationItem

# What an address can be made of (digits, hex digits, dots and colons); anything else is a name.
_ADDRESS_CHARS = re.compile(r"[0-9A-Fa-f.:]+\Z").match


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address in value (10.0.0.5, 10.0.0.5:9100, 2001:db8::5, [2001:db8::5]:9100,
    fe80::1%eth0), or None when it is not one."""
    host = value.strip()
    if host.startswith("[") and "]" in host:
        host = host[1 : host.index("]")]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.split("%", 1)[0]  # a zone id names a link, not a host
    if not _ADDRESS_CHARS(host):
        return None  # a hostname: not worth the parser's exception (most alerts name hosts)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:10.0.0.5 is 10.0.0.5
    return address


def is_address(value: str) -> bool:
    """Whether value is an IP address (with or without port or zone)."""
    return _address(value) is not None


def normalize_ip(value: str) -> str:
    """An address in its canonical text (IPv6 compressed and lower case, RFC 5952), port dropped;
    a value that is no address is only trimmed and lower-cased."""
    address = _address(value)
    return str(address) if address is not None else value.strip().lower()


@functools.lru_cache(maxsize=65_536)
def normalize_host(value: str) -> str:
    """web-1.example.com:9100 -> web-1: hostnames compare without domain, port and case;
    an address compares in its canonical form."""
    address = _address(value)
    if address is not None:
        return str(address)
    host = value.strip().lower()
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.split(".", 1)[0]


class CIIndex(Protocol):
    """Read access to the CMDB: by id and by the lookup kinds of the correlation rules."""

    def get(self, ci_id: str) -> ConfigurationItem | None: ...

    def lookup(self, kind: str, value: str) -> ConfigurationItem | None: ...

    def dependents(self, ci_id: str, relationships: frozenset[str], max_depth: int) -> set[str]: ...

    def dependencies(self, ci_id: str, relationships: frozenset[str], max_depth: int) -> list[str]: ...


class CMDBIndex:
    """An in-memory CMDB built from cmdb.ci records; thread-safe for one writer and many readers."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._cis: dict[str, ConfigurationItem] = {}
        self._by: dict[str, dict[str, str]] = {"hostname": {}, "ip": {}, "service": {}}
        self._reverse: dict[str, set[tuple[str, str]]] = defaultdict(set)  # target -> {(type, source)}

    def __len__(self) -> int:
        return len(self._cis)

    def upsert(self, ci: ConfigurationItem) -> None:
        """Apply one cmdb.ci record (a deleted CI is removed)."""
        with self._lock:
            self.remove(ci.ci_id)
            if ci.deleted:
                return
            self._cis[ci.ci_id] = ci
            if ci.hostname:
                self._by["hostname"][normalize_host(ci.hostname)] = ci.ci_id
            self._by["hostname"].setdefault(normalize_host(ci.name), ci.ci_id)
            for ip in ci.ip_addresses:
                self._by["ip"][normalize_ip(ip)] = ci.ci_id
            if ci.service and (ci.ci_class == "cmdb_ci_service" or ci.service not in self._by["service"]):
                self._by["service"][ci.service.lower()] = ci.ci_id
            for rel in ci.relationships:
                self._reverse[rel.target_ci_id].add((rel.type.value, ci.ci_id))

    def remove(self, ci_id: str) -> None:
        with self._lock:
            old = self._cis.pop(ci_id, None)
            if old is None:
                return
            for table in self._by.values():
                for key in [k for k, v in table.items() if v == ci_id]:
                    del table[key]
            for rel in old.relationships:
                self._reverse[rel.target_ci_id].discard((rel.type.value, ci_id))

    def get(self, ci_id: str) -> ConfigurationItem | None:
        return self._cis.get(ci_id)

    def lookup(self, kind: str, value: str) -> ConfigurationItem | None:
        if kind == "ci_id":
            return self._cis.get(value)
        if kind == "hostname":
            key = normalize_host(value)
        elif kind == "ip":
            key = normalize_ip(value)
        else:
            key = value.strip().lower()
        ci_id = self._by.get(kind, {}).get(key)
        return self._cis.get(ci_id) if ci_id else None

    def dependencies(self, ci_id: str, relationships: frozenset[str], max_depth: int) -> list[str]:
        """CIs this one depends on (breadth first, nearest first), up to max_depth hops."""
        out: list[str] = []
        seen = {ci_id}
        frontier: deque[tuple[str, int]] = deque([(ci_id, 0)])
        while frontier:
            current, depth = frontier.popleft()
            ci = self._cis.get(current)
            if ci is None or depth >= max_depth:
                continue
            for rel in ci.relationships:
                if rel.type.value in relationships and rel.target_ci_id not in seen:
                    seen.add(rel.target_ci_id)
                    out.append(rel.target_ci_id)
                    frontier.append((rel.target_ci_id, depth + 1))
        return out

    def dependents(self, ci_id: str, relationships: frozenset[str], max_depth: int) -> set[str]:
        """CIs that depend on this one, directly or through up to max_depth hops."""
        out: set[str] = set()
        frontier: deque[tuple[str, int]] = deque([(ci_id, 0)])
        while frontier:
            current, depth = frontier.popleft()
            if depth >= max_depth:
                continue
            for rel_type, source in self._reverse.get(current, ()):
                if rel_type in relationships and source not in out and source != ci_id:
                    out.add(source)
                    frontier.append((source, depth + 1))
        return out
