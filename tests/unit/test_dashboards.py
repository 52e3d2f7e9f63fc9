"""The Grafana dashboards are well-formed: unique uids, every panel queries the chosen Prometheus
datasource, every query names metrics the pipeline has (the e2e status test scrapes the
processes and checks each name against what they export)."""

from __future__ import annotations

import json

from tests.dashboards import DASHBOARDS, NAME, expressions, queried_names, recorded_names


def test_three_dashboards_with_unique_uids_and_panels_on_the_datasource_variable() -> None:
    assert {p.stem for p in DASHBOARDS} == {"overview", "integrations", "slos"}
    boards = [json.loads(p.read_text()) for p in DASHBOARDS]
    assert len({b["uid"] for b in boards}) == 3
    for board in boards:
        assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]


def test_every_query_names_a_metric_and_balanced_brackets() -> None:
    for board, title, expr in expressions():
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), (board, title)
        assert NAME.search(expr), (board, title, expr)
    assert {n for n in queried_names() if n.startswith("slo:")} <= recorded_names()
