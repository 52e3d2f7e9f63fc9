"""The README's direct-producer example really publishes a decodable Alert, keyed like the gateway does."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streams.core.models import Alert
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.kafka_util import consume

pytestmark = pytest.mark.integration


def test_produce_alert_example_publishes_avro_keyed_by_fingerprint(kafka_settings: Settings) -> None:
    secured = kafka_settings.kafka_security_protocol == "SASL_SSL"
    credentials = (
        [
            "--username",
            str(kafka_settings.kafka_sasl_username),
            "--password-file",
            os.environ["ITSM_KAFKA_SASL_PASSWORD_FILE"],
            "--ca-file",
            str(kafka_settings.kafka_ca_file),
        ]
        if secured
        else []
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ops.examples.produce_alert",
            "--bootstrap",
            kafka_settings.kafka_bootstrap,
            "--topic-prefix",
            kafka_settings.topic_prefix,
            "--fingerprint",
            "disk-db-1",
            "--name",
            "DiskFull",
            "--severity",
            "critical",
            "--label",
            "instance=db-1:9100",
            *credentials,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "delivered disk-db-1" in result.stdout
    (msg,) = consume(kafka_settings.kafka_bootstrap, kafka_settings.topic("alerts.raw"), 1, timeout=30)
    alert = AvroSerde().decode(msg.value(), Alert)
    assert msg.key() == b"disk-db-1" and alert.labels == {"alertname": "DiskFull", "instance": "db-1:9100"}
    # The same key from the gateway's producer lands on the same partition.
    assert f"alerts.raw[{msg.partition()}]" in result.stdout


def test_bad_arguments_are_explained() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ops.examples.produce_alert",
            "--fingerprint",
            "x",
            "--name",
            "y",
            "--label",
            "novalue",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "expected KEY=VALUE" in result.stderr
