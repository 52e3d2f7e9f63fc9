"""itsmctl's change commands fail with exit code 2 and a clear message when they cannot work."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from connectors.auth import Scope, Tokens, token_hash
from tests.cli import Itsmctl, runner

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def itsmctl(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Itsmctl:
    return runner(capsys, monkeypatch)


def test_gate_check_without_a_token_is_an_error(itsmctl: Itsmctl) -> None:
    r = itsmctl("gate", "check", "--service", "s", "--env", "production")
    assert r.returncode == 2 and "ITSM_GATE_TOKEN_FILE" in r.stderr


def test_gate_check_against_an_unreachable_gate_is_an_error_not_a_denial(
    tmp_path: Path, itsmctl: Itsmctl
) -> None:
    token = tmp_path / "t"
    token.write_text("secret-token\n")
    r = itsmctl(
        "gate",
        "check",
        "--service",
        "s",
        "--env",
        "production",
        ITSM_GATE_TOKEN_FILE=str(token),
        ITSM_GATE_URL="http://127.0.0.1:9",
    )
    assert r.returncode == 2 and "cannot reach the gate" in r.stderr
    assert "secret-token" not in r.stdout + r.stderr


def test_a_bypass_needs_a_justification(tmp_path: Path, itsmctl: Itsmctl) -> None:
    token = tmp_path / "t"
    token.write_text("x")
    r = itsmctl("gate", "check", "--service", "s", "--env", "p", "--bypass", ITSM_GATE_TOKEN_FILE=str(token))
    assert r.returncode == 2 and "--bypass needs --justification" in r.stderr


def test_gate_token_prints_the_token_once_and_stores_only_its_hash(tmp_path: Path, itsmctl: Itsmctl) -> None:
    path = tmp_path / "callers.toml"
    r = itsmctl("gate", "token", "release-bot", "--bypass", "--callers-file", str(path), "--offline")
    assert r.returncode == 0, r.stderr
    assert "not audited (--offline)" in r.stderr
    token = r.stdout.strip()
    text = path.read_text()
    assert token not in text and token_hash(token) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (caller,) = Tokens.load(path).principals
    assert (caller.name, caller.scopes) == ("release-bot", (Scope("gate:check"), Scope("gate:bypass")))
    again = itsmctl("gate", "token", "release-bot", "--callers-file", str(path), "--offline")
    assert again.returncode == 2 and "has 'release-bot' already" in again.stderr
    assert itsmctl("gate", "token").returncode == 2


def test_gate_serve_refuses_to_start_without_callers(itsmctl: Itsmctl) -> None:
    r = itsmctl("gate", "serve")
    assert r.returncode != 0 and "ITSM_GATE_CALLERS_FILE" in r.stderr and "ITSM_TOKENS_FILE" in r.stderr


def test_freeze_import_names_the_problem(tmp_path: Path, itsmctl: Itsmctl) -> None:
    bad = tmp_path / "f.ics"
    bad.write_text(
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:x\nDTSTART:20261127T100000\nDURATION:PT1H\nEND:VEVENT\n"
    )
    truncated = itsmctl("freeze", "import", str(bad))
    assert truncated.returncode == 2 and "must end with END:VCALENDAR" in truncated.stderr
    assert truncated.stderr.count("\n") == 1  # one line
    bad.write_text(bad.read_text() + "END:VCALENDAR\n")
    r = itsmctl("freeze", "import", str(bad))
    assert r.returncode == 2 and "floating time" in r.stderr
    missing = itsmctl("freeze", "import", str(tmp_path / "nope.ics"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_help_explains_the_change_commands(itsmctl: Itsmctl) -> None:
    for cmd in ("gate", "changes", "freeze", "deploy"):
        r = itsmctl(cmd, "--help")
        assert r.returncode == 0 and "usage: itsmctl " + cmd in r.stdout
    assert "exit codes: 0 allowed, 1 denied" in itsmctl("gate", "--help").stdout
