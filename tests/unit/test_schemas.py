"""The Avro contract: documented, evolvable, matching the pydantic models, every release still readable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streams.core import models as m
from streams.core.serde import SchemaStore, canonical_fingerprint, compatibility_problems

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "avro"
CURRENT = sorted(SCHEMA_DIR.glob("*.avsc"))
HISTORY = sorted((SCHEMA_DIR / "history").glob("*.avsc"))


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def test_there_is_one_schema_per_record_type() -> None:
    names = {p.stem for p in CURRENT}
    assert names == {t.__name__ for t in m.RECORD_TYPES}
    store = SchemaStore()
    for model in m.RECORD_TYPES:
        assert store.for_record(model).name == model.avro_name


@pytest.mark.parametrize("path", CURRENT, ids=lambda p: p.stem)
def test_schema_is_documented_and_namespaced(path: Path) -> None:
    schema = load(path)
    assert schema["namespace"].startswith("io.itsmpipeline.")
    assert schema.get("doc")
    for field in schema["fields"]:
        assert field.get("doc"), f"{path.stem}.{field['name']} has no doc"


@pytest.mark.parametrize("path", CURRENT, ids=lambda p: p.stem)
def test_timestamps_use_the_timestamp_millis_logical_type(path: Path) -> None:
    text = path.read_text()
    for field in load(path)["fields"]:
        if field["name"].endswith("_at") or field["name"].startswith("planned_"):
            assert "timestamp-millis" in json.dumps(field["type"]), f"{path.stem}.{field['name']}"
    assert '"logicalType": "timestamp-micros"' not in text


@pytest.mark.parametrize("model", m.RECORD_TYPES, ids=lambda t: t.__name__)
def test_pydantic_model_fields_match_the_schema(model: type[m.Record]) -> None:
    schema = load(SCHEMA_DIR / f"{model.__name__}.avsc")
    assert list(model.model_fields) == [f["name"] for f in schema["fields"]]


@pytest.mark.parametrize("path", CURRENT, ids=lambda p: p.stem)
def test_the_current_schema_is_a_released_version(path: Path) -> None:
    """Changing a schema means adding history/<Name>.vN.avsc too, so old data stays readable."""
    released = {canonical_fingerprint(load(h)) for h in HISTORY if h.name.startswith(path.stem + ".")}
    current = SchemaStore().current[f"{load(path)['namespace']}.{path.stem}"]
    assert current.fingerprint in released, (
        f"{path.name} changed: write its expanded form to history/{path.stem}.v<N+1>.avsc once compatible"
    )


@pytest.mark.parametrize("old", HISTORY, ids=lambda p: p.stem)
def test_every_released_version_is_readable_with_the_current_schema(old: Path) -> None:
    store = SchemaStore()
    current = next(v for k, v in store.expanded.items() if k.endswith("." + old.name.split(".")[0]))
    assert compatibility_problems(load(old), current) == []


def test_a_new_field_without_default_is_caught_as_incompatible() -> None:
    old = load(SCHEMA_DIR / "Alert.avsc")
    new = json.loads(json.dumps(old))
    new["fields"].append({"name": "tenant", "type": "string", "doc": "no default"})
    assert compatibility_problems(old, new)
    new["fields"][-1]["default"] = ""
    assert compatibility_problems(old, new) == []


def test_removing_an_enum_symbol_is_caught_as_incompatible() -> None:
    old = load(SCHEMA_DIR / "Alert.avsc")
    new = json.loads(json.dumps(old))
    status = next(f for f in new["fields"] if f["name"] == "status")
    status["type"]["symbols"] = ["FIRING"]
    assert compatibility_problems(old, new)


def test_changing_a_field_type_is_caught_as_incompatible() -> None:
    old = load(SCHEMA_DIR / "IncidentCommand.avsc")
    new = json.loads(json.dumps(old))
    count = next(f for f in new["fields"] if f["name"] == "alert_count")
    count["type"], count["default"] = "string", "1"
    assert compatibility_problems(old, new)
