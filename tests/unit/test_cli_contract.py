"""itsmctl's contract: each action takes only its own options, one exit-code contract, --version,
shell completion, and one parser for every --since/--until."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from connectors import auth
from ops.cli import build_parser, main
from ops.runtime import EXIT_ERROR
from streams.core.kafka import note_refusal
from tests.cli import Itsmctl, runner

ROOT = Path(__file__).resolve().parents[2]


def leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every runnable command: (its words after itsmctl, its parser)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(path, parser)]
    out = []
    for name, child in subs[0].choices.items():
        out.extend(leaves(child, (*path, name)))
    return out


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings if s.startswith("--")}


def minimal(parser: argparse.ArgumentParser) -> list[str]:
    """The arguments a command requires, with valid values."""
    argv: list[str] = []
    for a in parser._actions:
        value = str(next(iter(a.choices))) if a.choices else "x"
        if not a.option_strings and a.nargs in (None, "?", "+"):
            argv.append(value)
        elif a.option_strings and a.required:
            argv += [a.option_strings[0], value]
    return argv


ALL = leaves(build_parser())


def test_every_group_and_action_is_reached() -> None:
    names = {" ".join(p) for p, _ in ALL}
    for expected in (
        "kafka up", "kafka status", "topics list", "worker", "gateway", "sink", "devitsm", "dlq replay",
        "gate serve", "gate check", "gate token", "changes sync", "changes report", "freeze import",
        "deploy report", "demo", "completion",
    ):  # fmt: skip
        assert expected in names


@pytest.mark.parametrize(("path", "parser"), ALL, ids=[" ".join(p) for p, _ in ALL])
def test_every_command_refuses_the_options_of_another(
    path: tuple[str, ...], parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]
) -> None:
    own = options(parser)
    foreign = sorted({o for _, other in ALL for o in options(other)} - set(own) - {"--help"})
    assert foreign, "some other command has an option this one lacks"
    for option in foreign[:: max(1, len(foreign) // 6)]:
        action = next(a for _, other in ALL for s, a in options(other).items() if s == option)
        extra = [option] + (
            [str(next(iter(action.choices))) if action.choices else "v"] if action.nargs != 0 else []
        )
        with pytest.raises(SystemExit) as exited:
            main([*path, *minimal(parser), *extra])
        assert exited.value.code == EXIT_ERROR
        err = capsys.readouterr().err
        assert f"itsmctl {' '.join(path)}: error: unrecognized arguments: {option}" in err, err


def test_gate_serve_with_check_options_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["gate", "serve", "--service", "x", "--commit", "y", "--wait"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --service x --commit y --wait" in capsys.readouterr().err


@pytest.fixture
def itsmctl(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Itsmctl:
    return runner(capsys, monkeypatch)


@pytest.mark.parametrize("token_file", ["/nonexistent/token", "/"])
def test_an_unreadable_gate_token_file_is_an_error_not_a_deny(token_file: str, itsmctl: Itsmctl) -> None:
    r = itsmctl(
        "gate",
        "check",
        "--service",
        "checkout",
        "--env",
        "production",
        ITSM_GATE_TOKEN_FILE=token_file,
    )
    assert r.returncode == 2, r.stderr
    assert "ITSM_GATE_TOKEN_FILE" in r.stderr and "cannot be read" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_exit_codes_are_written_in_help(itsmctl: Itsmctl) -> None:
    top = itsmctl("--help")
    assert top.returncode == 0
    assert "exit codes: 0 ok (or allow), 1 deny or problems found, 2 usage, configuration or" in top.stdout
    for title in ("run the pipeline:", "operate:", "change management:"):
        assert title in top.stdout
    # Short: one line per group, so no more lines than groups plus the fixed text around them.
    from ops.commands import EXTRA, GROUPS

    assert len(top.stdout.splitlines()) <= len(GROUPS) + len(EXTRA) + 30
    assert "exit codes:" in itsmctl("dlq", "replay", "--help").stdout


def test_a_usage_error_exits_2_and_a_missing_broker_too(itsmctl: Itsmctl) -> None:
    assert itsmctl("dlq", "frobnicate").returncode == 2
    assert itsmctl("topics").returncode == 2  # no action
    # A real process: what reaches the terminal, librdkafka's own output included.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_")}
    down = subprocess.run(
        [sys.executable, "-m", "ops.cli", "dlq", "list"],
        env={**env, "ITSM_KAFKA_BOOTSTRAP": "127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert down.returncode == 2 and "Traceback" not in down.stderr
    assert down.stderr.count("\n") == 1
    assert "cannot connect to Kafka (127.0.0.1:1: Connection refused); is it running" in down.stderr
    assert "%3|" not in down.stderr  # librdkafka's own lines stay out of a command's output


def test_version(itsmctl: Itsmctl) -> None:
    r = itsmctl("--version")
    assert r.returncode == 0 and r.stdout.startswith("itsmctl ") and r.stdout.split()[1][0].isdigit()


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_shell_completion_knows_every_command_and_option(shell: str, itsmctl: Itsmctl) -> None:
    r = itsmctl("completion", shell)
    assert r.returncode == 0
    for word in ("kafka", "dlq", "replay", "--error-class", "--dry-run", "freeze", "--timezone"):
        assert word in r.stdout


def test_bash_completion_script_is_valid_bash(tmp_path: Path, itsmctl: Itsmctl) -> None:
    script = tmp_path / "itsmctl.bash"
    script.write_text(itsmctl("completion", "bash").stdout)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, timeout=30).returncode == 0


def test_dlq_since_takes_an_age_like_changes_report(capsys: pytest.CaptureFixture[str]) -> None:
    from ops.runtime import CommandError, when

    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert when("30m", "--since", now) == datetime(2026, 11, 30, 11, 30, tzinfo=UTC)
    assert when("7d", "--since", now) == datetime(2026, 11, 23, 12, tzinfo=UTC)
    assert when("2026-11-30T13:00:00+01:00", "--until", now) == datetime(2026, 11, 30, 12, tzinfo=UTC)
    with pytest.raises(CommandError, match="--since: '2026-11-30T13:00:00' is neither"):
        when("2026-11-30T13:00:00", "--since", now)
    for path in (
        ("dlq", "show", "x.dlq"),
        ("dlq", "stats", "x.dlq"),
        ("dlq", "replay", "x.dlq"),
        ("changes", "report"),
    ):
        args = build_parser().parse_args([*path, "--since", "30m"])
        assert args.since == "30m"
    assert main(["dlq", "show", "x.dlq", "--since", "last tuesday"]) == 2
    assert "--since: 'last tuesday' is neither an RFC 3339 time" in capsys.readouterr().err


def test_a_taken_metrics_port_is_one_line_naming_the_setting(itsmctl: Itsmctl) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = itsmctl("worker", ITSM_WORKER_METRICS_PORT=str(port), ITSM_KAFKA_BOOTSTRAP="127.0.0.1:1")
    assert r.returncode == 2, r.stderr
    assert f"cannot serve /metrics on 127.0.0.1:{port}" in r.stderr
    assert "ITSM_WORKER_METRICS_PORT" in r.stderr and "Traceback" not in r.stderr


def test_a_library_warning_during_a_one_shot_command_is_a_json_line_on_stderr_not_in_its_answer(
    tmp_path: Path, itsmctl: Itsmctl, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker refusal librdkafka reports while `-o json` runs (CI saw one) must not corrupt the
    document on stdout."""
    path = tmp_path / "tokens.json"
    scope = "alerts:write:alertmanager"
    issued = itsmctl("tokens", "issue", "prom", "--scope", scope, "--file", str(path), "--offline")
    assert issued.returncode == 0
    load = auth.Tokens.load

    def load_with_a_refusal(p: Path) -> auth.Tokens:
        note_refusal(KafkaError.SASL_AUTHENTICATION_FAILED, "GroupCoordinator: SASL SCRAM-SHA-512 failed")
        return load(p)

    monkeypatch.setattr(auth.Tokens, "load", staticmethod(load_with_a_refusal))
    r = itsmctl("tokens", "list", "--file", str(path), "-o", "json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["principals"][0]["name"] == "prom"
    [line] = r.stderr.splitlines()
    assert json.loads(line)["event"] == "kafka_refused"
    # ITSM_LOG_LEVEL sets the level of a one-shot command too.
    quiet = itsmctl("tokens", "list", "--file", str(path), "-o", "json", ITSM_LOG_LEVEL="error")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert json.loads(quiet.stdout) == json.loads(r.stdout)
