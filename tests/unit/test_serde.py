"""Serde: exact bytes of both framings, round trips of every record, and every way decoding can fail."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_writer
from pydantic import SecretStr

from streams.core import models as m
from streams.core.serde import (
    AvroSerde,
    SchemaRegistry,
    SerdeError,
    canonical_fingerprint,
    millis_fields,
)
from tests.examples import EXAMPLES, raw_alert_bytes
from tests.registry_emulator import RegistryEmulator, ThrowawayCA, make_ca
from tests.servers import serve

# The current Alert schema's (v2: source PROMETHEUS, source_zone added) CRC-64-AVRO fingerprint, little-endian
# (pins the contract; v1's was 93f463f0a0a1e618).
ALERT_V2_FINGERPRINT = bytes.fromhex("b02f434db4a5e954")

# A minimal Alert, and its Avro binary body spelled out field by field (Avro 1.11 spec encoding).
TINY = m.Alert(
    fingerprint="fp",
    source=m.AlertSource.ALERTMANAGER,
    status=m.AlertStatus.FIRING,
    name="N",
    starts_at=datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
    received_at=datetime(1970, 1, 1, 0, 0, 2, tzinfo=UTC),
)
TINY_BODY = bytes(
    [
        0x04,
        0x66,
        0x70,  # fingerprint "fp": zigzag length 2, bytes
        0x00,  # source: enum index 0 (ALERTMANAGER)
        0x00,  # source_instance ""
        0x00,  # status: enum index 0 (FIRING)
        0x02,
        0x4E,  # name "N"
        0x00,
        0x00,
        0x00,  # severity, summary, description ""
        0x00,
        0x00,  # labels, annotations: empty maps (block count 0)
        0xD0,
        0x0F,  # starts_at 1000 ms: zigzag 2000 as varint
        0x00,  # ends_at: union branch 0 (null)
        0x00,  # generator_url: union branch 0 (null)
        0xA0,
        0x1F,  # received_at 2000 ms: zigzag 4000 as varint
        0x00,  # source_zone: union branch 0 (null)
    ]
)


@pytest.fixture(scope="module")
def serde() -> AvroSerde:
    return AvroSerde()


def test_crc64_avro_matches_the_avro_specification_vector() -> None:
    # Avro spec test data: the fingerprint of "null" is 7195948357588979594.
    assert canonical_fingerprint("null") == (7195948357588979594).to_bytes(8, "little")


def test_single_object_encoding_exact_bytes(serde: AvroSerde) -> None:
    assert serde.encode(TINY) == b"\xc3\x01" + ALERT_V2_FINGERPRINT + TINY_BODY


@dataclass
class Registry:
    emulator: RegistryEmulator
    url: str
    ca: ThrowawayCA

    def client(self, password: str = "s3cret", **kw: Any) -> SchemaRegistry:
        return SchemaRegistry(self.url, "pipeline", SecretStr(password), ca_file=str(self.ca.ca_file), **kw)


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def registry(test_ca: ThrowawayCA) -> Iterator[Registry]:
    emulator = RegistryEmulator("pipeline", "s3cret", first_id=7)
    with serve(emulator.app(), test_ca.server_context()) as url:
        yield Registry(emulator, url, test_ca)


def test_confluent_wire_format_exact_bytes_and_decode_through_registry(registry: Registry) -> None:
    serde = AvroSerde(registry=registry.client())
    data = serde.encode(TINY, topic="alerts.raw")
    assert data == b"\x00\x00\x00\x00\x07" + TINY_BODY
    assert registry.emulator.subjects == {"alerts.raw-value": [7]}
    # A consumer with an empty cache fetches the writer schema by id, over TLS with basic auth.
    fresh = AvroSerde(registry=registry.client())
    assert fresh.decode(data, m.Alert) == TINY
    assert registry.emulator.requests == ["POST /subjects/alerts.raw-value/versions", "GET /schemas/ids/7"]


def test_a_consumer_reads_both_framings(serde: AvroSerde, registry: Registry) -> None:
    with_registry = AvroSerde(registry=registry.client())
    single = serde.encode(TINY)
    confluent = with_registry.encode(TINY, topic="t")
    assert with_registry.decode(single, m.Alert) == with_registry.decode(confluent, m.Alert) == TINY


def test_the_registry_client_retries_a_registry_that_is_briefly_down(registry: Registry) -> None:
    registry.emulator.fail_next = 2
    assert AvroSerde(registry=registry.client()).encode(TINY, topic="t")[:5] == b"\x00\x00\x00\x00\x07"
    assert registry.emulator.requests == ["POST /subjects/t-value/versions"] * 3


def test_a_rotated_registry_password_is_taken_up_without_a_restart(
    registry: Registry, tmp_path: Path
) -> None:
    from streams.core.secrets import FileSecret

    path = tmp_path / "registry.password"
    path.write_text("s3cret")
    client = SchemaRegistry(
        registry.url, "pipeline", FileSecret(path), ca_file=str(registry.ca.ca_file), retries=0
    )
    serde = AvroSerde(registry=client)
    serde.encode(TINY, topic="before")
    registry.emulator.password = "n3w-secret"  # rotated at the registry ...
    path.write_text("n3w-secret")  # ... and in the file
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert serde.encode(TINY, topic="after")[:1] == b"\x00"  # refused once, reread, asked again
    assert registry.emulator.requests[-2:] == ["POST /subjects/after-value/versions"] * 2


def test_wrong_credentials_are_a_refusal_that_names_the_status(registry: Registry) -> None:
    with pytest.raises(SerdeError, match="schema registry refused t-value: 401 Unauthorized"):
        AvroSerde(registry=registry.client(password="wrong")).encode(TINY, topic="t")
    assert registry.emulator.subjects == {}


def test_tls_is_verified_against_the_configured_ca_only(registry: Registry) -> None:
    # Without the CA bundle the registry's certificate is not trusted: no schema leaves the process.
    untrusting = SchemaRegistry(registry.url, "pipeline", SecretStr("s3cret"), retries=0)
    with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        AvroSerde(registry=untrusting).encode(TINY, topic="t")
    assert registry.emulator.requests == []  # refused in the handshake, before any request


def test_without_auto_register_a_schema_is_only_looked_up(registry: Registry) -> None:
    lookup_only = AvroSerde(registry=registry.client(auto_register=False))
    with pytest.raises(SerdeError, match=r"schema registry refused alerts\.raw-value: 404 Subject not found"):
        lookup_only.encode(TINY, topic="alerts.raw")
    assert registry.emulator.subjects == {}
    registered = AvroSerde(registry=registry.client()).encode(TINY, topic="alerts.raw")
    assert (
        AvroSerde(registry=registry.client(auto_register=False)).encode(TINY, topic="alerts.raw")
        == registered
    )
    assert registry.emulator.requests[-1] == "POST /subjects/alerts.raw-value"


@pytest.mark.parametrize("model", list(EXAMPLES), ids=lambda t: t.__name__)
def test_every_record_type_round_trips(serde: AvroSerde, model: type[m.Record]) -> None:
    record = EXAMPLES[model]
    assert serde.decode(serde.encode(record), model) == record


@pytest.mark.parametrize("model", list(EXAMPLES), ids=lambda t: t.__name__)
def test_timestamps_are_written_as_fastavros_own_conversion_writes_them(
    serde: AvroSerde, model: type[m.Record]
) -> None:
    # encode() hands fastavro epoch milliseconds for timestamp-millis fields; the bytes must be
    # those fastavro writes from the aware datetimes themselves, before and after 1970.
    schema = serde.store.for_record(model)
    record = EXAMPLES[model]
    moments = {
        name: datetime(1969, 7, 20, 20, 17, 40, 123000, tzinfo=UTC) if i % 2 else datetime.now(UTC)
        for i, name in enumerate(sorted(schema.millis))
    }
    if moments:
        record = record.model_copy(update={n: m.to_utc(v) for n, v in moments.items()})
    plain = io.BytesIO()
    schemaless_writer(plain, schema.parsed, record.to_avro())
    assert serde.encode(record) == b"\xc3\x01" + schema.fingerprint + plain.getvalue()
    assert serde.decode(serde.encode(record), model) == record


def test_the_timestamp_fields_are_found_in_every_shape_of_their_type() -> None:
    assert millis_fields(
        {
            "fields": [
                {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "maybe", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
                {"name": "micros", "type": {"type": "long", "logicalType": "timestamp-micros"}},
                {"name": "count", "type": "long"},
            ]
        }
    ) == {"at", "maybe"}
    assert AvroSerde().store.for_record(m.Alert).millis == {"starts_at", "ends_at", "received_at"}


def test_timestamps_come_back_aware_and_in_utc(serde: AvroSerde) -> None:
    audit = EXAMPLES[m.AuditEvent]
    back = serde.decode(serde.encode(audit), m.AuditEvent)
    assert back.occurred_at.tzinfo is not None and back.occurred_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert back.occurred_at == audit.occurred_at


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "unknown framing"),
        (b'{"json": true}', "unknown framing"),
        (b"\xc3\x01\x00\x01", "truncated single-object header"),
        (b"\xc3\x01" + b"\x00" * 8 + b"\x00", "unknown schema fingerprint"),
        (b"\xc3\x01" + ALERT_V2_FINGERPRINT + TINY_BODY[:5], "cannot decode"),
        (b"\xc3\x01" + ALERT_V2_FINGERPRINT + TINY_BODY + b"\x00", "trailing bytes"),
        (b"\x00\x00\x00\x00\x01" + TINY_BODY, "no schema registry is configured"),
    ],
    ids=[
        "empty",
        "json",
        "truncated-header",
        "unknown-fingerprint",
        "truncated-body",
        "trailing",
        "no-registry",
    ],
)
def test_undecodable_bytes_raise_a_schema_error_that_says_why(
    serde: AvroSerde, data: bytes, fragment: str
) -> None:
    with pytest.raises(SerdeError) as info:
        serde.decode(data, m.Alert)
    assert fragment in str(info.value)
    assert info.value.error_class == "schema"


def test_a_timestamp_beyond_datetimes_range_is_a_schema_error_not_a_crash(serde: AvroSerde) -> None:
    """Found by the fuzz test: corrupt bytes whose timestamp-millis lies past year 9999 made
    fastavro raise OverflowError, which nothing caught (a view or guard would have died)."""
    import fastavro

    window = m.MaintenanceWindow.model_validate(
        {
            "window_id": "w",
            "kind": "MAINTENANCE",
            "scope": "GLOBAL",
            "starts_at": "2026-12-01T00:00:00Z",
            "ends_at": "2026-12-01T01:00:00Z",
            "updated_at": "2026-12-01T00:00:00Z",
        }
    )
    good = serde.encode(window)  # single-object framing: 2 marker bytes, an 8-byte fingerprint
    raw = serde.store.for_record(m.MaintenanceWindow).parsed_raw
    plain = json.loads(json.dumps(raw).replace('"logicalType": "timestamp-millis"', '"x": 0'))
    record = {**window.to_avro(), "starts_at": 2**62, "ends_at": 0, "updated_at": 0}
    stream = io.BytesIO()
    fastavro.schemaless_writer(stream, fastavro.parse_schema(plain), record)
    with pytest.raises(SerdeError) as info:
        serde.decode(good[:10] + stream.getvalue(), m.MaintenanceWindow)
    assert "OverflowError" in str(info.value) and info.value.error_class == "schema"


def test_decodable_but_invalid_record_is_a_validation_error(serde: AvroSerde) -> None:
    with pytest.raises(SerdeError) as info:
        serde.decode(raw_alert_bytes(fingerprint=""), m.Alert)  # Avro accepts it, the model does not
    assert info.value.error_class == "validation"
    assert "fingerprint" in str(info.value)


def test_unknown_registry_id_is_a_schema_error(registry: Registry) -> None:
    serde = AvroSerde(registry=registry.client())
    with pytest.raises(SerdeError, match="schema id 99 is unknown"):
        serde.decode(b"\x00\x00\x00\x00\x63" + TINY_BODY, m.Alert)


def test_a_record_of_another_type_is_a_serde_error_not_a_crash() -> None:
    from streams.core.models import ChangeCommand, DeploymentEvent

    serde = AvroSerde()
    event = DeploymentEvent.model_validate(
        {
            "event_id": "e",
            "deployment_id": "d",
            "phase": "STARTED",
            "service": "s",
            "environment": "production",
            "occurred_at": "2026-11-27T14:00:00Z",
        }
    )
    with pytest.raises(SerdeError, match="cannot read the writer's schema as"):
        serde.decode(serde.encode(event), ChangeCommand)
