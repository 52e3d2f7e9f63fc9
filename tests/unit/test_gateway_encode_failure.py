"""Valid input the gateway cannot encode is its own fault: 500 (the sender retries), never a 4xx."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from connectors.registry import webhook_sources
from connectors.sources.gateway import create_gateway
from ops.kafka.broker import free_port
from streams.core.kafka import AckedProducer
from streams.core.serde import AvroSerde, SchemaRegistryClient
from streams.core.settings import Settings
from tests.servers import serve

SAMPLE = json.loads(
    (Path(__file__).resolve().parents[1] / "data/alertmanager/highcpu-group-firing.json").read_text()
)


def test_a_registry_refusal_is_a_500_so_the_sender_retries() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            409, json={"error_code": 409, "message": "Schema being registered is incompatible"}
        )

    serde = AvroSerde(
        registry=SchemaRegistryClient("http://registry.test", transport=httpx.MockTransport(refuse))
    )
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    producer = AckedProducer(settings)
    try:
        with serve(create_gateway(settings, serde, producer, webhook_sources(settings))) as url:
            resp = httpx.post(f"{url}/v1/alerts/alertmanager", json=SAMPLE)
    finally:
        producer.close(timeout=1)
    assert resp.status_code == 500
    assert "retry later" in resp.json()["error"] and "incompatible" in resp.json()["error"]
