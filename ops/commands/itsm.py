"""itsmctl itsm: preflight checks of an ITSM target, and provisioning what the sinks need there."""

from __future__ import annotations

import argparse
from typing import Any

from ops import runtime

SECTION = "connect an ITSM"
SUMMARY = "check an ITSM target before the sinks use it; provision its custom fields"
TARGETS = ("servicenow", "jira", "rt")
SYMBOL = {"ok": "ok  ", "warn": "WARN", "problem": "FAIL"}


def run_checks(settings: Any, target: str) -> list[Any]:
    """The target's findings; raises Unreachable when it does not answer."""
    from connectors.registry import preflight

    try:
        return preflight(target, settings)
    except ValueError as exc:  # configuration the target cannot be built from
        raise runtime.CommandError(str(exc)) from None


def print_findings(target: str, findings: list[Any], out: Any) -> None:
    for f in findings:
        print(f"{SYMBOL[f.level.value]}  {f.check:<34} {f.detail}", file=out)
        if f.fix and f.level.value != "ok":
            print(f"      {'':<34} fix: {f.fix}", file=out)


def check(args: argparse.Namespace) -> int:
    import sys

    from connectors.preflight import Level, Unreachable, worst

    settings = runtime.settings()
    try:
        findings = run_checks(settings, args.target)
    except Unreachable as exc:
        raise runtime.CommandError(f"{exc}; is the URL right and the ITSM up?") from None
    level = worst(findings)
    if args.output == "json":
        runtime.print_json(
            {
                "target": args.target,
                "result": level.value,
                "findings": [
                    {"check": f.check, "level": f.level.value, "detail": f.detail, "fix": f.fix}
                    for f in findings
                ],
            }
        )
    else:
        print_findings(args.target, findings, sys.stdout)
        problems = sum(f.level is Level.PROBLEM for f in findings)
        warnings = sum(f.level is Level.WARN for f in findings)
        print(f"{args.target}: {problems} problem(s), {warnings} warning(s)")
    return runtime.EXIT_PROBLEMS if level is Level.PROBLEM else runtime.EXIT_OK


def provision(args: argparse.Namespace) -> int:
    import httpx

    from connectors.tls import tls
    from ops.servicenow.provision import ProvisionError, Step
    from ops.servicenow.provision import provision as run

    settings = runtime.settings()
    password = settings.servicenow_admin_password.get_secret_value()
    if not password:
        raise runtime.CommandError(
            "set ITSM_SERVICENOW_ADMIN_PASSWORD_FILE (a file holding the password of "
            f"ITSM_SERVICENOW_ADMIN_USER={settings.servicenow_admin_user}, "
            "an account with personalize_dictionary)"
        )

    def progress(step: Step) -> None:
        if args.output != "json":
            print(f"{step.action:<8} {step.column.table}.{step.column.element} ({step.column.internal_type})")

    with httpx.Client(
        base_url=settings.servicenow_url.rstrip("/"),
        auth=(settings.servicenow_admin_user, password),
        verify=tls(settings.servicenow_verify()),
        timeout=settings.http_timeout_seconds,
        headers={"Accept": "application/json"},
    ) as http:
        try:
            steps = run(http, dry_run=args.dry_run, progress=progress)
        except ProvisionError as exc:
            raise runtime.CommandError(str(exc)) from None
    if args.output == "json":
        runtime.print_json(
            [{"table": s.column.table, "column": s.column.element, "action": s.action} for s in steps]
        )
    missing = sum(s.action == "missing" for s in steps)
    return runtime.EXIT_PROBLEMS if missing else runtime.EXIT_OK


def register(sub: Any) -> None:
    group = runtime.command(
        sub,
        "itsm",
        SUMMARY,
        description="Run `itsmctl itsm check TARGET` first when connecting an ITSM: it signs in with the "
        "sink's settings and names every problem with its fix. The sink runs the same checks at start.",
    )
    acts = runtime.actions(group)
    p = runtime.action(
        acts,
        "itsm",
        "check",
        "check credentials, TLS, clock, rights and fields of an ITSM target",
        check,
        description="Signs in with the sink's settings for TARGET and checks: the credentials; TLS "
        "verification; clock skew; that the account may read and write what the sink needs (tables, "
        "project and request types, queues, transitions, custom fields); and rights it holds beyond "
        "that (warnings). Nothing is written. Exit 0: ready (warnings allowed); 1: problems, each "
        "named with its fix; 2: cannot connect or not configured.",
    )
    p.add_argument("target", choices=TARGETS, help="the ITSM target, as `itsmctl sink` names it")
    runtime.add_output(p)
    p = runtime.action(
        acts,
        "itsm",
        "provision",
        "create the custom fields the ServiceNow sink writes (sys_dictionary)",
        provision,
        description="Creates the u_* columns the ServiceNow sink writes (connectors/sinks/servicenow/"
        "columns.py) through the Table API on sys_dictionary, with the account ITSM_SERVICENOW_ADMIN_USER "
        "(personalize_dictionary or admin; password from ITSM_SERVICENOW_ADMIN_PASSWORD_FILE). "
        "Idempotent. For RT run ops/rt/provision.pl; Jira needs no custom fields.",
    )
    p.add_argument("target", choices=["servicenow"], help="the ITSM whose fields to create")
    p.add_argument(
        "--dry-run", action="store_true", help="list what is missing, create nothing (exit 1 if any)"
    )
    runtime.add_output(p)
