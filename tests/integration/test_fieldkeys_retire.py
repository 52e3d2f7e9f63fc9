"""Retiring a field key against the real broker: refused (exit 1, topics and counts named) while
retained records hold values it sealed, on a topic, its dead letters, the worker's state
changelog or its parked change requests; done and audited once none does; refused (exit 2) when
the deployment's topics cannot be read; --shred retires it anyway."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from streams.core import fieldcrypt
from streams.core import models as m
from streams.core.fieldcrypt import FieldCrypt, FieldCryptError, KeyRing
from streams.core.messages import Consumed
from streams.core.serde import AvroSerde, SchemaStore, SerdeError
from streams.core.settings import Settings
from streams.core.watched import Watched
from streams.processors.alerts import TableStore
from streams.processors.changes import Parked
from streams.stages.alerts.state import AlertState
from tests.cli import Itsmctl
from tests.examples import EXAMPLES, T0, alert
from tests.kafka_util import conf, consume_until, produce

pytestmark = pytest.mark.integration


def keyed(path: Path) -> AvroSerde:
    """A serde that seals with the file's active key as the file is on every call."""
    return AvroSerde(
        SchemaStore(), crypt=FieldCrypt(Watched(path, KeyRing.load, errors=(FieldCryptError,), what="keys"))
    )


def personal(fp: str) -> m.Alert:
    return alert(fingerprint=fp, description="call Jane Doe on +49 170 5550123")


def test_a_key_that_sealed_retained_records_stays_until_shredded_on_purpose(
    kafka_settings: Settings, itsmctl: Itsmctl, tmp_path: Path
) -> None:
    boot, t = kafka_settings.kafka_bootstrap, kafka_settings.topic
    env = {
        "ITSM_KAFKA_BOOTSTRAP": boot,
        "ITSM_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "ITSM_APP_ID": kafka_settings.app_id,
        "ITSM_FIELD_KEYS_FILE": str(tmp_path / "keys.toml"),
    }
    path = Path(env["ITSM_FIELD_KEYS_FILE"])
    old, _ = fieldcrypt.rotate(path)
    serde = keyed(path)
    # Under the old key: three alerts, one of them also dead-lettered, one alert's state in the
    # worker's table changelog (MessagePack, the alert inside still sealed), and a change request
    # parked in the changes table (JSON, the record's bytes base64-encoded).
    sealed = [serde.encode(personal(f"fp{i}")) for i in range(3)]
    produce(boot, t("alerts.raw"), [(f"fp{i}".encode(), v, []) for i, v in enumerate(sealed)])
    produce(boot, t("alerts.raw.dlq"), [(b"fp0", sealed[0], [("dlq.error.class", b"network")])])
    changelog = f"{kafka_settings.app_id}-alert-state-changelog"
    parked_log = f"{kafka_settings.app_id}-change-parked-changelog"
    elsewhere = f"other-{kafka_settings.topic_prefix}alerts.raw"  # another deployment's, same broker
    admin = AdminClient(conf(boot))  # kept until its futures are done
    made = admin.create_topics(
        [
            NewTopic(changelog, 2, 1, config={"cleanup.policy": "compact"}),
            NewTopic(parked_log, 2, 1, config={"cleanup.policy": "compact"}),
            NewTopic(elsewhere, 1, 1),
        ]
    )
    for future in made.values():
        future.result(30)
    table: dict[str, bytes] = {}
    TableStore(table, serde).put(
        AlertState(fingerprint="fp9", first_seen=T0, last_seen=T0, alert=personal("fp9").to_avro())
    )
    produce(boot, changelog, [(b"fp9", table["fp9"], [])])
    request = EXAMPLES[m.ChangeCommand].model_copy(update={"description": "ask Jane Doe, +49 170 5550123"})
    sealed_request = serde.encode(request)
    assert f"enc:v1:{old}:".encode() in sealed_request
    waiting = Parked.of(Consumed(b"chg-1", sealed_request, [], t("change.requests"), 0, 7), T0, ["ci-web-1"])
    produce(boot, parked_log, [(waiting.slot.encode(), waiting.model_dump_json().encode(), [])])
    # A rotation: what is written from now on is sealed with the new key, which the old one never reads.
    new, _ = fieldcrypt.rotate(path)
    produce(boot, t("alerts.raw"), [(b"fp5", serde.encode(personal("fp5")), [])])
    produce(boot, elsewhere, [(b"x", sealed[1], [])])  # none of this deployment's business

    refused = itsmctl("fieldkeys", "retire", str(old), **env)
    assert refused.returncode == 1, refused.stderr
    assert "Traceback" not in refused.stderr
    assert f"key {old} still sealed values in 6 retained records" in refused.stderr
    assert f"{t('alerts.raw')} (3)" in refused.stderr and f"{t('alerts.raw.dlq')} (1)" in refused.stderr
    assert f"{changelog} (1)" in refused.stderr and f"{parked_log} (1)" in refused.stderr
    assert elsewhere not in refused.stderr
    assert "--shred" in refused.stderr
    assert set(KeyRing.load(path).keys) == {old, new}  # the key stayed
    assert serde.decode(sealed[2], m.Alert).description.startswith("call Jane")

    # The new key sealed one alert since: it stays too.
    third, _ = fieldcrypt.rotate(path)
    kept = itsmctl("fieldkeys", "retire", str(new), **env)
    assert kept.returncode == 1 and f"key {new} still sealed values in 1 retained records" in kept.stderr
    # A key that sealed nothing retained goes, and its audit record says what was read.
    idle, _ = fieldcrypt.rotate(path)
    gone = itsmctl("fieldkeys", "retire", str(third), "--actor", "sec-officer", **env)
    assert gone.returncode == 0, gone.stderr
    assert "7 retained records on 4 topics read, none holds a value it sealed" in gone.stderr
    assert set(KeyRing.load(path).keys) == {old, new, idle}
    (audit,) = consume_until(boot, t("audit.events"), lambda _msg: True)
    event = keyed(path).decode(audit.value() or b"", m.AuditEvent)  # its details are sealed too
    assert event.action == "fieldkey.retire" and event.subject_id == third and event.actor == "sec-officer"
    assert event.details["checked"] == "7 retained records on 4 topics read: none sealed with it"

    # A deployment whose topics the broker does not show: nothing could be read, nothing is retired.
    unseen = itsmctl("fieldkeys", "retire", str(new), **{**env, "ITSM_TOPIC_PREFIX": "never-applied."})
    assert (
        unseen.returncode == 2 and "cannot read" in unseen.stderr and "itsmctl topics apply" in unseen.stderr
    )
    assert "Traceback" not in unseen.stderr and new in KeyRing.load(path).keys

    # --shred retires the old key anyway: what it sealed can no longer be read.
    shredded = itsmctl("fieldkeys", "retire", str(old), "--shred", **env)
    assert shredded.returncode == 0, shredded.stderr
    assert old not in KeyRing.load(path).keys
    with pytest.raises(SerdeError) as info:
        keyed(path).decode(sealed[2], m.Alert)
    assert info.value.error_class == "encryption"


def test_retire_names_the_broker_that_does_not_answer(itsmctl: Itsmctl, tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    old, _ = fieldcrypt.rotate(path)
    fieldcrypt.rotate(path)
    down = itsmctl(
        "fieldkeys", "retire", str(old), ITSM_FIELD_KEYS_FILE=str(path), ITSM_KAFKA_BOOTSTRAP="127.0.0.1:9"
    )
    assert down.returncode == 2 and "cannot connect to Kafka" in down.stderr
    assert "Traceback" not in down.stderr
    assert old in KeyRing.load(path).keys
