"""A real Request Tracker 5 (Debian's request-tracker5 + rt5-db-sqlite + rt5-standalone) for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from ops.kafka.broker import free_port

RT_SERVER = Path("/usr/share/request-tracker5/libexec/rt-server")
PROVISION = Path(__file__).resolve().parents[1] / "ops" / "rt" / "provision.pl"
ROOT_PASSWORD = "password"  # the default root account of a fresh RT install


@dataclass
class RealRT:
    url: str
    queue: str
    user: str  # the sink's own account, with only the rights ops/rt/provision.pl grants it
    password: str


def provision(workdir: Path, queue: str, user: str, password: str) -> None:
    """ops/rt/provision.pl: the queue, its custom fields, and the user with the sink's rights on it
    (the password through a file, never an argument)."""
    secret = workdir / f"{user}.password"
    secret.touch(mode=0o600)
    secret.write_text(password)
    done = subprocess.run(
        ["perl", str(PROVISION), queue, user],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RT_USER_PASSWORD_FILE": str(secret)},
    )
    assert done.returncode == 0, done.stderr


def start_rt(workdir: Path) -> Iterator[RealRT]:
    """Provision a queue of its own, start rt-server on a free loopback port, stop it afterwards."""
    assert RT_SERVER.exists(), (
        "RT 5 is not installed: ops/test.sh installs request-tracker5 rt5-db-sqlite rt5-standalone"
    )
    queue = f"itsm-{uuid.uuid4().hex[:8]}"
    user, password = f"itsm-sink-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    provision(workdir, queue, user, password)
    port = free_port()
    log = open(workdir / "rt-server.log", "wb")
    proc = subprocess.Popen(
        [str(RT_SERVER), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (workdir / "rt-server.log").read_text()[-2000:]
            try:
                if (
                    httpx.get(
                        f"{url}/REST/2.0/queues/all", auth=("root", ROOT_PASSWORD), timeout=2
                    ).status_code
                    == 200
                ):
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (
                "rt-server did not answer:\n" + (workdir / "rt-server.log").read_text()[-2000:]
            )
            time.sleep(0.5)
        yield RealRT(url, queue, user, password)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
