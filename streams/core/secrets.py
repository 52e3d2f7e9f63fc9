"""Secrets that follow their files: a credential rotated on disk is used without a restart.

Every secret setting may come from a file (`ITSM_<NAME>_FILE`, read by the settings). Such a value
becomes a FileSecret: a pydantic SecretStr whose `get_secret_value()` rereads the file when it
changed (checked at most once a second), so every place that asks for the value at use time sees
the new one. Places that hand a credential to a client once (an httpx client's basic auth,
librdkafka's and aiokafka's SASL settings) are given it through `basic_auth` here, or are told by
streams/core/kafka.py's credential watch.

An empty or unreadable file keeps the last good value (and logs `secret_file_invalid`, with the
path, never the value): half-written files during a rotation do not lock the pipeline out.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from streams.core.redact import never_log
from streams.core.watched import Watched


def _read(path: Path) -> str:
    value = path.read_text(encoding="utf-8").rstrip("\r\n")
    if not value:
        raise ValueError(f"{path} is empty")
    for line in value.splitlines():  # a file of several (an overlap) holds several secrets
        never_log(line.strip())
    never_log(value)
    return value


class FileSecret(SecretStr):
    """A SecretStr read from its file, and again whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self._watched = Watched(path, _read, interval=1.0, what="secret")
        super().__init__(self._watched.current)

    @property
    def path(self) -> Path:
        return self._watched.path

    def get_secret_value(self) -> str:
        return self._watched.get()

    def refresh(self) -> bool:
        """Read the file now (e.g. after a 401); True when the value changed."""
        before = self._watched.current
        return self._watched.get(force=True) != before


def from_files(
    values: dict[str, Any], env: dict[str, str] | None = None, prefix: str = "ITSM_"
) -> dict[str, Any]:
    """For each SecretStr in values that was read from its ITSM_<NAME>_FILE (and not given in
    ITSM_<NAME> or explicitly), the FileSecret of that file."""
    env = dict(os.environ) if env is None else env
    out: dict[str, Any] = {}
    for name, value in values.items():
        if not isinstance(value, SecretStr) or isinstance(value, FileSecret):
            continue
        var = f"{prefix}{name.upper()}"
        path = env.get(f"{var}_FILE")
        if not path or env.get(var):
            continue
        try:
            if _read(Path(path)) != value.get_secret_value():
                continue  # given some other way
        except (OSError, ValueError):
            continue
        out[name] = FileSecret(Path(path))
    return out


def refresh(secret: SecretStr) -> bool:
    """After the far side refused a credential: reread it; True when it changed (worth a retry)."""
    return secret.refresh() if isinstance(secret, FileSecret) else False


class BasicAuth(httpx.Auth):
    """HTTP basic auth whose password is read at each request; a 401 after the password file
    changed is retried once with the new one (the request was refused, so it did nothing)."""

    requires_request_body = True

    def __init__(self, user: str, password: SecretStr) -> None:
        self.user = user
        self.password = password

    def _header(self) -> str:
        pair = f"{self.user}:{self.password.get_secret_value()}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header()
        response = yield request
        if response.status_code == 401 and refresh(self.password):
            request.headers["Authorization"] = self._header()
            yield request


def basic_auth(user: str, password: SecretStr) -> httpx.Auth | tuple[str, str]:
    """httpx auth for user and password: rotating when the password follows a file."""
    if isinstance(password, FileSecret):
        return BasicAuth(user, password)
    return (user, password.get_secret_value())
