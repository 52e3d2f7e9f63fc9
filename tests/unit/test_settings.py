"""Settings: env prefix, *_FILE secrets, frozen, secrets never printed, TLS verification never off."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.core.settings import Settings


def test_defaults_bind_loopback_and_name_topics_without_prefix() -> None:
    s = Settings()
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.gateway_host == s.devitsm_host == s.metrics_host == "127.0.0.1"
    assert s.topic("alerts.raw") == "alerts.raw"


def test_environment_variables_use_the_itsm_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITSM_KAFKA_BOOTSTRAP", "127.0.0.1:1234")
    monkeypatch.setenv("ITSM_TOPIC_PREFIX", "tenant1.")
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "ignored:1")
    s = Settings()
    assert s.kafka_bootstrap == "127.0.0.1:1234"
    assert s.topic("alerts.raw") == "tenant1.alerts.raw"


def test_a_secret_can_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret-from-file\n")
    monkeypatch.setenv("ITSM_SERVICENOW_PASSWORD_FILE", str(secret))
    s = Settings()
    assert s.servicenow_password.get_secret_value() == "s3cret-from-file"


def test_the_plain_variable_wins_over_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file")
    monkeypatch.setenv("ITSM_SERVICENOW_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("ITSM_SERVICENOW_PASSWORD", "from-env")
    assert Settings().servicenow_password.get_secret_value() == "from-env"


def test_an_unreadable_secret_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ITSM_DEVITSM_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"ITSM_DEVITSM_PASSWORD_FILE names .* cannot be read"):
        Settings()


def test_secrets_never_appear_in_repr_or_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITSM_SERVICENOW_PASSWORD", "hunter2-very-secret")
    s = Settings()
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s.model_dump())
    assert "hunter2" not in s.model_dump_json()


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.kafka_bootstrap = "elsewhere:9092"  # type: ignore[misc]


def test_invalid_values_are_refused_with_the_field_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITSM_GATEWAY_PORT", "not-a-port")
    with pytest.raises(ValidationError, match="gateway_port"):
        Settings()


@pytest.mark.parametrize("value", ["false", "0", "no"])
def test_tls_verification_cannot_be_turned_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ITSM_SERVICENOW_VERIFY_TLS", value)
    with pytest.raises(ValueError, match="cannot turn TLS verification off"):
        Settings().servicenow_verify()


def test_tls_verification_accepts_a_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITSM_SERVICENOW_VERIFY_TLS", "/etc/ssl/certs/corp-ca.pem")
    assert Settings().servicenow_verify() == "/etc/ssl/certs/corp-ca.pem"
    monkeypatch.delenv("ITSM_SERVICENOW_VERIFY_TLS")
    assert Settings().servicenow_verify() is True


def test_the_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`ITSM_{name.upper()}`" not in readme]
    assert missing == []


def test_loggers_made_at_import_still_render_json_once_configured() -> None:
    import io
    import json

    from streams.core import telemetry

    early = telemetry.get_logger("early")  # as a module-level logger would be
    out = io.StringIO()
    telemetry.configure_logging("info", stream=out)
    early.info("hello", topic="alerts.raw", partition=1, offset=7)
    line = json.loads(out.getvalue())
    assert line["event"] == "hello" and line["component"] == "early" and line["offset"] == 7
    assert line["timestamp"].endswith("Z")


def test_worker_heartbeats_must_fit_three_times_into_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("ITSM_WORKER_SESSION_TIMEOUT_SECONDS", "6")
    monkeypatch.setenv("ITSM_WORKER_HEARTBEAT_INTERVAL_SECONDS", "3")
    with pytest.raises(ValidationError, match="at most a third"):
        Settings()
    monkeypatch.setenv("ITSM_WORKER_HEARTBEAT_INTERVAL_SECONDS", "2")
    assert Settings().worker_session_timeout_seconds == 6
    monkeypatch.setenv("ITSM_WORKER_SESSION_TIMEOUT_SECONDS", "5")
    with pytest.raises(ValidationError):
        Settings()  # below the broker's group.min.session.timeout.ms
