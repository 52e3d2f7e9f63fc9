"""ChangeSync reads change requests from the development ITSM (ServiceNow Table API) onto
itsm.changes on the real broker: everything once, then only what changed, across pages."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from confluent_kafka import Producer
from pydantic import SecretStr

from connectors.devitsm.server import create_devitsm
from connectors.devitsm.store import Store
from connectors.sinks.http import RetryPolicy
from connectors.sinks.servicenow.client import ServiceNowClient
from connectors.sinks.servicenow.config import ServiceNowConfig
from connectors.sources.changes import source as sync_module
from connectors.sources.changes.source import ChangeSync
from streams.core.kafka import producer_config
from streams.core.models import ChangeRecord, ChangeStatus, MaintenanceWindow
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.kafka_util import consume
from tests.servers import serve

pytestmark = pytest.mark.integration
PASSWORD = "sync-test-pw"
SERDE = AvroSerde()


@pytest.fixture
def itsm_url() -> Iterator[str]:
    store = Store(":memory:")
    with serve(create_devitsm(store, "pipeline", PASSWORD)) as url:
        yield url
    store.close()


def make_change(url: str, n: int) -> dict[str, str]:
    resp = httpx.post(
        f"{url}/api/now/table/change_request",
        auth=("pipeline", PASSWORD),
        json={
            "short_description": f"Change {n}",
            "type": "normal",
            "state": "-5",
            "cmdb_ci": f"web-{n}",
            "business_service": "checkout",
            "start_date": "2026-11-27 10:00:00",
            "end_date": "2026-11-27 12:00:00",
        },
    )
    resp.raise_for_status()
    return dict(resp.json()["result"])


def test_sync_publishes_every_change_once_then_only_updates(
    itsm_url: str, kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_module, "PAGE", 2)  # 5 changes: three pages
    made = [make_change(itsm_url, n) for n in range(5)]
    client = ServiceNowClient(
        ServiceNowConfig(itsm_url, "pipeline", SecretStr(PASSWORD), True, 5.0),
        RetryPolicy(budget_seconds=2, initial_seconds=0.01),
    )
    producer = Producer(producer_config(kafka_settings))
    # One change the ITSM holds with a date the pipeline cannot read: said and counted, skipped.
    bad = httpx.post(
        f"{itsm_url}/api/now/table/change_request",
        auth=("pipeline", PASSWORD),
        json={"short_description": "Broken", "type": "normal", "start_date": "next tuesday-ish"},
    )
    bad.raise_for_status()

    def unreadable() -> float:
        from prometheus_client import REGISTRY

        value = REGISTRY.get_sample_value(
            "itsm_pipeline_itsm_changes_unreadable_total", {"target": "servicenow"}
        )
        return value or 0.0

    before = unreadable()
    sync = ChangeSync(client, producer, SERDE, kafka_settings)
    assert sync.run_once() == 5  # the five good ones, despite the bad one among them
    assert unreadable() == before + 1
    assert sync.run_once() == 0  # nothing changed: nothing published again, the bad row not said again
    assert unreadable() == before + 1
    # A person approves one in the ITSM (within the same second, told apart by sys_mod_count).
    httpx.patch(
        f"{itsm_url}/api/now/table/change_request/{made[3]['sys_id']}",
        auth=("pipeline", PASSWORD),
        json={"state": "-2", "approval": "approved"},
    ).raise_for_status()
    assert sync.run_once() == 1
    boot, t = kafka_settings.kafka_bootstrap, kafka_settings.topic
    records = [SERDE.decode(m.value(), ChangeRecord) for m in consume(boot, t("itsm.changes"), 6, timeout=30)]
    assert [r.change_id for r in records[:5]] == [m["number"] for m in made]
    assert records[5].change_id == made[3]["number"] and records[5].status is ChangeStatus.SCHEDULED
    assert all(r.status is ChangeStatus.REQUESTED for r in records[:5])
    windows = [
        SERDE.decode(m.value(), MaintenanceWindow) for m in consume(boot, t("maintenance.windows"), 6, 10)
    ]
    # Only the approved change opens a maintenance window (on its CI, during its window).
    assert [(w.target, w.cancelled, w.change_id) for w in windows] == [("web-3", False, made[3]["number"])]
    client.close()
