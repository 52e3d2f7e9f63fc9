"""The metric names the Grafana dashboards (ops/grafana/dashboards) query, and the names a process
exports, so a test can hold one against the other."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "ops" / "grafana" / "dashboards").glob("*.json"))
NAME = re.compile(r"\b(itsm_pipeline_[a-z0-9_]+|kafka_[a-z0-9_]+|slo:[a-z0-9_:]+)")
SUFFIXES = ("_bucket", "_count", "_sum")


def expressions() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) of every query."""
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                out.append((path.stem, panel["title"], target["expr"]))
    return out


def queried_names() -> set[str]:
    return {name for _, _, expr in expressions() for name in NAME.findall(expr)}


def exported_names(exposition: str) -> set[str]:
    """Every name a /metrics text declares (# TYPE), with the series names of its histograms."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind.strip() == "histogram":
                names.update(name + s for s in SUFFIXES)
    return names


def recorded_names() -> set[str]:
    """Names the rule files record (the SLO error ratios)."""
    text = "\n".join(p.read_text() for p in (ROOT / "ops" / "prometheus").glob("*.rules.yml"))
    return set(re.findall(r"- record: (\S+)", text))
