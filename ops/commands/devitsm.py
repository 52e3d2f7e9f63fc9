"""itsmctl devitsm: the development ITSM (ServiceNow Table API subset, SQLite)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ops import runtime
from streams.core import telemetry

SECTION = "run the pipeline"
SUMMARY = "run the development ITSM (a ServiceNow Table API subset, SQLite)"


def run(_: argparse.Namespace) -> int:
    from aiohttp import web

    from connectors.devitsm.server import Account, OAuthClient, create_devitsm
    from connectors.devitsm.store import TABLES, Store

    settings = runtime.settings()
    runtime.configure_logging(settings)
    if not settings.devitsm_password.get_secret_value():
        raise runtime.CommandError(
            "set ITSM_DEVITSM_PASSWORD (or ITSM_DEVITSM_PASSWORD_FILE); "
            "the development ITSM does not run without authentication"
        )
    store = Store(settings.devitsm_db)
    mandatory: dict[str, tuple[str, ...]] = {}
    for item in (i.strip() for i in settings.devitsm_mandatory.split(",") if i.strip()):
        table, column = item.partition(".")[::2]
        if table not in TABLES or not column:
            raise runtime.CommandError(
                f"ITSM_DEVITSM_MANDATORY: {item!r} is not table.field of a known table"
            )
        mandatory[table] = (*mandatory.get(table, ()), column)
    accounts = []
    admin_password = settings.devitsm_admin_password.get_secret_value()
    if admin_password:
        accounts.append(Account("admin", admin_password, frozenset({"admin"})))
    if settings.devitsm_seed_file:
        seed(store, Path(settings.devitsm_seed_file))
    oauth = None
    if settings.devitsm_client_id:
        oauth = OAuthClient(
            settings.devitsm_client_id,
            settings.devitsm_client_secret.get_secret_value(),
            settings.devitsm_token_ttl_seconds,
        )
    app = create_devitsm(
        store,
        settings.devitsm_user,
        settings.devitsm_password,  # a FileSecret follows its file; each line is a valid password
        settings.devitsm_rate_limit,
        oauth,
        faults=settings.devitsm_fault_injection,
        roles=frozenset(r.strip() for r in settings.devitsm_roles.split(",") if r.strip()),
        accounts=tuple(accounts),
        mandatory=mandatory,
    )
    telemetry.get_logger("devitsm").info(
        "devitsm_listening", host=settings.devitsm_host, port=settings.devitsm_port, db=settings.devitsm_db
    )
    web.run_app(app, host=settings.devitsm_host, port=settings.devitsm_port, print=None, shutdown_timeout=5)
    store.close()
    return runtime.EXIT_OK


def seed(store: Any, path: Path) -> None:
    """Records from a JSON file {table: [record, ...]}, each inserted unless one with its name exists."""
    from connectors.devitsm.store import TABLES, FieldError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise runtime.CommandError(f"ITSM_DEVITSM_SEED_FILE {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise runtime.CommandError(f"ITSM_DEVITSM_SEED_FILE {path}: expected an object of tables")
    for table, records in data.items():
        if table not in TABLES or not isinstance(records, list):
            raise runtime.CommandError(f"ITSM_DEVITSM_SEED_FILE {path}: {table!r} is not a table of records")
        for record in records:
            key = TABLES[table].get("required", "name")
            if not isinstance(record, dict) or store.by_field(table, key, str(record.get(key, ""))):
                continue
            try:
                store.insert(table, record)
            except FieldError as exc:
                raise runtime.CommandError(f"ITSM_DEVITSM_SEED_FILE {path}: {table}: {exc}") from exc


def register(sub: Any) -> None:
    runtime.command(sub, "devitsm", SUMMARY, run).set_defaults(long_running=True)
