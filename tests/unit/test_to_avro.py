"""Record.to_avro: what model_dump gives, taken from the fields directly when no field nests a model."""

from __future__ import annotations

import pytest

from streams.core import models as m
from streams.core.models import _flat
from tests.examples import EXAMPLES


@pytest.mark.parametrize("record", list(EXAMPLES.values()), ids=lambda r: type(r).__name__)
def test_to_avro_equals_model_dump(record: m.Record) -> None:
    assert record.to_avro() == record.model_dump(mode="python")


def test_only_records_without_nested_models_take_their_fields_directly() -> None:
    assert _flat(m.Alert) and _flat(m.IncidentCommand) and _flat(m.SinkResult)
    # A nested model must become a dict for fastavro: these go through model_dump.
    assert not _flat(m.SuppressedAlert)  # alert: Alert
    assert not _flat(m.ConfigurationItem)  # relationships: list[Relationship]
    assert not _flat(m.MaintenanceWindow)  # recurrence: Recurrence | None


def test_a_nested_record_is_dumped_to_plain_dicts() -> None:
    alert = EXAMPLES[m.Alert]
    assert isinstance(alert, m.Alert)
    suppressed = m.SuppressedAlert(alert=alert, reason="window", suppressed_at=alert.received_at)
    value = suppressed.to_avro()
    assert type(value["alert"]) is dict and value["alert"] == alert.model_dump(mode="python")


def test_the_result_is_a_new_dict_each_time() -> None:
    alert = EXAMPLES[m.Alert]
    first = alert.to_avro()
    first["name"] = "changed"  # serde.encode replaces top-level fields (times, ciphertext)
    assert alert.name != "changed" and alert.to_avro()["name"] == alert.name
