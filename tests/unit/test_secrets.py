"""Secrets that follow their files: reread on change, the last good value kept over a bad one, a
401 retried once with a password that changed meanwhile, and only file-read settings rotating."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from streams.core.secrets import BasicAuth, FileSecret, basic_auth, from_files
from streams.core.settings import Settings


def rewrite(path: Path, text: str) -> None:
    path.write_text(text)
    stamp = time.time() + 5  # a new mtime even within the file system's time granularity
    os.utime(path, (stamp, stamp))


def test_a_file_secret_follows_its_file_and_keeps_the_last_good_value(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("first\n")
    secret = FileSecret(path)
    assert secret.get_secret_value() == "first" and str(secret) == "**********"
    rewrite(path, "second\n")
    assert secret.refresh() and secret.get_secret_value() == "second"
    assert not secret.refresh()  # unchanged since
    rewrite(path, "")  # half-written, or emptied by mistake
    assert not secret.refresh() and secret.get_secret_value() == "second"
    path.unlink()
    assert secret.get_secret_value() == "second"


def test_basic_auth_retries_a_401_once_when_the_password_file_changed(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("old")
    secret = FileSecret(path)
    accepted = {"new"}
    seen: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        user, _, password = base64.b64decode(seen[-1].removeprefix("Basic ")).decode().partition(":")
        return httpx.Response(200 if user == "u" and password in accepted else 401)

    auth = basic_auth("u", secret)
    assert isinstance(auth, BasicAuth)
    with httpx.Client(transport=httpx.MockTransport(server), auth=auth) as client:
        rewrite(path, "new")  # rotated after the last read: the first try still sends "old"
        secret._watched.checked = time.monotonic()  # as if just checked: the interval holds
        assert client.post("http://itsm/api", json={"a": 1}).status_code == 200
        assert len(seen) == 2  # refused, reread, sent again
        accepted.clear()  # now nothing works: a 401 without a changed file is not retried
        assert client.get("http://itsm/api").status_code == 401
        assert len(seen) == 3
    # A password not read from a file stays a plain tuple.
    assert basic_auth("u", SecretStr("p")) == ("u", "p")


def test_only_secrets_read_from_their_file_follow_it(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("from-file\n")
    env = {"ITSM_SERVICENOW_PASSWORD_FILE": str(path)}
    made = from_files({"servicenow_password": SecretStr("from-file")}, env)
    assert isinstance(made["servicenow_password"], FileSecret)
    assert from_files({"servicenow_password": SecretStr("given")}, env) == {}  # given explicitly
    overridden = {**env, "ITSM_SERVICENOW_PASSWORD": "x"}
    assert from_files({"servicenow_password": SecretStr("from-file")}, overridden) == {}
    assert from_files({"servicenow_user": "pipeline"}, env) == {}


def test_settings_read_from_files_rotate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "token"
    path.write_text("t1")
    monkeypatch.setenv("ITSM_GATEWAY_TOKEN_FILE", str(path))
    monkeypatch.delenv("ITSM_GATEWAY_TOKEN", raising=False)
    settings = Settings()
    assert isinstance(settings.gateway_token, FileSecret)
    rewrite(path, "t2")
    assert settings.gateway_token.refresh() and settings.gateway_token.get_secret_value() == "t2"
