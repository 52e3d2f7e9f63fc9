"""A secured broker of a test module's own (SASL_SSL, SCRAM-SHA-512, StandardAuthorizer, nothing
allowed that no ACL grants), ops/acls.toml applied, each principal with its own password file."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from ops import acls
from ops import topics as topic_ops
from ops.kafka import Broker
from ops.kafka.broker import free_port
from ops.kafka.security import BrokerSecurity, scram_user
from streams.core.settings import Settings
from streams.core.topics import declared
from tests import kafka_util
from tests.kafka_util import conf

PREFIX = "acl."
APP = "acl-app"


@dataclass
class Secured:
    broker: Broker
    passwords: dict[str, Path]  # principal -> its password file

    def settings(self, principal: str, password: str | None = None) -> Settings:
        secret = password if password is not None else self.passwords[principal].read_text()
        assert self.broker.security is not None
        return Settings(
            kafka_bootstrap=self.broker.bootstrap,
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_username=principal,
            kafka_sasl_password=SecretStr(secret),
            kafka_ca_file=str(self.broker.security.ca_file),
            topic_prefix=PREFIX,
            app_id=APP,
        )

    def env(self, principal: str = "admin") -> dict[str, str]:
        password_file = self.passwords.get(principal)
        return {
            **self.broker.env(principal, password_file),
            "ITSM_TOPIC_PREFIX": PREFIX,
            "ITSM_APP_ID": APP,
        }

    def admin(self) -> AdminClient:
        return AdminClient(conf(self.broker.bootstrap))


def secured_broker(root: Path, reauth_ms: int = 3_600_000) -> Iterator[Secured]:
    """A secured broker of its own with ops/acls.toml applied and a password file per principal."""
    security = BrokerSecurity.create(root / "security", reauth_ms)
    broker = Broker(root / "data", port=free_port(), controller_port=free_port(), security=security)
    broker.start(wait=120)
    kafka_util.register(broker)
    try:
        admin = AdminClient(broker.client_config())
        topic_ops.apply(admin, list(declared(PREFIX)))
        passwords: dict[str, Path] = {}
        for name in acls.Declared.load().principals:
            path = root / f"{name}.password"
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(24))
            scram_user(admin, name, path.read_text())
            passwords[name] = path
        made = Secured(broker, passwords)
        file = acls.Declared.load()
        base = made.settings("worker")
        acls.execute(admin, acls.plan(file.grants(base), acls.current(admin), file.principals))
        yield made
    finally:
        broker.stop()
