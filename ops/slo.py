"""Service level objectives: read from ops/slo.toml, evaluated from scraped counters (for
`itsmctl status`) and rendered into Prometheus recording rules and multi-window, multi-burn-rate
alerts (the Google SRE workbook's recipe, "Alerting on SLOs", table 5-8).

`python -m ops.slo` prints the rules file; ops/prometheus/slo.rules.yml is that output, and a test
checks the two agree.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

SLO_FILE = Path(__file__).resolve().parent / "slo.toml"
# Repository-relative: a deployment points them at its own copy (e.g. its Git host) when it loads the rules.
RUNBOOKS = "ops/runbooks"

# (severity, long window, short window, burn rate, for): the workbook's recommended set. A burn
# rate of 14.4 spends 2% of a 30-day budget in an hour; 6 spends 5% in six hours; 3 and 1 spend 10%
# in a day and in three days.
BURNS = (
    ("page", "1h", "5m", 14.4, "2m"),
    ("page", "6h", "30m", 6.0, "15m"),
    ("ticket", "1d", "2h", 3.0, "1h"),
    ("ticket", "3d", "6h", 1.0, "3h"),
)
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


@dataclass(frozen=True)
class Selector:
    """A metric name with exact label values."""

    metric: str
    labels: tuple[tuple[str, str], ...] = ()

    def promql(self) -> str:
        inner = ",".join(f'{k}="{v}"' for k, v in self.labels)
        return f"{self.metric}{{{inner}}}" if inner else self.metric

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        return name == self.metric and all(labels.get(k) == v for k, v in self.labels)

    def total(self, samples: Iterable[tuple[str, Mapping[str, str], float]]) -> float:
        return sum(v for n, labels, v in samples if self.matches(n, labels))


@dataclass(frozen=True)
class Slo:
    name: str
    description: str
    objective: float
    window: str
    total: Selector
    good: Selector | None
    bad: Selector | None

    def error_ratio(self, window: str) -> str:
        total = f"sum(rate({self.total.promql()}[{window}]))"
        if self.bad is not None:
            return f"sum(rate({self.bad.promql()}[{window}])) / {total}"
        assert self.good is not None
        return f"1 - (sum(rate({self.good.promql()}[{window}])) / {total})"

    def evaluate(self, samples: list[tuple[str, Mapping[str, str], float]]) -> dict[str, float | str | None]:
        """Compliance and error budget left over the counters' lifetime (None: no events yet)."""
        total = self.total.total(samples)
        if self.bad is not None:
            good = total - self.bad.total(samples)
        else:
            assert self.good is not None
            good = self.good.total(samples)
        compliance = good / total if total else None
        budget = None
        if compliance is not None:
            budget = 1.0 - (1.0 - compliance) / (1.0 - self.objective)
        return {
            "name": self.name,
            "description": self.description,
            "objective": self.objective,
            "events": total,
            "good": good,
            "compliance": compliance,
            "budget_left": budget,
        }


def _selector(raw: object, where: str) -> Selector:
    if not isinstance(raw, dict) or not isinstance(raw.get("metric"), str):
        raise ValueError(f'{where}: needs metric = "name" and optional labels = {{...}}')
    labels = raw.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ValueError(f"{where}: labels must map names to strings")
    return Selector(raw["metric"], tuple(sorted(labels.items())))


def load(path: Path = SLO_FILE) -> list[Slo]:
    """The declared SLOs; ValueError names what is wrong with the file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    out = []
    for i, raw in enumerate(data.get("slo", [])):
        where = f"{path.name}: slo[{i}]"
        objective = raw.get("objective")
        if not isinstance(objective, float) or not 0 < objective < 1:
            raise ValueError(f"{where}: objective must be a fraction between 0 and 1, e.g. 0.99")
        has_good, has_bad = "good" in raw, "bad" in raw
        if has_good == has_bad:
            raise ValueError(f"{where}: give exactly one of good or bad")
        out.append(
            Slo(
                name=str(raw["name"]),
                description=str(raw.get("description", "")),
                objective=objective,
                window=str(raw.get("window", "28d")),
                total=_selector(raw.get("total"), f"{where}.total"),
                good=_selector(raw["good"], f"{where}.good") if has_good else None,
                bad=_selector(raw["bad"], f"{where}.bad") if has_bad else None,
            )
        )
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{path.name}: SLO names must be unique")
    return out


def render_rules(slos: list[Slo]) -> str:
    """Prometheus rule groups: the error ratio of each SLO over every window, and the burn alerts."""
    lines = [
        "# Generated from ops/slo.toml by `python -m ops.slo`; edit the SLO file, not this one.",
        "groups:",
        "  - name: slo-error-ratios",
        "    rules:",
    ]
    for slo in slos:
        for window in WINDOWS:
            lines += [
                f"      - record: slo:error_ratio:rate{window}",
                f"        expr: {slo.error_ratio(window)}",
                "        labels:",
                f"          slo: {slo.name}",
            ]
    lines += ["  - name: slo-burn-rate", "    rules:"]
    for slo in slos:
        budget = round(1.0 - slo.objective, 6)
        for severity, long, short, rate, hold in BURNS:
            name = "SLOBurnFast" if severity == "page" else "SLOBurnSlow"
            threshold = round(rate * budget, 6)
            lines += [
                f"      - alert: {name}",
                "        expr: >-",
                f'          slo:error_ratio:rate{long}{{slo="{slo.name}"}} > {threshold}',
                f'          and slo:error_ratio:rate{short}{{slo="{slo.name}"}} > {threshold}',
                f"        for: {hold}",
                "        labels:",
                f"          severity: {severity}",
                f"          slo: {slo.name}",
                f'          burn_rate: "{rate}"',
                f"          window: {long}",
                "        annotations:",
                f'          summary: "SLO {slo.name} is burning its error budget {rate}x too fast ({long})"',
                f'          description: "{slo.description}; error ratio over {long} and {short} above '
                f'{threshold} ({rate} x the {budget} budget)."',
                f"          runbook_url: {RUNBOOKS}/{name}.md",
            ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_rules(load()), end="")
