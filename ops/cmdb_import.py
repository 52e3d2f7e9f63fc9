"""Batch CMDB import: CIs from a CSV or JSON export, as CI updates on cmdb.ci.updates in chunks.

The worker validates and reconciles each like any other update, and parks one whose relationships
point at CIs not in the CMDB yet (they may come later in the same file) until they arrive or
park_timeout passes (then it is dead-lettered: referential integrity).

CSV: a header row naming ConfigurationItem fields (ci_id, name, ci_class, hostname, ip_addresses,
service, environment, criticality, owner_group, relationships, deleted, updated_at) and
`attributes.<key>` columns; ip_addresses separated by `;`, relationships as `TYPE:target;...`
(`RUNS_ON:web-9;DEPENDS_ON:db-1`). JSON: an array of CI objects, or a ServiceNow export
(`{"records": [...]}`) whose `sys_id`, `sys_class_name`, `host_name` (or `fqdn`), `ip_address`,
`support_group`, `environment` and `name` are read. Missing `updated_at` is the time of the import;
`source_system` is --source unless a row names one."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from streams.core.models import ConfigurationItem
from streams.core.timeutil import zone_of_text

SERVICENOW = {
    "sys_id": "ci_id",
    "sys_class_name": "ci_class",
    "host_name": "hostname",
    "fqdn": "hostname",
    "support_group": "owner_group",
    "name": "name",
    "environment": "environment",
}


class CMDBImportError(ValueError):
    """The file cannot be read at all (the message names it and why)."""


@dataclass
class Row:
    where: str  # "line 7" or "record 3"
    ci: ConfigurationItem | None
    problem: str = ""


@dataclass
class Report:
    read: int = 0
    published: int = 0
    rejected: list[str] = field(default_factory=list)


def _relationships(text: str) -> list[dict[str, str]]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        kind, sep, target = part.partition(":")
        if not sep or not target.strip():
            raise ValueError(f"relationship {part!r} is not TYPE:target")
        out.append({"type": kind.strip().upper(), "target_ci_id": target.strip()})
    return out


def _from_csv(row: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    attributes: dict[str, str] = {}
    for key, value in row.items():
        if key is None:
            raise ValueError("more values than columns")
        value = (value or "").strip()
        if key.startswith("attributes."):
            if value:
                attributes[key.removeprefix("attributes.")] = value
        elif key == "ip_addresses":
            data[key] = [v.strip() for v in value.split(";") if v.strip()]
        elif key == "relationships":
            data[key] = _relationships(value)
        elif key == "deleted":
            data[key] = value.lower() in ("true", "1", "yes")
        elif value:
            data[key] = value
            if key == "updated_at":
                data["source_zone"] = zone_of_text(value)
    if attributes:
        data["attributes"] = attributes
    return data


def _from_servicenow(record: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for theirs, ours in SERVICENOW.items():
        value = record.get(theirs)
        if isinstance(value, dict):  # a reference: {"value": sys_id, "display_value": ...}
            value = value.get("display_value") or value.get("value")
        if value and ours not in data:
            data[ours] = str(value)
    if record.get("ip_address"):
        data["ip_addresses"] = [str(record["ip_address"])]
    return data


def _as_is(record: dict[str, Any]) -> dict[str, Any]:
    return dict(record)


def rows(path: Path, source: str, now: datetime) -> Iterator[Row]:
    """Each CI of the file, or the reason a row is not one."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CMDBImportError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CMDBImportError(f"{path}: {exc}") from None
    items: Iterator[tuple[str, Any]]
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "ci_id" not in reader.fieldnames:
            raise CMDBImportError(f"{path}: the header row must name the columns, ci_id among them")
        items = ((f"line {n}", r) for n, r in enumerate(reader, start=2))
        convert: Any = _from_csv
    elif path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise CMDBImportError(f"{path}: not valid JSON: {exc}") from None
        if isinstance(doc, dict) and isinstance(doc.get("records"), list):
            items, convert = (
                ((f"record {n}", r) for n, r in enumerate(doc["records"], start=1)),
                _from_servicenow,
            )
        elif isinstance(doc, list):
            items, convert = ((f"record {n}", r) for n, r in enumerate(doc, start=1)), _as_is
        else:
            raise CMDBImportError(
                f'{path}: expected an array of CIs or a ServiceNow export ({{"records": [...]}})'
            )
    else:
        raise CMDBImportError(f"{path}: a .csv or .json file, please")
    for where, raw in items:
        try:
            if not isinstance(raw, dict):
                raise ValueError("not an object")
            data = convert(raw)
            data.setdefault("name", data.get("ci_id", ""))
            data.setdefault("source_system", source)
            data.setdefault("updated_at", now)
            yield Row(where, ConfigurationItem.model_validate(data))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
            yield Row(where, None, problems)
        except ValueError as exc:
            yield Row(where, None, str(exc))
