"""HTTPS on the pipeline's own servers: the gateway as a real process with a certificate and client
certificates required; a caller without one is refused in the handshake, plain HTTP gets nothing,
a renewed certificate is served without a restart, and a bad configuration is one clear line."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from connectors import auth
from ops.kafka import Broker
from ops.kafka.broker import free_port
from ops.tls import Authority
from streams.core.settings import Settings
from tests.cli import ROOT
from tests.kafka_util import kafka_env

pytestmark = pytest.mark.integration
SAMPLE = ROOT / "tests" / "data" / "alertmanager" / "highcpu-group-firing.json"


@dataclass
class Served:
    url: str
    ca: Path
    client: tuple[str, str]  # certificate and key files of a client the CA signed
    cert: Path
    key: Path
    token: str
    log: Path
    authority: Authority


def write(path: Path, data: bytes) -> Path:
    path.touch(mode=0o600)
    path.write_bytes(data)
    return path


def env_for(kafka_settings: Settings, kafka_broker: Broker, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_")}
    env.update(kafka_env(kafka_broker.bootstrap))
    env.update(
        ITSM_TOPIC_PREFIX=kafka_settings.topic_prefix,
        ITSM_APP_ID=kafka_settings.app_id,
        ITSM_GATEWAY_PORT=str(port),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


@pytest.fixture
def served(kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path) -> Iterator[Served]:
    authority = Authority.create("test HTTPS CA", days=1)
    server = authority.issue("gateway", days=1)
    client = authority.issue("prometheus", days=1, client_auth=True)
    ca = write(tmp_path / "ca.pem", server.ca_pem)
    cert, key = write(tmp_path / "gw.pem", server.cert_pem), write(tmp_path / "gw.key", server.key_pem)
    client_files = (
        str(write(tmp_path / "client.pem", client.cert_pem)),
        str(write(tmp_path / "client.key", client.key_pem)),
    )
    tokens = tmp_path / "tokens.toml"
    token, _ = auth.issue(tokens, "prometheus", ["alerts:write:alertmanager"])
    port = free_port()
    log = tmp_path / "gateway.log"
    env = env_for(
        kafka_settings,
        kafka_broker,
        port,
        ITSM_TOKENS_FILE=str(tokens),
        ITSM_HTTP_TLS_CERT_FILE=str(cert),
        ITSM_HTTP_TLS_KEY_FILE=str(key),
        ITSM_HTTP_TLS_CLIENT_CA_FILE=str(ca),
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "gateway"], env=env, stdout=out, stderr=out, cwd=ROOT
        )
    made = Served(f"https://127.0.0.1:{port}", ca, client_files, cert, key, token, log, authority)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with httpx.Client(verify=context(made)) as c:
                    if c.get(made.url + "/healthz").status_code == 200:
                        break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        yield made
    finally:
        proc.terminate()
        assert proc.wait(20) == 0, log.read_text()


def context(s: Served, with_client: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(s.ca))
    if with_client:
        ctx.load_cert_chain(*s.client)
    return ctx


def served_serial(s: Served) -> int:
    from cryptography import x509

    ctx = context(s)
    port = int(s.url.rsplit(":", 1)[1])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_https_with_client_certificates_refuses_the_rest_and_renews_without_a_restart(served: Served) -> None:
    headers = {"Authorization": f"Bearer {served.token}", "Content-Type": "application/json"}
    with httpx.Client(verify=context(served)) as ok:
        assert (
            ok.post(
                served.url + "/v1/alerts/alertmanager", content=SAMPLE.read_bytes(), headers=headers
            ).status_code
            == 202
        )
    # No client certificate: the handshake fails, nothing is answered.
    with (
        httpx.Client(verify=context(served, with_client=False)) as anonymous,
        pytest.raises(httpx.TransportError),
    ):
        anonymous.get(served.url + "/healthz")
    # Plain HTTP on the HTTPS port: no HTTP answer at all.
    with pytest.raises(httpx.TransportError):
        httpx.get(served.url.replace("https://", "http://") + "/healthz", timeout=5)
    # A server certificate the CA did not sign is not trusted by a verifying client.
    with httpx.Client(verify=ssl.create_default_context()) as stranger, pytest.raises(httpx.ConnectError):
        stranger.get(served.url + "/healthz")
    # Renewal: a new certificate and key in place; new connections get it, the process runs on.
    before = served_serial(served)
    renewed = served.authority.issue("gateway", days=1)
    served.key.write_bytes(renewed.key_pem)
    served.cert.write_bytes(renewed.cert_pem)
    deadline = time.monotonic() + 20
    while served_serial(served) == before:
        assert time.monotonic() < deadline, served.log.read_text()
        time.sleep(0.5)
    assert "tls_certificate_reloaded" in served.log.read_text()
    with httpx.Client(verify=context(served)) as ok:
        assert ok.get(served.url + "/healthz").status_code == 200


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"ITSM_HTTP_TLS_CERT_FILE": "/nonexistent/cert.pem"},
            "needs both ITSM_HTTP_TLS_CERT_FILE and ITSM_HTTP_TLS_KEY_FILE",
        ),
        (
            {"ITSM_HTTP_TLS_CLIENT_CA_FILE": "/etc/hostname"},
            "ITSM_HTTP_TLS_CLIENT_CA_FILE needs ITSM_HTTP_TLS_CERT_FILE",
        ),
        (
            {
                "ITSM_HTTP_TLS_CERT_FILE": "/nonexistent/cert.pem",
                "ITSM_HTTP_TLS_KEY_FILE": "/nonexistent/key.pem",
            },
            "cannot be loaded",
        ),
    ],
)
def test_a_bad_tls_configuration_is_one_line_and_exit_2(
    kafka_broker: Broker, kafka_settings: Settings, extra: dict[str, str], message: str
) -> None:
    env = env_for(kafka_settings, kafka_broker, free_port(), **extra)
    ran = subprocess.run(
        [sys.executable, "-m", "ops.cli", "gateway"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert ran.returncode == 2, ran.stderr
    assert message in ran.stderr and "Traceback" not in ran.stderr
