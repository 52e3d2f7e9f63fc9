"""itsmctl devitsm: the development ITSM (ServiceNow Table API subset, SQLite)."""

from __future__ import annotations

import argparse
from typing import Any

from ops import runtime
from streams.core import telemetry

SECTION = "run the pipeline"
SUMMARY = "run the development ITSM (a ServiceNow Table API subset, SQLite)"


def run(_: argparse.Namespace) -> int:
    from aiohttp import web

    from connectors.devitsm.server import OAuthClient, create_devitsm
    from connectors.devitsm.store import Store

    settings = runtime.settings()
    telemetry.configure_logging(settings.log_level)
    password = settings.devitsm_password.get_secret_value()
    if not password:
        raise runtime.CommandError(
            "set ITSM_DEVITSM_PASSWORD (or ITSM_DEVITSM_PASSWORD_FILE); "
            "the development ITSM does not run without authentication"
        )
    store = Store(settings.devitsm_db)
    groups = frozenset(g.strip() for g in settings.devitsm_known_groups.split(",") if g.strip())
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
        password,
        settings.devitsm_rate_limit,
        groups,
        oauth,
        faults=settings.devitsm_fault_injection,
    )
    telemetry.get_logger("devitsm").info(
        "devitsm_listening", host=settings.devitsm_host, port=settings.devitsm_port, db=settings.devitsm_db
    )
    web.run_app(app, host=settings.devitsm_host, port=settings.devitsm_port, print=None, shutdown_timeout=5)
    store.close()
    return runtime.EXIT_OK


def register(sub: Any) -> None:
    runtime.command(sub, "devitsm", SUMMARY, run).set_defaults(long_running=True)
