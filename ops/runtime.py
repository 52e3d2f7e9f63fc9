"""What every itsmctl command shares: the exit-code contract, configuration, serde, rules, the
global views, signal handling, the retry policy, client factories, time arguments and -o json."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.core.settings import Settings
from streams.core.timeutil import parse_time_or_age

if TYPE_CHECKING:
    from connectors.sinks.http import RetryPolicy
    from connectors.sinks.servicenow.client import ServiceNowClient
    from streams.agents.rulesync import RuleSwitch
    from streams.core.follower import TopicFollower
    from streams.core.rules import Rules
    from streams.core.serde import AvroSerde

# The exit-code contract of every command (README: itsmctl).
EXIT_OK = 0  # done; the gate allows; nothing found
EXIT_PROBLEMS = 1  # the gate denies; problems found (missing topics, a broker down)
EXIT_ERROR = 2  # usage, configuration or connection error: nothing was decided

EXIT_CODES = """exit codes: 0 ok (or allow), 1 deny or problems found, 2 usage, configuration or
connection error."""


class CommandError(Exception):
    """A foreseeable failure: one line naming the problem and the fix, and the exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def settings(kafka: bool = False) -> Settings:
    """This process's settings; CommandError naming the bad variable. With kafka, a one-shot
    command also makes sure a broker answers, so a broker that is down is reported in a second
    instead of after the Kafka client's timeouts."""
    try:
        loaded = Settings()
    except ValueError as exc:
        raise CommandError(f"invalid configuration: {exc}") from None
    if kafka:
        reachable(loaded)
    return loaded


def reachable(settings: Settings, timeout: float = 2.0) -> None:
    """CommandError unless some bootstrap server accepts a connection."""
    problems = []
    for server in settings.kafka_bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
            return
        except (OSError, ValueError) as exc:
            problems.append(f"{server.strip()}: {getattr(exc, 'strerror', None) or exc}")
    raise CommandError(
        f"cannot connect to Kafka ({'; '.join(problems)}); is it running (itsmctl kafka up), "
        "and is ITSM_KAFKA_BOOTSTRAP right?"
    )


def publish_audit(settings: Settings, keyed_events: list[tuple[str, Any]], failure: str) -> None:
    """Write (key, AuditEvent) records to audit.events and wait for the broker's acknowledgement;
    CommandError "<failure>: <why>; <the usual fix>" when it does not come."""
    from confluent_kafka import Producer

    from streams.core.kafka import DeliveryError, producer_config, publish_batch
    from streams.core.messages import encoded
    from streams.core.topics import AUDIT_EVENTS

    reachable(settings)  # a quick, clear refusal rather than a 30 s wait for acks
    avro = serde(settings)
    topic = settings.topic(AUDIT_EVENTS)
    try:
        publish_batch(
            Producer(producer_config(settings)),
            [encoded(avro, topic, key, event) for key, event in keyed_events],
        )
    except DeliveryError as exc:
        raise CommandError(f"{failure}: {exc}; {kafka_hint(settings)}") from None


def server_tls(settings: Settings, component: str) -> ssl.SSLContext | None:
    """TLS for a component's HTTP server (ITSM_HTTP_TLS_*), or None for plain HTTP (logged)."""
    import structlog

    from connectors.tls import reload_when_changed, server_context

    log = structlog.get_logger(component)
    cert, key = settings.http_tls_cert_file, settings.http_tls_key_file
    if not cert and not key:
        if settings.http_tls_client_ca_file:
            raise CommandError("ITSM_HTTP_TLS_CLIENT_CA_FILE needs ITSM_HTTP_TLS_CERT_FILE and _KEY_FILE")
        log.info("http_plain", detail="plain HTTP: set ITSM_HTTP_TLS_CERT_FILE and _KEY_FILE for HTTPS")
        return None
    if not cert or not key:
        raise CommandError("HTTPS needs both ITSM_HTTP_TLS_CERT_FILE and ITSM_HTTP_TLS_KEY_FILE")
    try:
        context = server_context(cert, key, settings.http_tls_client_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(
            f"TLS certificate {cert} with key {key}"
            + (
                f" and client CA {settings.http_tls_client_ca_file}"
                if settings.http_tls_client_ca_file
                else ""
            )
            + f" cannot be loaded: {exc}"
        ) from None
    reload_when_changed(context, cert, key)
    log.info("http_tls", cert_file=cert, client_certificates=bool(settings.http_tls_client_ca_file))
    return context


def audit_or_restore(
    settings: Settings, path: Path, before: bytes | None, keyed_events: list[tuple[str, Any]]
) -> None:
    """Audit a change just made to the file at path; when the record cannot be written, put the
    file back as it was (before; None: there was none) and say so."""
    try:
        publish_audit(settings, keyed_events, "the audit record could not be written")
    except CommandError as exc:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(before)
        raise CommandError(f"{path} left as it was: {exc}") from None


def file_options(p: argparse.ArgumentParser, setting: str, audited: bool = True) -> None:
    """--file (default: the setting), and for a change --actor and --offline."""
    p.add_argument("--file", help=f"the file (default {setting})")
    if audited:
        p.add_argument("--actor", help="who does it, for the audit record (default: your login name)")
        p.add_argument("--offline", action="store_true", help="change the file without an audit record")


def configure_logging(settings: Settings) -> None:
    """JSON log lines at the configured levels, on stderr or in ITSM_LOG_FILE rotated daily and
    kept ITSM_LOG_RETENTION_DAYS."""
    from streams.core import telemetry

    telemetry.configure_logging(
        settings.log_level,
        levels=settings.log_levels,
        file=settings.log_file,
        retention_days=settings.log_retention_days,
    )


def announce_kafka(settings: Settings, component: str) -> None:
    """One log line naming how this process reaches the broker; plain mode is named insecure."""
    import structlog

    from streams.core.kafka import identify, watch_credentials

    identify(component, settings.kafka_sasl_username)
    watch_credentials(settings)  # a rotated password file reaches every client: no restart
    log = structlog.get_logger(component)
    if settings.kafka_security_protocol == "PLAINTEXT":
        log.warning(
            "kafka_insecure",
            bootstrap=settings.kafka_bootstrap,
            security_protocol="PLAINTEXT",
            detail="no authentication, no encryption, no ACLs: for local development only "
            "(ITSM_KAFKA_SECURITY_PROTOCOL=SASL_SSL for anything else)",
        )
    else:
        log.info(
            "kafka_secured",
            bootstrap=settings.kafka_bootstrap,
            security_protocol=settings.kafka_security_protocol,
            mechanism=settings.kafka_sasl_mechanism,
            principal=settings.kafka_sasl_username,
        )


def serde(settings: Settings, *, strict: bool = True) -> AvroSerde:
    """The Avro serde: schemas from schemas/avro, the Confluent registry when one is configured,
    the sensitive fields encrypted with ITSM_FIELD_KEYS_FILE's keys when it is set. strict=False
    lets a tool that only shows or copies records pass ciphertext it cannot read."""
    from streams.core import fieldcrypt
    from streams.core.serde import AvroSerde, SchemaStore, SerdeError, registry_from_settings

    try:
        keys = fieldcrypt.watch(Path(settings.field_keys_file)) if settings.field_keys_file else None
    except fieldcrypt.FieldCryptError as exc:
        raise CommandError(
            f"{exc} (ITSM_FIELD_KEYS_FILE; itsmctl fieldkeys rotate --file PATH makes one)"
        ) from None
    try:
        store = SchemaStore(Path(settings.schema_dir) if settings.schema_dir else None)
        return AvroSerde(
            store, registry=registry_from_settings(settings), crypt=fieldcrypt.FieldCrypt(keys, strict=strict)
        )
    except (SerdeError, ValueError) as exc:
        raise CommandError(f"schemas: {exc}") from None


def rules(settings: Settings) -> Rules:
    """The rule files (ops/rules or ITSM_RULES_DIR), validated."""
    from streams.core.rules import RuleError, load_rules

    try:
        return load_rules(Path(settings.rules_dir) if settings.rules_dir else None)
    except RuleError as exc:
        raise CommandError(str(exc)) from None


def follow_rules(
    settings: Settings, serde: AvroSerde, local: Rules, component: str
) -> tuple[RuleSwitch, TopicFollower]:
    """The rule set this process runs, kept current: (RuleSwitch, its rules.sets follower), once
    the follower caught up. It starts with the set the pipeline runs (`itsmctl rules apply`), the
    local files (local, from rules()) only when none was ever applied, and takes every later set
    without a restart."""
    from streams.agents.rulesync import RuleSwitch
    from streams.core.follower import TopicFollower
    from streams.core.topics import RULES

    switch = RuleSwitch(local, serde, component=component)
    follower = TopicFollower(settings, settings.topic(RULES), switch.apply).start()
    try:
        follower.wait_ready(settings.view_ready_timeout_seconds)
    except RuntimeError as exc:
        follower.stop()
        raise CommandError(f"{exc}; {kafka_hint(settings)}") from None
    return switch, follower


@dataclass
class Views:
    """Indexes of compacted topics this process needs, each kept current by its TopicFollower."""

    indexes: dict[str, Any]
    followers: list[TopicFollower] = field(default_factory=list)

    def __getitem__(self, name: str) -> Any:
        return self.indexes[name]

    def stop(self) -> None:
        for follower in self.followers:  # all asked at once, then awaited: a stop takes one wait
            follower.signal_stop()
        for follower in self.followers:
            follower.stop()


def start_views(settings: Settings, serde: AvroSerde, *wanted: str) -> Views:
    """The named indexes (cmdb, windows, changes, requests, itsm_incidents), started and caught up."""
    from streams.core.follower import TopicFollower
    from streams.core.topics import CMDB_CI, GATE_REQUESTS, ITSM_CHANGES, ITSM_INCIDENTS, MAINTENANCE_WINDOWS
    from streams.processors.indexes import (
        ChangeIndex,
        CMDBTopicIndex,
        GateRequestIndex,
        ItsmIncidentIndex,
        WindowIndex,
    )

    makers: dict[str, tuple[str, Callable[[AvroSerde, str], Any]]] = {
        "cmdb": (CMDB_CI, CMDBTopicIndex),
        "windows": (MAINTENANCE_WINDOWS, WindowIndex),
        "changes": (ITSM_CHANGES, ChangeIndex),
        "requests": (GATE_REQUESTS, GateRequestIndex),
        "itsm_incidents": (ITSM_INCIDENTS, ItsmIncidentIndex),
    }
    views = Views({})
    for name in wanted:
        base, make = makers[name]
        index = make(serde, settings.topic(base))
        views.indexes[name] = index
        views.followers.append(TopicFollower(settings, settings.topic(base), index.apply).start())
    try:
        for follower in views.followers:
            follower.wait_ready(settings.view_ready_timeout_seconds)
    except RuntimeError as exc:
        views.stop()
        raise CommandError(f"{exc}; {kafka_hint(settings)}") from None
    return views


def kafka_hint(settings: Settings) -> str:
    """The usual fix when Kafka does not answer."""
    return (
        f"is Kafka running at {settings.kafka_bootstrap} (itsmctl kafka up) and were the topics "
        "applied (itsmctl topics apply)?"
    )


def kafka_failure(exc: Exception) -> CommandError:
    """A Kafka client error as one line with the usual fix."""
    error = exc.args[0] if exc.args else exc
    reason = error.str() if hasattr(error, "str") else str(error)
    try:
        hint = kafka_hint(Settings())
    except ValueError:
        hint = "is Kafka running (itsmctl kafka up)?"
    return CommandError(f"Kafka: {reason}; {hint}")


def stop_while_starting(command: str) -> None:
    """Until a long-running command installs its own SIGTERM handling (stop_on_signals, the
    gateway's, Faust's), SIGTERM stops it cleanly (exit 0) instead of killing it mid-start."""

    def handler(signum: int, _frame: object) -> None:
        # Exit here rather than raise: an exception raised inside a C extension's call (librdkafka
        # reading its config, seen in CI) came out as that call's TypeError. Nothing was consumed
        # or committed before the command's own handling is installed, so nothing is lost.
        name = signal.Signals(signum).name
        print(f"itsmctl {command}: stopped ({name}) while starting", file=sys.stderr, flush=True)
        os._exit(EXIT_OK)

    signal.signal(signal.SIGTERM, handler)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for loops that finish their record before stopping."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def retry_policy(settings: Settings) -> RetryPolicy:
    """The sinks' retry budget and backoff, from settings."""
    from connectors.sinks.http import RetryPolicy

    return RetryPolicy(
        settings.sink_retry_budget_seconds,
        settings.sink_backoff_initial_seconds,
        settings.sink_backoff_max_seconds,
    )


def servicenow_client(settings: Settings, target: str) -> ServiceNowClient:
    """A ServiceNow Table API client for reading (changes, blackout schedules)."""
    from connectors.sinks.servicenow.client import ServiceNowClient
    from connectors.sinks.servicenow.config import ServiceNowConfig

    try:
        return ServiceNowClient(
            ServiceNowConfig.from_settings(settings), retry_policy(settings), target=target
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def when(text: str | None, flag: str, now: datetime) -> datetime | None:
    """A --since/--until argument: RFC 3339 with an offset, or an age (30m, 2h, 7d) before now."""
    if not text:
        return None
    try:
        return parse_time_or_age(text, now, flag)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from low to high (a usage error names the range)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def add_output(parser: argparse.ArgumentParser) -> None:
    """-o text|json for a command that lists or reports something."""
    parser.add_argument(
        "-o",
        "--output",
        choices=["text", "json"],
        default="text",
        help="text for people (default), or json: one JSON document for scripts",
    )


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def print_json(document: Any) -> None:
    """One JSON document on stdout (datetimes as RFC 3339, enums as their values)."""
    print(json.dumps(document, default=_plain, ensure_ascii=False))


# --- building the command line ------------------------------------------------------------------

Handler = Callable[[argparse.Namespace], int]


def _parser(
    sub: Any, words: str, summary: str, handler: Handler | None, description: str | None
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        words.rsplit(" ", 1)[-1],
        prog=f"itsmctl {words}",
        help=summary,
        description=description or summary,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # No abbreviations: `--duration` must never quietly mean another command's `--duration-ms`.
        allow_abbrev=False,
    )
    if handler is not None:
        # cmd names it in error lines; leaf reports options it does not take (see ops/cli.py).
        parser.set_defaults(func=handler, cmd=words, leaf=parser)
    return parser


def command(
    sub: Any, name: str, summary: str, handler: Handler | None = None, description: str | None = None
) -> argparse.ArgumentParser:
    """A command group (or, with a handler, a command without actions) under sub."""
    return _parser(sub, name, summary, handler, description)


def actions(group: argparse.ArgumentParser) -> Any:
    """The subcommands of a group; each takes only its own options."""
    return group.add_subparsers(dest="action", required=True, metavar="ACTION")


def action(
    sub: Any, group: str, name: str, summary: str, handler: Handler, description: str | None = None
) -> argparse.ArgumentParser:
    """One subcommand of group (e.g. `dlq replay`), run by handler."""
    return _parser(sub, f"{group} {name}", summary, handler, description)


def serve_metrics(host: str, port: int, setting: str, checks: dict[str, Any] | None = None) -> int:
    """/metrics, /healthz and /readyz of a long-running command; a port that is taken is one line
    naming the setting that moves it, not a traceback."""
    from streams.core import telemetry

    try:
        return telemetry.start_metrics_server(host, port, checks)
    except OSError as exc:
        raise CommandError(
            f"cannot serve /metrics on {host}:{port}: {exc.strerror or exc}; "
            f"set {setting} to a free port (0 picks one)"
        ) from None


def read_json(path: str) -> Any:
    """A JSON document from a file, or from standard input for `-`; CommandError names the problem
    (a missing file, not UTF-8, not JSON)."""
    import sys

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CommandError(f"cannot read {path}: not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{path}: not JSON ({exc})") from None
