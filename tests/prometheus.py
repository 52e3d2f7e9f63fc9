"""Real Prometheus-project servers for tests (Debian's `prometheus` and `prometheus-alertmanager`):
started on a free loopback port, ready when they answer /-/ready."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx

from ops.kafka.broker import free_port


def start_prometheus(
    workdir: Path, config: str, port: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """(process, base URL); config is prometheus.yml's text (it may name files in workdir)."""
    exe = shutil.which("prometheus")
    assert exe, "prometheus not found: ops/test.sh installs Debian's prometheus package"
    port = port or free_port()
    (workdir / "prometheus.yml").write_text(config)
    log = open(workdir / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url, workdir / "prometheus.log", "prometheus")
    return proc, url


def wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, name: str, timeout: float = 30.0) -> None:
    """Until url/-/ready answers 200; the process dying or the time running out fails with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"{name} did not become ready:\n" + log.read_text())
