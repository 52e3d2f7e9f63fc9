"""The status service's arithmetic: scrape targets, throughput and last error from two scrapes, a
gateway's routes, and the lag gauges in kafka_exporter's names (no broker: figures set by hand)."""

from __future__ import annotations

import pytest

from ops.lag import GroupInfo, PartitionLag
from ops.status import Integration, StatusService, kind_of, parse_targets, samples_of
from streams.core.settings import Settings

FIRST = """
# TYPE itsm_pipeline_webhook_alerts_total counter
itsm_pipeline_webhook_alerts_total{source="alertmanager"} 100.0
itsm_pipeline_webhook_alerts_total{source="grafana"} 10.0
# TYPE itsm_pipeline_webhook_requests_total counter
itsm_pipeline_webhook_requests_total{source="alertmanager",outcome="accepted"} 20.0
itsm_pipeline_webhook_requests_total{source="grafana",outcome="rejected_401"} 3.0
# TYPE itsm_pipeline_dead_letters_total counter
itsm_pipeline_dead_letters_total{stage="alerts",error_class="schema"} 1.0
"""
VALIDATION = 'itsm_pipeline_dead_letters_total{stage="alerts",error_class="validation"} 2.0'
SECOND = FIRST.replace("} 100.0", "} 150.0").replace(
    'error_class="schema"} 1.0', f'error_class="schema"}} 1.0\n{VALIDATION}'
)


def test_scrape_targets_parse_and_name_their_kind() -> None:
    assert parse_targets(" worker=http://127.0.0.1:9464/, sink-rt=https://h:1 ,") == {
        "worker": "http://127.0.0.1:9464",
        "sink-rt": "https://h:1",
    }
    assert [kind_of(n) for n in ("worker", "sink-rt", "gateway", "gate", "changes-sync", "x")] == [
        "worker",
        "sink",
        "gateway",
        "gate",
        "changes-sync",
        "other",
    ]
    for bad in ("worker", "worker=ftp://x", "=http://x"):
        with pytest.raises(ValueError, match="NAME=http"):
            parse_targets(bad)


def test_throughput_last_error_and_routes_from_two_scrapes() -> None:
    gateway = Integration("gateway", "http://g", "gateway")
    gateway.observe(samples_of(FIRST), at=1000.0)
    assert gateway.processed == 110 and gateway.throughput == 0.0
    # Errors the process counted before the first scrape still show (seen at that scrape).
    assert gateway.last_error is not None and gateway.last_error["class"] == "schema"
    gateway.observe(samples_of(SECOND), at=1010.0)
    assert gateway.throughput == pytest.approx(5.0)  # 50 more alerts in 10 s
    assert gateway.last_error is not None  # the counter that grew since is the last error
    assert (gateway.last_error["class"], gateway.last_error["stage"]) == ("validation", "alerts")
    routes = {r["source"]: r for r in gateway.as_dict()["routes"]}
    assert routes["alertmanager"] == {
        "source": "alertmanager",
        "processed": 150.0,
        "throughput_per_second": 5.0,
        "refused": 0.0,
    }
    assert routes["grafana"]["refused"] == 3.0 and routes["grafana"]["throughput_per_second"] == 0.0


def test_lag_gauges_in_kafka_exporter_names() -> None:
    service = StatusService(Settings(kafka_bootstrap="127.0.0.1:1"), {"worker": "http://w"}, [])
    try:
        service.groups = [GroupInfo("app", "stable", 2)]
        service.partitions = [
            PartitionLag("app", "alerts.raw", 0, 90, 100, 10, 12.5),
            PartitionLag("app", "alerts.raw", 1, -1, 7, 7, 30.0),
        ]
        service.dlq = [{"topic": "alerts.raw.dlq", "depth": 3, "newest_age_seconds": 4.0}]
        families = {f.name: f for f in service.collect()}
    finally:
        service.close()

    def values(name: str) -> dict[tuple[str, ...], float]:
        return {tuple(s.labels.values()): s.value for s in families[name].samples}

    assert values("kafka_consumergroup_lag") == {
        ("app", "alerts.raw", "0"): 10,
        ("app", "alerts.raw", "1"): 7,
    }
    assert values("kafka_consumergroup_current_offset") == {
        ("app", "alerts.raw", "0"): 90,
        ("app", "alerts.raw", "1"): -1,  # none committed there (kafka_exporter's -1)
    }
    assert values("kafka_consumergroup_lag_sum") == {("app", "alerts.raw"): 17}
    assert values("kafka_consumergroup_lag_seconds")[("app", "alerts.raw", "1")] == 30.0
    assert values("kafka_topic_partition_current_offset") == {
        ("alerts.raw", "0"): 100,
        ("alerts.raw", "1"): 7,
    }
    assert values("kafka_consumergroup_members") == {("app",): 2}
    assert values("itsm_pipeline_dlq_records") == {("alerts.raw.dlq",): 3}
    assert values("itsm_pipeline_integration_up") == {("worker", "worker"): 0.0}  # never scraped
