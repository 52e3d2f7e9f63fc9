"""Process settings: one frozen object per process, from ITSM_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "ITSM_"


class FileVariantSource(PydanticBaseSettingsSource):
    """Reads ITSM_<NAME>_FILE for any field: secrets mounted on disk stay off the environment."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        var = f"{ENV_PREFIX}{field_name.upper()}_FILE"
        path = os.environ.get(var)
        if not path:
            return None, field_name, False
        try:
            value = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"{var} names {path!r}, which cannot be read: {exc.strerror}") from exc
        return value, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


class Settings(BaseSettings):
    """Everything a pipeline process is configured with; built once in main() and passed down."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    # Kafka (the local broker of `itsmctl kafka up` listens on 127.0.0.1:kafka_port)
    kafka_port: int = Field(9092, ge=1, le=65535, description="Port of the local broker.")
    kafka_controller_port: int = Field(
        9093, ge=1, le=65535, description="KRaft controller port of the local broker."
    )
    kafka_data_dir: str = Field(".itsm/kafka", description="Data directory of the local broker.")
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="PLAINTEXT (local development, logged as insecure) or SASL_SSL (SCRAM over TLS).",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = Field(None, description="This process's principal on the broker.")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="Its password (use ITSM_KAFKA_SASL_PASSWORD_FILE)."
    )
    kafka_ca_file: str | None = Field(
        None, description="CA bundle the broker's certificate is checked against (default: the system's)."
    )
    kafka_refusal_grace_seconds: float = Field(
        60.0,
        gt=0,
        description="How long a running view or sink keeps retrying while the broker refuses its "
        "password (a rotation's seconds between the broker and the file) before it stops.",
    )
    topic_prefix: str = Field("", description="Prefix for every topic name (isolation of tests, tenants).")
    app_id: str = Field("itsm-pipeline", description="Faust app id and consumer group stem.")
    topic_replication: int = Field(1, ge=1, description="Replication factor for declared topics.")
    schema_registry_url: str | None = Field(
        None,
        description="Confluent-compatible schema registry; when set, producers write the Confluent format.",
    )
    schema_dir: str | None = Field(
        None, description="Directory of the .avsc files (default: schemas/avro of the checkout)."
    )
    field_keys_file: str | None = Field(
        None,
        description="TOML file of the AES-256-GCM keys that encrypt the schema fields marked sensitive "
        "(`itsmctl fieldkeys rotate`); reread when it changes. Unset: nothing is encrypted.",
    )
    schema_registry_user: str | None = None
    schema_registry_password: SecretStr | None = None
    schema_registry_ca_file: str | None = Field(
        None,
        description="CA bundle the registry's TLS certificate is checked against (default: the system's).",
    )
    schema_registry_auto_register: bool = Field(
        True,
        description="Register a schema the registry lacks; off: only look up (a registry managed elsewhere).",
    )
    schema_registry_retries: int = Field(3, ge=0, le=10, description="Retries of a failed registry call.")

    # Ingest gateway
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(8080, ge=0, le=65535)
    gateway_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Gateway processes sharing the port (SO_REUSEPORT; the kernel spreads "
        "connections), e.g. one per core; /metrics sums them all.",
    )
    gateway_max_body_bytes: int = Field(1_048_576, ge=1024)
    gateway_publish_timeout_seconds: float = Field(
        10.0, gt=0, description="Answer 503 when Kafka has not acknowledged a webhook's alerts by then."
    )
    gateway_token: SecretStr | None = Field(
        None,
        description="One shared token with every gateway scope (older setups); ITSM_TOKENS_FILE, "
        "scoped tokens per caller, replaces it.",
    )
    http_tls_cert_file: str | None = Field(
        None,
        description="PEM certificate chain of the gateway, gate and status service; with it (and "
        "ITSM_HTTP_TLS_KEY_FILE) they speak HTTPS only. A renewed file is loaded without a restart.",
    )
    http_tls_key_file: str | None = Field(
        None, description="The private key of ITSM_HTTP_TLS_CERT_FILE (PEM)."
    )
    http_tls_client_ca_file: str | None = Field(
        None,
        description="With HTTPS: only clients with a certificate this CA signed are served (mutual TLS).",
    )
    tokens_file: str | None = Field(
        None,
        description="TOML file of the APIs' principals: SHA-256 of their tokens and their scopes "
        "(`itsmctl tokens`); reread when it changes. Used by the gateway, the gate and the status service.",
    )

    grafana_hmac_secret: SecretStr | None = Field(
        None, description="When set, Grafana webhooks must carry a valid HMAC-SHA256 signature."
    )
    grafana_hmac_header: str = "X-Grafana-Alerting-Signature"
    grafana_hmac_timestamp_header: str | None = Field(
        None, description="Timestamp header configured in Grafana (then '<ts>:<body>' is signed)."
    )
    grafana_hmac_max_skew_seconds: float = Field(300.0, gt=0)

    # Change gate (the gate serves /metrics on its own port) and change management
    gate_host: str = "127.0.0.1"
    gate_port: int = Field(8095, ge=0, le=65535)
    gate_url: str = Field("http://127.0.0.1:8095", description="Where `itsmctl gate check` finds the gate.")
    gate_token: SecretStr | None = Field(
        None, description="The caller's gate token for `itsmctl gate check` (use ITSM_GATE_TOKEN_FILE)."
    )
    gate_callers_file: str | None = Field(
        None,
        description="The gate's tokens file, when it is not ITSM_TOKENS_FILE (also read: the older "
        "[callers.<name>] entries, token_sha256 and bypass). The gate refuses to start without one.",
    )
    gate_environments: str = Field(
        "production", description="Comma-separated environments whose deploys need an approved change."
    )
    gate_verify_tls: bool | str = Field(True, description="True, False is refused; or a CA bundle path.")
    changes_sync_interval_seconds: float = Field(
        5.0, gt=0, description="How often `itsmctl changes sync` reads changed change requests from the ITSM."
    )
    incidents_sync_interval_seconds: float = Field(
        15.0, gt=0, description="How often `itsmctl incidents sync` reads changed incidents from the ITSMs."
    )

    # Worker consumer group. A member that stops heartbeating (killed, partitioned) loses its
    # partitions after the session timeout; 10 s (the broker's minimum is 6 s) keeps a failover
    # pause short while a busy event loop cannot cause one, since Faust heartbeats from the
    # consumer's own thread. Every commit interval the processed positions are committed: what a
    # crash re-processes at most (at-least-once; the sinks are idempotent).
    worker_session_timeout_seconds: float = Field(10.0, ge=6.0, le=1800.0)
    worker_heartbeat_interval_seconds: float = Field(3.0, gt=0.0, le=600.0)
    worker_commit_interval_seconds: float = Field(1.0, gt=0.0, le=60.0)
    # The alerts agent takes records in batches: every output of a batch is sent before the
    # broker's acknowledgements are awaited, once for the batch (after the next batch was
    # processed: streams/agents/delivery.py, Finish). A batch is what arrived within
    # the wait (so an idle stream adds at most that much latency), at most size records.
    # Where the worker's tables live: rocksdb (kept on local disk under worker_data_dir, so a
    # restart reads only the changelog written since) or memory (rebuilt from the changelog at
    # every start). bench/README.md has the figures behind the default: with a million open
    # alerts, a restart took 3.8 s and 166 MiB with rocksdb, 293 s and 774 MiB in memory.
    worker_store: str = Field("rocksdb", pattern="^(memory|rocksdb)$")
    worker_data_dir: str = Field(".itsm/worker", description="The worker's local state (Faust's datadir).")
    worker_batch_size: int = Field(500, ge=1, le=10_000)
    worker_batch_wait_seconds: float = Field(0.01, gt=0.0, le=1.0)
    worker_producer_linger_seconds: float = Field(0.005, ge=0.0, le=1.0)
    # aiokafka keeps one batch per partition and one produce request in flight per broker: a full
    # batch makes the next send wait for that request's answer. 256 KiB (aiokafka's default is
    # 16 KiB, about sixteen incident commands) took 7-22% more alerts per second here.
    worker_producer_batch_bytes: int = Field(262_144, ge=16_384, le=1_048_576)
    # Records Faust's consumer holds for a stream before it waits for the agent (Faust's
    # stream_buffer_maxsize, 4,096 by default): 16,384 took 5-15% more alerts per second here
    # (bench/README.md), for a few more MiB of prefetched records.
    worker_stream_buffer_records: int = Field(16_384, ge=1_000, le=100_000)

    # Worker / sink metrics (the gateway serves /metrics on its own port)
    worker_metrics_port: int = Field(9464, ge=0, le=65535)
    sink_metrics_port: int = Field(9465, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    # Status service (`itsmctl status serve`): the processes it watches, NAME=URL of their
    # /metrics and /readyz, comma-separated (e.g. worker=http://127.0.0.1:9464)
    status_scrape: str = ""
    status_host: str = "127.0.0.1"
    status_port: int = Field(9470, ge=0, le=65535)
    status_interval_seconds: float = Field(5.0, ge=0.5, le=300.0)

    # ServiceNow-compatible sink
    servicenow_url: str = Field("http://127.0.0.1:8090", description="Base URL of the instance.")
    servicenow_auth: str = Field(
        "basic", pattern="^(basic|oauth)$", description="basic, or oauth (client credentials)."
    )
    servicenow_user: str = "pipeline"
    servicenow_password: SecretStr = SecretStr("")
    servicenow_client_id: str = ""
    servicenow_client_secret: SecretStr = SecretStr("")
    servicenow_token_url: str | None = Field(None, description="Default: <servicenow_url>/oauth_token.do.")
    servicenow_scope: str | None = None
    servicenow_verify_tls: bool | str = Field(
        True, description="True, False is refused; or a CA bundle path."
    )
    servicenow_ci_lookup_field: str = Field(
        "name",
        pattern="^[a-z][a-z0-9_]*$",
        description="The cmdb_ci field holding the pipeline's ci_id (bound to the CI's sys_id).",
    )
    identities_file: str | None = Field(
        None,
        description="TOML table of identities (e-mails, user names, service accounts) to ITSM users "
        "and the integration user for the unknown (connectors/identities.py); reread when it changes.",
    )
    servicenow_caller: str = Field(
        "", description="user_name of the incidents' caller (default: ITSM_SERVICENOW_USER)."
    )
    servicenow_reference_ttl_seconds: float = Field(
        600.0,
        ge=0,
        description="How long a reference bound to a sys_id is reused before looking it up again.",
    )
    servicenow_reference_miss_ttl_seconds: float = Field(
        60.0, ge=0, description="How long a name with no referenced record is not looked up again."
    )
    servicenow_admin_user: str = Field(
        "admin", description="Account of `itsmctl itsm provision servicenow` (personalize_dictionary)."
    )
    servicenow_admin_password: SecretStr = SecretStr("")
    jira_url: str | None = Field(None, description="Jira Cloud site, e.g. https://example.atlassian.net.")
    jira_email: str = ""
    jira_api_token: SecretStr = SecretStr("")
    jira_service_desk_id: str = "1"
    jira_incident_request_type_id: str = "10"
    jira_change_request_type_id: str = "11"
    jira_resolve_transition: str = "Resolve this issue"
    jira_reopen_transition: str = "Reopen issue"
    jira_deployment: str = Field(
        "cloud",
        pattern="^(cloud|datacenter)$",
        description="cloud: Jira Cloud (REST API 3, /search/jql); datacenter: Jira Data Center or Server "
        "(REST API 2, /rest/api/2/search).",
    )
    jira_verify_tls: bool | str = Field(True, description="True, False is refused; or a CA bundle path.")
    jira_search_lag_seconds: float = Field(
        60.0,
        gt=0,
        description="How far Jira Cloud's search may lag behind a create: a create whose answer was lost "
        "is not repeated before this long has passed without the request showing up in a search.",
    )
    rt_url: str | None = Field(None, description="Request Tracker base URL (REST 2 is under /REST/2.0).")
    rt_user: str = "root"
    rt_password: SecretStr = SecretStr("")
    rt_incident_queue: str = "General"
    rt_change_queue: str = "General"
    rt_correlation_field: str = "ITSM Correlation Id"
    rt_ci_field: str = "ITSM CI"
    rt_verify_tls: bool | str = Field(True, description="True, False is refused; or a CA bundle path.")
    webhook_url: str | None = Field(None, description="Where the webhook sink POSTs commands.")
    webhook_secret: SecretStr = SecretStr("")
    webhook_verify_tls: bool | str = True
    http_timeout_seconds: float = Field(10.0, gt=0)
    sink_retry_budget_seconds: float = Field(
        120.0, gt=0, description="Give up retrying a command after this long and dead-letter it."
    )
    sink_resolved_policy: str = Field(
        "reopen",
        pattern="^(reopen|new)$",
        description="An OPEN for a resolved record: reopen it, or open a new one.",
    )
    sink_rate_limit_rps: float = Field(
        0.0, ge=0, description="Client-side requests per second to the ITSM (0: unlimited)."
    )
    sink_rate_limit_burst: int = Field(1, ge=1)
    sink_concurrency: int = Field(4, ge=1, description="Requests in flight at once per target.")
    sink_backoff_initial_seconds: float = Field(0.2, gt=0)
    sink_backoff_max_seconds: float = Field(10.0, gt=0)

    # Development ITSM
    devitsm_host: str = "127.0.0.1"
    devitsm_port: int = Field(8090, ge=0, le=65535)
    devitsm_db: str = Field(".itsm/devitsm.sqlite3", description="SQLite file of the development ITSM.")
    devitsm_user: str = "pipeline"
    devitsm_password: SecretStr = SecretStr("")
    devitsm_roles: str = Field(
        "itil", description="Comma-separated roles of the development ITSM's account (ITSM_DEVITSM_USER)."
    )
    devitsm_admin_password: SecretStr = Field(
        SecretStr(""), description="Password of the development ITSM's `admin` account (empty: no admin)."
    )
    devitsm_mandatory: str = Field(
        "",
        description="A data policy: comma-separated table.field an insert must carry, "
        "e.g. incident.assignment_group.",
    )
    devitsm_seed_file: str | None = Field(
        None, description="JSON {table: [record, ...]} inserted at start (CIs, services, groups, users)."
    )
    devitsm_client_id: str = Field(
        "", description="OAuth client id the development ITSM accepts (empty: OAuth off)."
    )
    devitsm_client_secret: SecretStr = SecretStr("")
    devitsm_token_ttl_seconds: int = Field(
        1799, ge=1, description="Lifetime of the development ITSM's access tokens."
    )
    devitsm_rate_limit: int = Field(
        0, ge=0, description="API requests per second the development ITSM accepts (0: no limit)."
    )
    devitsm_fault_injection: bool = Field(
        False, description="Serve POST /__faults (queued errors and delays) for chaos tests."
    )

    rules_dir: str | None = Field(
        None, description="Directory of the rule files (default: ops/rules of the checkout)."
    )
    view_ready_timeout_seconds: float = Field(
        120.0, gt=0, description="How long a worker waits for the CMDB and window views to load."
    )

    log_level: str = Field("info", pattern="^(debug|info|warning|error)$")
    log_levels: str = Field(
        "",
        pattern=r"^\s*$|^\s*[\w.\-]+\s*=\s*(debug|info|warning|error)(\s*,\s*[\w.\-]+\s*=\s*(debug|info|warning|error))*\s*$",
        description="A level per component, e.g. sink=debug,aiokafka=info,librdkafka=warning.",
    )
    personal_data_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="How long personal data (the schemas' sensitive fields) may stay readable on "
        "topics kept longer: field keys older than this are to be retired (itsmctl retention report).",
    )
    log_file: str = Field(
        "",
        description="Write the JSON log lines to this file instead of stderr, rotated at UTC midnight "
        "(FILE.YYYY-MM-DD); empty: stderr, rotated by the supervisor.",
    )
    log_retention_days: int = Field(
        14, ge=1, le=3650, description="Rotated log files kept (days); older ones are deleted."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments win, then ITSM_X, then ITSM_X_FILE.
        return (init_settings, env_settings, FileVariantSource(settings_cls), file_secret_settings)

    @model_validator(mode="after")
    def _secrets_follow_their_files(self) -> Settings:
        # A secret read from ITSM_<NAME>_FILE is reread when the file changes (streams/core/secrets.py).
        from streams.core.redact import never_log
        from streams.core.secrets import from_files

        for name, value in from_files(dict(self)).items():
            object.__setattr__(self, name, value)
        for value in dict(self).values():
            if isinstance(value, SecretStr):
                never_log(value.get_secret_value())  # no log line may carry it
        return self

    @model_validator(mode="after")
    def _heartbeats_fit_the_session(self) -> Settings:
        # Kafka's rule of thumb: at least three heartbeats per session, or a single lost one
        # expels a healthy member and every partition pauses for a rebalance.
        if self.worker_heartbeat_interval_seconds * 3 > self.worker_session_timeout_seconds:
            raise ValueError(
                "ITSM_WORKER_HEARTBEAT_INTERVAL_SECONDS must be at most a third of "
                "ITSM_WORKER_SESSION_TIMEOUT_SECONDS"
            )
        return self

    @model_validator(mode="after")
    def _sasl_has_credentials(self) -> Settings:
        if self.kafka_security_protocol == "SASL_SSL" and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "ITSM_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs ITSM_KAFKA_SASL_USERNAME and "
                "ITSM_KAFKA_SASL_PASSWORD_FILE"
            )
        return self

    def kafka_security(self) -> dict[str, Any]:
        """librdkafka's security settings for this process (empty for PLAINTEXT)."""
        if self.kafka_security_protocol == "PLAINTEXT":
            return {}
        assert self.kafka_sasl_password is not None
        cfg: dict[str, Any] = {
            "security.protocol": self.kafka_security_protocol,
            "sasl.mechanisms": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "sasl.password": self.kafka_sasl_password.get_secret_value(),
        }
        if self.kafka_ca_file:
            cfg["ssl.ca.location"] = self.kafka_ca_file
        return cfg

    def topic(self, base: str) -> str:
        """The full name of a declared topic for this process."""
        return f"{self.topic_prefix}{base}"

    def tls_verify(self, client: str) -> bool | str:
        """TLS verification for httpx from <client>_verify_tls: on, or a CA bundle path; never off."""
        value = getattr(self, f"{client}_verify_tls")
        if value is False or value in ("false", "0", "no"):
            raise ValueError(
                f"ITSM_{client.upper()}_VERIFY_TLS cannot turn TLS verification off; give a CA bundle path"
            )
        if value in (True, "true", "1", "yes"):
            return True
        return str(value)

    def servicenow_verify(self) -> bool | str:
        return self.tls_verify("servicenow")

    def gate_environment_set(self) -> frozenset[str]:
        """Environments whose deploys need an approved change."""
        return frozenset(e.strip() for e in self.gate_environments.split(",") if e.strip())
