"""A secured local broker: SASL_SSL with SCRAM-SHA-512 for clients, mutual TLS between the broker and
its controller, and KRaft's StandardAuthorizer with nothing allowed that no ACL grants.

`BrokerSecurity.create(dir)` makes a private CA and the broker's certificate (SAN 127.0.0.1 and
localhost; `cryptography`), the super user `admin` and its password (files of mode 0600). The
admin's SCRAM credential is written into the KRaft store when it is formatted (`--add-scram`);
every other principal is made with `scram_user` by the admin, and gets only what `ops/acls.toml`
grants it (`itsmctl acls apply`).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MECHANISM = "SCRAM-SHA-512"
ADMIN = "admin"
BROKER_CN = "kafka-broker"


def _private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _certificates(directory: Path) -> None:
    """A CA (10 years) and the broker's key and certificate signed by it (2 years)."""
    from ops.tls import Authority

    # The broker is a server to clients and a client of its controller (mutual TLS).
    issued = Authority.create("itsm-pipeline local CA", days=3650).issue(
        BROKER_CN, days=730, client_auth=True
    )
    (directory / "ca.pem").write_bytes(issued.ca_pem)
    # Kafka's PEM key store: the PKCS#8 key, then the certificate chain.
    _private(directory / "broker.pem", issued.key_pem + issued.cert_pem + issued.ca_pem)


@dataclass(frozen=True)
class BrokerSecurity:
    """Where a secured broker's CA, key store and admin password live."""

    directory: Path
    # Each client re-authenticates at least this often (KIP-368; a client that cannot, such as
    # aiokafka, is disconnected and connects again): a revoked or rotated password stops working
    # on old connections too, and a rotated one is taken up without a restart.
    reauth_ms: int = 3_600_000

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.directory / "broker.pem"

    @property
    def admin_password_file(self) -> Path:
        return self.directory / "admin.password"

    @classmethod
    def create(cls, directory: Path, reauth_ms: int = 3_600_000) -> BrokerSecurity:
        """The CA, certificate and admin password, made once (kept across restarts)."""
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        made = cls(directory, reauth_ms)
        if not made.keystore.exists():
            _certificates(directory)
        if not made.admin_password_file.exists():
            _private(made.admin_password_file, secrets.token_urlsafe(24).encode())
        return made

    def admin_password(self) -> str:
        return self.admin_password_file.read_text().strip()

    def properties(self, port: int, controller_port: int) -> list[str]:
        """server.properties lines of a combined broker+controller node."""
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN}" password="{self.admin_password()}";'
        )
        return [
            f"listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=SASL_SSL",
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL",
            f"sasl.enabled.mechanisms={MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
            f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.ca_file}",
            # The controller listener takes only the broker's own certificate.
            "listener.name.controller.ssl.client.auth=required",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            f"super.users=User:{ADMIN};User:CN={BROKER_CN}",
            f"connections.max.reauth.ms={self.reauth_ms}",
        ]

    def format_args(self) -> list[str]:
        """StorageTool arguments that write the admin's SCRAM credential into the new store."""
        return ["--add-scram", f"{MECHANISM}=[name={ADMIN},password={self.admin_password()}]"]

    def client_config(self, username: str = ADMIN, password: str | None = None) -> dict[str, Any]:
        """librdkafka settings of a client of this broker (the admin's unless told otherwise)."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": MECHANISM,
            "sasl.username": username,
            "sasl.password": self.admin_password() if password is None else password,
            "ssl.ca.location": str(self.ca_file),
        }

    def env(self, username: str = ADMIN, password_file: Path | None = None) -> dict[str, str]:
        """ITSM_* settings of a pipeline process connecting as username."""
        return {
            "ITSM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "ITSM_KAFKA_SASL_USERNAME": username,
            "ITSM_KAFKA_SASL_PASSWORD_FILE": str(password_file or self.admin_password_file),
            "ITSM_KAFKA_CA_FILE": str(self.ca_file),
        }


def scram_user(admin: Any, name: str, password: str, iterations: int = 8192) -> None:
    """Create or update (a rotation) a principal's SCRAM-SHA-512 credential."""
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    salt = secrets.token_bytes(32)
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, iterations)
    upsert = UserScramCredentialUpsertion(name, info, password.encode(), salt)
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result()
