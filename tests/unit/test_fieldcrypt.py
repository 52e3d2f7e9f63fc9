"""Field-level encryption: sensitive fields unreadable in the bytes, readable with the key, keys
rotated without losing what older keys encrypted, and every failure a clear encryption error."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from streams.core import fieldcrypt
from streams.core import models as m
from streams.core.fieldcrypt import FieldCrypt, FieldCryptError, KeyRing, plan_for
from streams.core.serde import AvroSerde, SchemaStore, SerdeError
from streams.core.watched import Watched
from streams.processors.alerts import TableStore
from streams.stages.alerts.state import AlertState, decode_state
from tests.cli import runner
from tests.examples import EXAMPLES, T0, alert

SECRET_TEXT = "call Jane Doe <jane.doe@example.com> on +49 170 5550123"


def keyed(path: Path) -> tuple[AvroSerde, Watched[KeyRing]]:
    """A serde whose keys follow path on every call (no once-a-second throttle in a test)."""
    keys = Watched(path, KeyRing.load, errors=(FieldCryptError,), what="field_keys")
    return AvroSerde(SchemaStore(), crypt=FieldCrypt(keys)), keys


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "field-keys.toml"
    fieldcrypt.rotate(path)
    return path


def personal_alert() -> m.Alert:
    return alert(description=SECRET_TEXT, annotations={"acknowledged_by": "jane.doe@example.com"})


def test_sensitive_fields_are_unreadable_on_the_wire_and_read_back_with_the_key(key_file: Path) -> None:
    serde, _ = keyed(key_file)
    record = personal_alert()
    data = serde.encode(record)
    assert b"Jane" not in data and b"jane.doe" not in data
    assert data.count(b"enc:v1:") == 2  # description and the one annotation
    assert b"HighCPU" in data  # what is not marked stays as it was (labels, name)
    assert serde.decode(data, m.Alert) == record
    # A reader without the keys sees ciphertext, never the text.
    seen = AvroSerde().decode(data, m.Alert)
    assert seen.description.startswith("enc:v1:") and SECRET_TEXT not in seen.description
    # The same text twice gives different ciphertexts (a fresh nonce each time).
    assert serde.encode(record) != data


def test_schema_marks_are_where_the_issue_says_and_do_not_change_fingerprints() -> None:
    store = SchemaStore()
    marked = {name: plan_for(raw).fields() for name, raw in store.expanded.items()}
    assert marked["io.itsmpipeline.alerts.Alert"] == [
        "io.itsmpipeline.alerts.Alert.description",
        "io.itsmpipeline.alerts.Alert.annotations",
    ]
    # The alert inside a suppressed alert is encrypted like the alert itself.
    assert marked["io.itsmpipeline.alerts.SuppressedAlert"] == marked["io.itsmpipeline.alerts.Alert"]
    assert (
        "io.itsmpipeline.deploy.DeploymentEvent.triggered_by"
        in marked["io.itsmpipeline.deploy.DeploymentEvent"]
    )
    # People named in the audit log and in incidents as the ITSM has them (#16: no person kept in
    # clear on a long-lived topic).
    assert "io.itsmpipeline.audit.AuditEvent.actor" in marked["io.itsmpipeline.audit.AuditEvent"]
    assert {f.rsplit(".", 1)[1] for f in marked["io.itsmpipeline.itsm.IncidentRecord"]} == {
        "assigned_to",
        "resolved_by",
        "updated_by",
    }
    # The attribute is outside the Parsing Canonical Form: the released fingerprint is unchanged.
    from tests.unit.test_serde import ALERT_V2_FINGERPRINT

    assert store.by_fingerprint.get(ALERT_V2_FINGERPRINT) is not None


def test_every_record_round_trips_with_keys(key_file: Path) -> None:
    serde, _ = keyed(key_file)
    for model, example in EXAMPLES.items():
        assert serde.decode(serde.encode(example), model) == example, model.__name__


def test_nested_alert_of_a_suppressed_alert_is_encrypted(key_file: Path) -> None:
    serde, _ = keyed(key_file)
    kept = m.SuppressedAlert(alert=personal_alert(), reason="maintenance", suppressed_at=T0)
    data = serde.encode(kept)
    assert b"Jane" not in data
    assert serde.decode(data, m.SuppressedAlert).alert.description == SECRET_TEXT


def test_rotation_keeps_old_records_readable_and_retiring_the_key_dead_letters_them(key_file: Path) -> None:
    serde, keys = keyed(key_file)
    old = serde.encode(personal_alert())
    first = keys.get().active
    new_id, ids = fieldcrypt.rotate(key_file)
    assert new_id != first and ids == [first, new_id]
    new = serde.encode(personal_alert())  # the running serde picked the new key up
    assert f"enc:v1:{new_id}:".encode() in new and f"enc:v1:{first}:".encode() in old
    assert serde.decode(old, m.Alert).description == SECRET_TEXT  # the old key still decrypts
    with pytest.raises(FieldCryptError, match="active key"):
        fieldcrypt.retire(key_file, new_id)
    fieldcrypt.retire(key_file, str(first))
    assert serde.decode(new, m.Alert).description == SECRET_TEXT
    with pytest.raises(SerdeError) as info:
        serde.decode(old, m.Alert)
    assert info.value.error_class == "encryption"
    assert f"key '{first}'" in str(info.value) and "Alert.description" in str(info.value)


def test_a_value_moved_to_another_field_or_altered_does_not_decrypt(key_file: Path) -> None:
    serde, _ = keyed(key_file)
    seen = AvroSerde().decode(serde.encode(personal_alert()), m.Alert)  # ciphertext, as on the topic
    moved = EXAMPLES[m.IncidentCommand].model_copy(update={"description": seen.description})
    with pytest.raises(SerdeError, match="does not decrypt"):
        serde.decode(AvroSerde().encode(moved), m.IncidentCommand)
    body = seen.description
    flipped = body[:-3] + ("A" if body[-3] != "A" else "B") + body[-2:]
    with pytest.raises(SerdeError, match="does not decrypt"):
        serde.decode(AvroSerde().encode(seen.model_copy(update={"description": flipped})), m.Alert)


def test_without_keys_a_strict_reader_refuses_ciphertext_and_a_tool_passes_it(key_file: Path) -> None:
    serde, _ = keyed(key_file)
    data = serde.encode(personal_alert())
    strict = AvroSerde(SchemaStore(), crypt=FieldCrypt(None))
    with pytest.raises(SerdeError, match="no field keys are configured") as info:
        strict.decode(data, m.Alert)
    assert info.value.error_class == "encryption"
    assert (
        AvroSerde(SchemaStore(), crypt=FieldCrypt(None, strict=False))
        .decode(data, m.Alert)
        .description.startswith("enc:v1:")
    )
    # Without keys nothing is encrypted on the way out.
    assert SECRET_TEXT.encode() in strict.encode(personal_alert())


def test_a_bad_edit_keeps_the_last_good_keys(key_file: Path) -> None:
    serde, keys = keyed(key_file)
    good = key_file.read_text()
    key_file.write_text(good.replace("[keys]", "[keyz]"))
    data = serde.encode(personal_alert())
    assert keys.error is not None and "no [keys] table" in keys.error
    assert serde.decode(data, m.Alert).description == SECRET_TEXT


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('active = "a"\n[keys]\na = "not base64!"\n', "not base64"),
        ('active = "a"\n[keys]\na = "AAAA"\n', "has 3 bytes, AES-256 needs 32"),
        ('active = "b"\n[keys]\na = "' + "A" * 43 + '="\n', "names no key"),
        ('active = "a b"\n[keys]\n"a b" = "' + "A" * 43 + '="\n', "is not"),
        ("active = ", "not TOML"),
    ],
)
def test_key_file_errors_name_the_problem(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(text)
    with pytest.raises(FieldCryptError, match=error):
        KeyRing.load(path)


def test_a_sensitive_mark_on_a_number_is_refused() -> None:
    bad = {"type": "record", "name": "X", "fields": [{"name": "n", "type": "int", "sensitive": True}]}
    with pytest.raises(FieldCryptError, match="only a string"):
        plan_for(bad)


def test_alert_state_in_the_changelog_keeps_the_alert_encrypted(key_file: Path) -> None:
    serde, _ = keyed(key_file)
    table: dict[str, bytes] = {}
    store = TableStore(table, serde)
    state = AlertState(fingerprint="fp1", first_seen=T0, last_seen=T0, alert=personal_alert().to_avro())
    store.put(state)
    assert b"Jane" not in table["fp1"] and b"jane.doe" not in table["fp1"]
    assert str(decode_state(table["fp1"]).alert["description"]).startswith("enc:v1:")
    back = store.get("fp1")
    assert back is not None and back.alert is not None and back.alert["description"] == SECRET_TEXT
    assert state.alert is not None and state.alert["description"] == SECRET_TEXT  # put left it alone


def test_itsmctl_fieldkeys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    itsmctl = runner(capsys, monkeypatch)
    path = tmp_path / "keys.toml"
    made = itsmctl("fieldkeys", "rotate", "--offline", ITSM_FIELD_KEYS_FILE=str(path))
    assert made.returncode == 0 and "not audited (--offline)" in made.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = KeyRing.load(path).active
    assert itsmctl("fieldkeys", "rotate", "--offline", "--file", str(path)).returncode == 0
    listed = itsmctl("fieldkeys", "list", "-o", "json", "--file", str(path))
    assert listed.returncode == 0 and f'"{first}"' in listed.stdout and "keys" in listed.stdout
    assert path.read_text().split("[keys]")[1].split('"')[3] not in listed.stdout  # never key material
    active = KeyRing.load(path).active
    refused = itsmctl("fieldkeys", "retire", str(active), "--offline", "--file", str(path))
    assert refused.returncode == 2 and "active key" in refused.stderr and "Traceback" not in refused.stderr
    assert itsmctl("fieldkeys", "retire", str(first), "--offline", "--file", str(path)).returncode == 0
    assert KeyRing.load(path).keys.keys() == {active}
    missing = itsmctl("fieldkeys", "list")
    assert missing.returncode == 2 and "ITSM_FIELD_KEYS_FILE" in missing.stderr
    shown = itsmctl("fieldkeys", "fields")
    assert shown.returncode == 0 and "io.itsmpipeline.alerts.Alert: description, annotations" in shown.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("active = 1\n")
    broken = itsmctl("fieldkeys", "fields", ITSM_FIELD_KEYS_FILE=str(bad))
    assert broken.returncode == 2 and "no [keys] table" in broken.stderr
