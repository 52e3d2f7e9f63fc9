"""Logs: one JSON object per line from our code and from every library through the logging module
(librdkafka's lines included), levels per component, no terminal escape codes."""

from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest
from pydantic import ValidationError

from streams.core import telemetry
from streams.core.settings import Settings


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_library_lines_are_json_with_their_logger_as_component_and_levels_per_component() -> None:
    buf = io.StringIO()
    telemetry.configure_logging("info", stream=buf, levels="sink=debug,librdkafka=warning")
    telemetry.get_logger("sink.servicenow").debug("sink_debug")  # sink=debug covers sink.*
    telemetry.get_logger("worker").debug("worker_debug")  # info by default: dropped
    telemetry.get_logger("worker").info("coloured", text="\x1b[31mred\x1b[0m done")
    logging.getLogger("librdkafka").warning("FAIL [rdkafka#producer-1] broker down")
    logging.getLogger("librdkafka").info("dropped: below warning")
    logging.getLogger("aiokafka").info("dropped: a quiet library's info")
    logging.getLogger("faust.worker").warning("kept")
    got = lines(buf)
    assert [(x["component"], x["event"], x["level"]) for x in got] == [
        ("sink.servicenow", "sink_debug", "debug"),
        ("worker", "coloured", "info"),
        ("librdkafka", "FAIL [rdkafka#producer-1] broker down", "warning"),
        ("faust.worker", "kept", "warning"),
    ]
    assert got[1]["text"] == "red done"
    assert "\x1b" not in buf.getvalue()
    assert all(str(x["timestamp"]).endswith("Z") for x in got)


def test_faust_gets_the_same_json_handler() -> None:
    buf = io.StringIO()
    telemetry.configure_logging("info", stream=buf)
    config = telemetry.faust_logging_config()
    logging.getLogger().handlers.clear()  # as mode does before applying the config
    logging.config.dictConfig(config)
    logging.getLogger("faust.tables").warning("from faust")
    assert lines(buf)[-1]["component"] == "faust.tables"


@pytest.mark.parametrize("bad", ["sink", "sink=loud", "=debug", "sink=debug;worker=info"])
def test_a_bad_log_levels_setting_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        Settings(log_levels=bad)
    with pytest.raises(ValueError, match="component=debug"):
        telemetry.parse_levels(bad)


def test_good_log_levels_parse() -> None:
    assert Settings(log_levels=" sink=debug, aiokafka = info ").log_levels
    assert telemetry.parse_levels("sink=debug,aiokafka=info") == {"sink": 10, "aiokafka": 20}


def test_secret_values_are_redacted_from_every_line_ours_and_the_libraries() -> None:
    from pydantic import SecretStr

    out = io.StringIO()
    telemetry.configure_logging("info", stream=out)
    settings = Settings(servicenow_password=SecretStr("pw-in-the-settings-42"))
    assert settings.servicenow_password.get_secret_value() == "pw-in-the-settings-42"
    telemetry.get_logger("unit").error("request_failed", url="https://u:pw-in-the-settings-42@itsm/x")
    logging.getLogger("httpx").error("GET https://itsm/x?token=%s failed", "pw-in-the-settings-42")
    telemetry.get_logger("unit").info("short", value="abc")  # too short to be registered: kept
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert "pw-in-the-settings-42" not in out.getvalue()
    assert lines[0]["url"] == "https://u:[redacted]@itsm/x"
    assert lines[1]["event"] == "GET https://itsm/x?token=[redacted] failed"
    assert lines[2]["value"] == "abc"


def test_a_scraper_gone_before_its_answer_is_one_json_line_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from http.server import BaseHTTPRequestHandler

    buf = io.StringIO()
    telemetry.configure_logging("info", stream=buf)
    server = telemetry.OpsHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    try:
        for exc in (BrokenPipeError(32, "Broken pipe"), ValueError("a bug")):
            try:
                raise exc
            except (BrokenPipeError, ValueError):
                server.handle_error(None, ("127.0.0.1", 50000))  # as socketserver calls it
    finally:
        server.server_close()
    assert capsys.readouterr().err == ""  # socketserver's default prints a traceback there
    got = [(x["event"], x["level"], x["error"]) for x in lines(buf)]
    assert got == [
        ("ops_http_client_gone", "info", "BrokenPipeError"),
        ("ops_http_request_failed", "error", "ValueError('a bug')"),
    ]
