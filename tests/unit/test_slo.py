"""SLOs: the file loads, its rules file is its rendering, promtool accepts it, and compliance and
budget left come out as hand-computed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops import slo

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_rules_are_the_rendering_of_the_slo_file() -> None:
    rendered = slo.render_rules(slo.load())
    committed = (ROOT / "ops" / "prometheus" / "slo.rules.yml").read_text()
    assert committed == rendered, "regenerate: python -m ops.slo > ops/prometheus/slo.rules.yml"


def test_compliance_and_budget_left_from_counters() -> None:
    (latency,) = [s for s in slo.load() if s.name == "incident-open-latency"]
    samples = [
        # 200 new incidents at the servicenow sink, 197 within 60 s; 100 at rt, all within 60 s.
        ("itsm_pipeline_latency_seconds_count", {"hop": "ingest_to_itsm", "action": "OPEN"}, 200.0),
        (
            "itsm_pipeline_latency_seconds_bucket",
            {"hop": "ingest_to_itsm", "action": "OPEN", "le": "60.0"},
            197.0,
        ),
        (
            "itsm_pipeline_latency_seconds_count",
            {"hop": "ingest_to_itsm", "action": "OPEN", "x": "rt"},
            100.0,
        ),
        (
            "itsm_pipeline_latency_seconds_bucket",
            {"hop": "ingest_to_itsm", "action": "OPEN", "le": "60.0"},
            100.0,
        ),
        # Not this SLO's: updates, and another bucket.
        ("itsm_pipeline_latency_seconds_count", {"hop": "ingest_to_itsm", "action": "UPDATE"}, 50.0),
        (
            "itsm_pipeline_latency_seconds_bucket",
            {"hop": "ingest_to_itsm", "action": "OPEN", "le": "30.0"},
            5.0,
        ),
    ]
    got = latency.evaluate(samples)
    assert got["events"] == 300 and got["good"] == 297
    assert got["compliance"] == pytest.approx(0.99)
    assert got["budget_left"] == pytest.approx(0.0, abs=1e-9)  # 1% bad of a 1% budget: all spent
    (delivery,) = [s for s in slo.load() if s.name == "command-delivery"]
    got = delivery.evaluate(
        [
            ("itsm_pipeline_sink_commands_total", {"target": "servicenow", "outcome": "CREATED"}, 9_995.0),
            ("itsm_pipeline_sink_commands_total", {"target": "servicenow", "outcome": "DEAD_LETTERED"}, 5.0),
        ]
    )
    assert got["compliance"] == pytest.approx(0.9995)
    assert got["budget_left"] == pytest.approx(0.5)  # half of the 0.1% budget spent
    assert slo.load()[0].evaluate([])["compliance"] is None  # no events: nothing to judge


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '[[slo]]\nname = "x"\nobjective = 1.5\ntotal = { metric = "m" }\nbad = { metric = "m" }\n',
            "objective",
        ),
        ('[[slo]]\nname = "x"\nobjective = 0.9\ntotal = { metric = "m" }\n', "exactly one of good or bad"),
        ('[[slo]]\nname = "x"\nobjective = 0.9\ntotal = { labels = {} }\nbad = { metric = "m" }\n', "metric"),
        ("[[slo]\n", "slo.toml"),
    ],
)
def test_a_bad_slo_file_is_refused_naming_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "slo.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem):
        slo.load(path)
