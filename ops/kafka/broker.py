"""Fetch, format, start, probe and stop KRaft Kafka brokers on loopback: one node, or the nodes
of a small cluster (each broker and controller, with a static controller quorum)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ops.kafka.security import BrokerSecurity

POM = Path(str(resources.files("ops.kafka").joinpath("pom.xml")))
LOG4J = Path(str(resources.files("ops.kafka").joinpath("log4j2.properties")))


def _pinned_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if not match:
        raise RuntimeError(f"{POM} does not pin <kafka.version>")
    return match.group(1)


KAFKA_VERSION = _pinned_version()


class BrokerError(RuntimeError):
    """The broker could not be fetched, formatted, started or stopped."""


def cache_dir() -> Path:
    """Where the broker jars live: outside the repo, shared by every clone."""
    base = os.environ.get("ITSM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "itsm-pipeline"
    )
    return Path(base) / f"kafka-{KAFKA_VERSION}"


def fetch_jars(quiet: bool = True) -> Path:
    """Copy kafka_2.13 and its runtime dependencies from Maven Central into the cache."""
    libs = cache_dir() / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is not on PATH; it is needed once to fetch the Kafka jars")
    libs.mkdir(parents=True, exist_ok=True)
    cmd = [
        mvn,
        "-B",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]
    if quiet:
        cmd.insert(1, "-q")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BrokerError(f"mvn dependency:copy-dependencies failed:\n{proc.stdout}\n{proc.stderr}")
    if not any(libs.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        raise BrokerError(f"kafka_2.13-{KAFKA_VERSION}.jar missing from {libs} after mvn")
    marker.write_text(KAFKA_VERSION + "\n")
    return libs


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError("java not found (set JAVA_HOME or put java on PATH); Kafka needs Java 17+")
    return java


@dataclass
class Broker:
    """One KRaft broker+controller process bound to 127.0.0.1 with its data in data_dir.

    Alone by default; in a cluster, node_id, voters (the controller quorum, "1@host:port,...")
    and replication (of the internal topics, with min.insync.replicas one less) say so.
    """

    data_dir: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    node_id: int = 1
    voters: str | None = None
    replication: int = 1
    security: BrokerSecurity | None = None  # SASL_SSL + SCRAM + authorizer (single node only)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def _properties(self) -> str:
        logs = self.data_dir / "logs"
        listeners = (
            self.security.properties(self.port, self.controller_port)
            if self.security is not None
            else [
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ]
        )
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                f"controller.quorum.voters={self.voters or f'1@127.0.0.1:{self.controller_port}'}",
                *listeners,
                f"log.dirs={logs}",
                "num.partitions=1",
                f"offsets.topic.replication.factor={self.replication}",
                "offsets.topic.num.partitions=10",
                f"transaction.state.log.replication.factor={self.replication}",
                f"transaction.state.log.min.isr={max(1, self.replication - 1)}",
                f"share.coordinator.state.topic.replication.factor={self.replication}",
                f"share.coordinator.state.topic.min.isr={max(1, self.replication - 1)}",
                f"min.insync.replicas={max(1, self.replication - 1)}",
                "group.initial.rebalance.delay.ms=0",
                # Topics are declared in one place and applied by `itsmctl topics apply`.
                "auto.create.topics.enable=false",
                "",
            ]
        )

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        libs = fetch_jars()
        return [
            _java(),
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def format(self, cluster_id: str | None = None) -> None:
        """Write server.properties and format the KRaft store once (kept across restarts)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        # Mode 0600: a secured broker's file holds its administrator's password (the JAAS line).
        fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self._properties())
        props.chmod(0o600)
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        cluster_id = cluster_id or base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # The administrator's SCRAM credential goes in through a 0600 argument file that the java
        # launcher expands (@file), never on a command line other processes can read.
        secret_args = self.security.format_args() if self.security is not None else []
        args_file = self.data_dir / "format.args"
        if secret_args:
            fd = os.open(args_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                # One argument per line, unquoted (none holds white space or quotes).
                fh.write("\n".join(secret_args) + "\n")
        try:
            proc = subprocess.run(
                # "--cluster-id=<id>": a random base64 id may start with "-", which would parse as an option.
                self._java_cmd(
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={cluster_id}",
                    "-c",
                    str(props),
                    *([f"@{args_file}"] if secret_args else []),
                ),
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            args_file.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise BrokerError(f"kafka StorageTool format failed:\n{proc.stdout}\n{proc.stderr}")

    def running_pid(self) -> int | None:
        """The pid of this data dir's broker if that process is alive."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka settings of an administrator of this broker."""
        cfg: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        if self.security is not None:
            cfg.update(self.security.client_config())
        return {**cfg, **extra}

    def env(self, username: str = "admin", password_file: Path | None = None) -> dict[str, str]:
        """ITSM_KAFKA_* settings of a pipeline process connecting to this broker (as username)."""
        env = {"ITSM_KAFKA_BOOTSTRAP": self.bootstrap}
        if self.security is not None:
            env.update(self.security.env(username, password_file))
        return env

    def answers(self, timeout: float = 2.0) -> bool:
        """True when the broker serves metadata on its listener."""
        from confluent_kafka.admin import AdminClient

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout):
                pass
        except OSError:
            return False
        admin = AdminClient(self.client_config(log_level=0))
        try:
            meta = admin.list_topics(timeout=timeout)
        except Exception:  # noqa: BLE001 - any client error means "not ready yet"
            return False
        return len(meta.brokers) > 0

    def start(self, wait: float = 60.0, block: bool = True) -> int:
        """Start the broker detached, wait until it answers (unless block is False: a cluster's
        nodes answer only once a majority runs), and return its pid."""
        pid = self.running_pid()
        if pid is not None:
            if self.answers():
                return pid
            raise BrokerError(f"a broker process {pid} owns {self.data_dir} but does not answer")
        self.format()
        out = open(self.data_dir / "stdout.log", "ab")
        proc = subprocess.Popen(
            self._java_cmd("kafka.Kafka", str(self.data_dir / "server.properties")),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        self.pid_file.write_text(f"{proc.pid}\n")
        if not block:
            return proc.pid
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(
                    f"broker exited with {proc.returncode}; see {self.log_file} and "
                    f"{self.data_dir / 'stdout.log'}:\n{self._tail()}"
                )
            if self.answers(timeout=1.0):
                return proc.pid
            time.sleep(0.3)
        self.stop()
        raise BrokerError(f"broker did not answer on {self.bootstrap} within {wait}s:\n{self._tail()}")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after timeout); False if none ran."""
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                waited, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                waited = 0
            if waited == pid:
                break
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL the broker (a crash: no controlled shutdown); False if none ran."""
        pid = self.running_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            except ChildProcessError:
                pass
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def _tail(self, lines: int = 30) -> str:
        for path in (self.data_dir / "stdout.log", self.log_file):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    return "\n".join(text)
        return "(no broker output)"


def cluster(data_dir: Path, nodes: int = 3, heap: str = "384m") -> list[Broker]:
    """The nodes of a KRaft cluster on free loopback ports, formatted with one cluster id (start
    them together: a quorum needs a majority of its controllers)."""
    ports = [(free_port(), free_port()) for _ in range(nodes)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{controller}" for i, (_, controller) in enumerate(ports))
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    brokers = [
        Broker(
            data_dir / f"node{i + 1}",
            port=port,
            controller_port=controller,
            heap=heap,
            node_id=i + 1,
            voters=voters,
            replication=nodes,
        )
        for i, (port, controller) in enumerate(ports)
    ]
    for broker in brokers:
        broker.format(cluster_id)
    return brokers
