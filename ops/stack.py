"""Starts the pipeline's processes (development ITSM, worker, sinks, gateway, gate, change sync) as
children and stops them."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ops.kafka.broker import free_port

COMPONENTS = ("devitsm", "worker", "sink", "gateway")
SEED = Path(__file__).resolve().parent / "devitsm" / "seed.json"
# Components beyond the defaults: their itsmctl arguments and environment of their own.
EXTRA_COMPONENTS: dict[str, tuple[list[str], dict[str, str]]] = {
    "sink-change": (["sink", "servicenow", "--kind", "change"], {"ITSM_SINK_METRICS_PORT": "0"}),
    "sink-rt": (["sink", "rt"], {"ITSM_SINK_METRICS_PORT": "0"}),
    "gate": (["gate", "serve"], {}),
    "changes-sync": (["changes", "sync", "--metrics-port", "0"], {}),
    "incidents-sync": (["incidents", "sync", "--metrics-port", "0"], {}),
    # The status service, watching the default components (ITSM_STATUS_SCRAPE below).
    "status": (["status", "serve", "--interval", "1"], {}),
    # More members of the worker's consumer group (same app id), e.g. for failover tests.
    "worker-2": (["worker"], {"ITSM_WORKER_METRICS_PORT": "0"}),
    "worker-3": (["worker"], {"ITSM_WORKER_METRICS_PORT": "0"}),
}


def write_rules(target: Path, overrides: dict[str, dict[str, float]]) -> Path:
    """A copy of the rule files with some top-level values replaced, per file ("lifecycle",
    "changes"); validated before use."""
    from streams.core.rules import default_rules_dir, load_rules

    target.mkdir(parents=True, exist_ok=True)
    for path in default_rules_dir().glob("*.toml"):
        text = path.read_text()
        values = overrides.get(path.stem, {})
        if values:
            lines = []
            for line in text.splitlines():
                name = line.split("=", 1)[0].strip()
                lines.append(f"{name} = {values[name]}" if name in values else line)
            text = "\n".join(lines) + "\n"
        (target / path.name).write_text(text)
    load_rules(target)
    return target


PORT_FIELDS = (
    "gateway_port",
    "devitsm_port",
    "worker_metrics_port",
    "sink_metrics_port",
    "gate_port",
    "status_port",
)


def port_or_free(preferred: int) -> int:
    """preferred if nobody listens there on 127.0.0.1, else a free port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


@dataclass
class Stack:
    """The pipeline's processes sharing one environment; logs go to workdir/logs/<name>.log."""

    workdir: Path
    bootstrap: str
    topic_prefix: str = ""
    app_id: str = "itsm-pipeline"
    gateway_port: int = field(default_factory=free_port)
    devitsm_port: int = field(default_factory=free_port)
    worker_metrics_port: int = field(default_factory=free_port)
    sink_metrics_port: int = field(default_factory=free_port)
    gate_port: int = field(default_factory=free_port)
    status_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    # How every process reaches the broker (Broker.env(): bootstrap, SASL_SSL principal, CA).
    kafka_env: dict[str, str] = field(default_factory=dict)
    # Per component, e.g. its own broker principal: {"worker": {"ITSM_KAFKA_SASL_USERNAME": ...}}.
    component_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # Lifecycle periods to override (seconds), e.g. a short stable_period for demos and tests.
    lifecycle: dict[str, float] = field(default_factory=dict)
    # Change rules to override, e.g. a short park_timeout.
    changes_rules: dict[str, float] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # free_port() asks the kernel for a port that is free now; two asks in a row may get the
        # same one (CI saw the worker and the sink handed one metrics port). Each gets its own.
        taken: set[int] = set()
        for name in PORT_FIELDS:
            port = getattr(self, name)
            while port in taken:
                port = free_port()
            setattr(self, name, port)
            taken.add(port)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        # The ITSM password is generated per stack and handed over in a 0600 file, never argv.
        self.password_file = self.workdir / "devitsm.password"
        if not self.password_file.exists():
            self.password_file.touch(mode=0o600)
            self.password_file.write_text(secrets.token_urlsafe(24))
        self.password = self.password_file.read_text()
        # The development ITSM's administrator: provisions the custom columns (as a person would
        # with `itsmctl itsm provision servicenow`), never used by the pipeline's processes.
        self.admin_password_file = self.workdir / "devitsm-admin.password"
        if not self.admin_password_file.exists():
            self.admin_password_file.touch(mode=0o600)
            self.admin_password_file.write_text(secrets.token_urlsafe(24))
        self.rules_dir: Path | None = None
        if self.lifecycle or self.changes_rules:
            self.rules_dir = write_rules(
                self.workdir / "rules", {"lifecycle": self.lifecycle, "changes": self.changes_rules}
            )
        # Gate callers: a pipeline that may not bypass, and an on-call lead who may. Tokens live
        # in 0600 files (ITSM_GATE_TOKEN_FILE), their hashes in the callers file.
        self.callers_file = self.workdir / "gate-callers.toml"
        if not self.callers_file.exists():
            from connectors.auth import issue

            for name, scopes in (("pipeline", ["gate:check"]), ("oncall", ["gate:check", "gate:bypass"])):
                token_file = self.workdir / f"gate-{name}.token"
                token_file.touch(mode=0o600)
                token_file.write_text(issue(self.callers_file, name, scopes)[0])

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def gate_url(self) -> str:
        return f"http://127.0.0.1:{self.gate_port}"

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"

    def gate_token_file(self, caller: str = "pipeline") -> Path:
        return self.workdir / f"gate-{caller}.token"

    @property
    def devitsm_url(self) -> str:
        return f"http://127.0.0.1:{self.devitsm_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_")}
        env.update(
            {
                "ITSM_KAFKA_BOOTSTRAP": self.bootstrap,
                "ITSM_TOPIC_PREFIX": self.topic_prefix,
                "ITSM_APP_ID": self.app_id,
                "ITSM_GATEWAY_PORT": str(self.gateway_port),
                "ITSM_DEVITSM_PORT": str(self.devitsm_port),
                "ITSM_DEVITSM_DB": str(self.workdir / "devitsm.sqlite3"),
                "ITSM_DEVITSM_PASSWORD_FILE": str(self.password_file),
                "ITSM_DEVITSM_ADMIN_PASSWORD_FILE": str(self.admin_password_file),
                # The development ITSM's CMDB, users and groups: what the samples and demos name.
                "ITSM_DEVITSM_SEED_FILE": str(SEED),
                "ITSM_SERVICENOW_ADMIN_PASSWORD_FILE": str(self.admin_password_file),
                "ITSM_SERVICENOW_URL": self.devitsm_url,
                "ITSM_SERVICENOW_PASSWORD_FILE": str(self.password_file),
                "ITSM_WORKER_METRICS_PORT": str(self.worker_metrics_port),
                "ITSM_SINK_METRICS_PORT": str(self.sink_metrics_port),
                "ITSM_GATE_PORT": str(self.gate_port),
                "ITSM_GATE_URL": self.gate_url,
                "ITSM_GATE_CALLERS_FILE": str(self.callers_file),
                "ITSM_GATE_TOKEN_FILE": str(self.gate_token_file()),
                "ITSM_STATUS_PORT": str(self.status_port),
                "ITSM_STATUS_SCRAPE": (
                    f"gateway={self.gateway_url},"
                    f"worker=http://127.0.0.1:{self.worker_metrics_port},"
                    f"sink-servicenow=http://127.0.0.1:{self.sink_metrics_port}"
                ),
                "ITSM_CHANGES_SYNC_INTERVAL_SECONDS": "1",
                "ITSM_INCIDENTS_SYNC_INTERVAL_SECONDS": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.rules_dir is not None:
            env["ITSM_RULES_DIR"] = str(self.rules_dir)
        env.update(self.kafka_env)
        env.update(self.extra_env)
        return env

    def start(self, names: Iterable[str] = COMPONENTS) -> None:
        names = list(names)
        if "devitsm" in names:
            # The ITSM first, provisioned, so the sinks' preflight finds it ready.
            self._spawn(["devitsm"])
            self.wait_http("devitsm", self.devitsm_url + "/healthz")
            self.provision()
            names.remove("devitsm")
        self._spawn(names)
        for name, url in (
            ("gateway", self.gateway_url),
            ("gate", self.gate_url),
            ("status", self.status_url),
        ):
            if name in names:
                self.wait_http(name, url + "/healthz")

    def provision(self) -> None:
        """The custom columns the ServiceNow sink writes, created by the ITSM's administrator."""
        from ops.servicenow.provision import provision

        auth = ("admin", self.admin_password_file.read_text())
        with httpx.Client(base_url=self.devitsm_url, auth=auth, timeout=10.0) as http:
            provision(http)

    def _spawn(self, names: Iterable[str]) -> None:
        env = self.env()
        for name in names:
            argv, own_env = EXTRA_COMPONENTS.get(name, ([name], {}))
            if argv[0] == "worker" and "ITSM_WORKER_DATA_DIR" not in self.extra_env:
                # Each worker its own local state (RocksDB databases are one process's).
                own_env = {"ITSM_WORKER_DATA_DIR": str(self.workdir / f"{name}-data"), **own_env}
            log = open(self.workdir / "logs" / f"{name}.log", "ab")
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "ops.cli", *argv],
                env={**env, **own_env, **self.component_env.get(name, {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own session: a Ctrl-C reaches only the supervisor, which stops children in order.
                start_new_session=True,
            )
            log.close()

    def wait_http(self, name: str, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not answer {url} within {timeout}s:\n{self.log_tail(name)}")

    def check_alive(self) -> None:
        """Raise if a child died: its log tail says why."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def itsm(self) -> httpx.Client:
        """An HTTP client for the development ITSM's API."""
        return httpx.Client(base_url=self.devitsm_url, auth=("pipeline", self.password), timeout=10.0)

    def stop_one(self, name: str, timeout: float = 20.0) -> int | None:
        """Stop one child (SIGTERM, then SIGKILL) and forget it, e.g. to simulate an outage."""
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def kill_one(self, name: str) -> int:
        """SIGKILL one child and forget it: a crash, with no chance to commit or leave its group."""
        proc = self.procs.pop(name)
        proc.kill()
        return proc.wait()

    def stop(self, timeout: float = 20.0) -> dict[str, int | None]:
        """SIGTERM every child (gateway first, ITSM last), wait, SIGKILL stragglers; returns exit codes."""
        codes: dict[str, int | None] = {}
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                codes[name] = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        self.procs.clear()
        return codes
