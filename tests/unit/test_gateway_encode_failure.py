"""Valid input the gateway cannot encode is its own fault: 500 (the sender retries), never a 4xx."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from pydantic import SecretStr

from connectors.registry import webhook_sources
from connectors.sources.gateway import create_gateway
from ops.kafka.broker import free_port
from streams.core.kafka import AckedProducer
from streams.core.serde import AvroSerde, SchemaRegistry
from streams.core.settings import Settings
from tests.registry_emulator import RegistryEmulator, make_ca
from tests.servers import serve

SAMPLE = json.loads(
    (Path(__file__).resolve().parents[1] / "data/alertmanager/highcpu-group-firing.json").read_text()
)


def test_a_registry_refusal_is_a_500_so_the_sender_retries(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    emulator = RegistryEmulator("pipeline", "s3cret", incompatible=True)
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    producer = AckedProducer(settings)
    try:
        with serve(emulator.app(), ca.server_context()) as registry_url:
            registry = SchemaRegistry(registry_url, "pipeline", SecretStr("s3cret"), ca_file=str(ca.ca_file))
            serde = AvroSerde(registry=registry)
            with serve(create_gateway(settings, serde, producer, webhook_sources(settings))) as url:
                resp = httpx.post(f"{url}/v1/alerts/alertmanager", json=SAMPLE)
    finally:
        producer.close(timeout=1)
    assert resp.status_code == 500
    assert "retry later" in resp.json()["error"] and "incompatible" in resp.json()["error"]
