"""itsmctl gate: serve the change gate's API, check a deploy against it, make a caller token."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ops import runtime
from streams.core import telemetry

SECTION = "change management"
SUMMARY = "the change gate: serve its API, check a deploy, make a caller token"
CHECK_EPILOG = """exit codes: 0 allowed, 1 denied (or no approval before --timeout), 2 error (gate
unreachable, token refused or unreadable, bad request). The token comes from ITSM_GATE_TOKEN or,
better, ITSM_GATE_TOKEN_FILE; never from the command line."""


def serve(_: argparse.Namespace) -> int:
    from aiohttp import web

    from connectors.auth import Guard, TokensError, TokensFile
    from connectors.gate.server import GATE_PRODUCER, create_gate
    from streams.core.kafka import AckedProducer, BrokerProbe
    from streams.stages.changes.gate import ChangeGate, GatePolicy
    from streams.stages.windows import WindowCalendar

    settings = runtime.settings()
    runtime.configure_logging(settings)
    runtime.announce_kafka(settings, "gate")
    path = settings.gate_callers_file or settings.tokens_file
    if not path:
        raise runtime.CommandError(
            "set ITSM_TOKENS_FILE or ITSM_GATE_CALLERS_FILE (make one with `itsmctl gate token NAME`)"
        )
    try:
        tokens = TokensFile(Path(path))
    except TokensError as exc:
        raise runtime.CommandError(str(exc)) from None
    local_rules = runtime.rules(settings)
    serde = runtime.serde(settings)
    # correlation.toml's topology (which CIs a window covers) from the rule set the pipeline runs.
    switch, rule_sets = runtime.follow_rules(settings, serde, local_rules, "gate")
    try:
        views = runtime.start_views(settings, serde, "cmdb", "windows", "changes", "requests")
    except runtime.CommandError:
        rule_sets.stop()
        raise
    views.followers.append(rule_sets)
    generation, rules = switch.current()
    topology = rules.correlation.topology
    calendar = WindowCalendar(
        views["windows"], views["cmdb"], frozenset(topology.relationships), topology.max_depth
    )
    taken = [generation]

    @web.middleware
    async def current_rules(request: web.Request, handler: Any) -> Any:
        # A new rule set is taken between two requests (on the event loop): a decision is made
        # under one whole set.
        now, current = switch.current()
        if now != taken[0]:
            topology = current.correlation.topology
            calendar.relationships = frozenset(topology.relationships)
            calendar.max_depth = topology.max_depth
            taken[0] = now
        return await handler(request)

    gate = ChangeGate(GatePolicy(settings.gate_environment_set()), calendar, views["cmdb"])
    producer = AckedProducer(settings, **GATE_PRODUCER)
    app = create_gate(
        settings,
        serde,
        producer,
        gate,
        views["changes"],
        views["requests"],
        Guard("gate", tokens),
        views.followers,
        checks={"broker": BrokerProbe(settings)},
    )

    app.middlewares.append(current_rules)

    async def on_cleanup(_: web.Application) -> None:
        producer.close()
        views.stop()

    app.on_cleanup.append(on_cleanup)
    telemetry.get_logger("gate").info(
        "gate_listening",
        host=settings.gate_host,
        port=settings.gate_port,
        principals=len(tokens.get().principals),
        environments=sorted(settings.gate_environment_set()),
        changes=len(views["changes"].values()),
        windows=len(views["windows"].windows()),
    )
    web.run_app(
        app,
        host=settings.gate_host,
        port=settings.gate_port,
        ssl_context=runtime.server_tls(settings, "gate"),
        print=None,
        shutdown_timeout=10,
    )
    return runtime.EXIT_OK


def token(args: argparse.Namespace) -> int:
    from ops.commands.tokens import issue_audited

    settings = runtime.settings()
    path = Path(
        args.callers_file or settings.gate_callers_file or settings.tokens_file or "gate-callers.toml"
    )
    scopes = ["gate:check", *(["gate:bypass"] if args.bypass else [])]
    return issue_audited(settings, path, args.name, scopes, args.actor, args.offline)


def check(args: argparse.Namespace) -> int:
    from connectors.gate.client import Answer, GateClient, GateUnavailable

    settings = runtime.settings()
    if settings.gate_token is None:
        raise runtime.CommandError("set ITSM_GATE_TOKEN_FILE (or ITSM_GATE_TOKEN)")
    if args.bypass and not (args.justification or "").strip():
        raise runtime.CommandError("--bypass needs --justification")
    text = args.output == "text"

    def show(answer: Answer, heading: str | None = None) -> None:
        if not text:
            return
        if heading:
            print(heading)
        for reason in answer.reasons:
            print(f"  - {reason}")

    try:
        client = GateClient(
            settings.gate_url,
            settings.gate_token.get_secret_value(),
            settings.tls_verify("gate"),
            settings.http_timeout_seconds,
        )
    except ValueError as exc:
        raise runtime.CommandError(str(exc)) from None
    try:
        answer = client.check(**_check_body(args), bypass=args.bypass, justification=args.justification or "")
        if answer.exit_code != 0 and args.wait and not args.bypass:
            if text:
                print(
                    f"gate: {args.service} -> {args.env}: deny for now; "
                    f"waiting for an approval (up to {args.timeout:.0f}s)"
                )
            show(answer)
            if args.change:
                answer = _recheck(client, args)
            else:
                pending = client.submit(
                    service=args.service,
                    environment=args.env,
                    commit=args.commit,
                    ci_ids=args.ci or [],
                    short_description=args.summary or "",
                )
                request_id = pending.body["request_id"]
                if text:
                    print(f"gate: change requested ({request_id}); polling every {args.interval:.0f}s")
                answer = client.wait(
                    request_id,
                    args.timeout,
                    args.interval,
                    progress=lambda a: show(a, f"gate: {a.status}"),
                )
    except GateUnavailable as exc:
        raise runtime.CommandError(str(exc)) from None
    finally:
        client.close()
    verdict = {0: "allow", 1: "deny"}[answer.exit_code]
    if not text:
        runtime.print_json(
            {
                "service": args.service,
                "environment": args.env,
                "verdict": verdict,
                "status": answer.status,
                "reasons": answer.reasons,
                "answer": answer.body,
            }
        )
        return answer.exit_code
    print(
        f"gate: {args.service} -> {args.env}: {verdict}"
        + (f" (change {answer.body['change_id']})" if answer.body.get("change_id") else "")
    )
    show(answer)
    if answer.body.get("emergency_change"):
        corr = answer.body["emergency_change"]
        print(f"gate: emergency change {corr} will be recorded; report the deploy with --change {corr}")
    return answer.exit_code


def _check_body(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "service": args.service,
        "environment": args.env,
        "change_id": args.change,
        "commit": args.commit,
        "ci_ids": args.ci or [],
    }


def _recheck(client: Any, args: argparse.Namespace) -> Any:
    deadline = time.monotonic() + args.timeout
    while True:
        answer = client.check(**_check_body(args))
        if answer.exit_code == 0 or time.monotonic() + args.interval > deadline:
            return answer
        time.sleep(args.interval)


def register(sub: Any) -> None:
    group = runtime.command(
        sub,
        "gate",
        SUMMARY,
        description="serve: run the gate's HTTP API. check: may this deploy go now? (what a pipeline "
        "step runs). token NAME: make a caller and print its token once.",
    )
    group.epilog = CHECK_EPILOG
    acts = runtime.actions(group)
    runtime.action(acts, "gate", "serve", "run the gate's HTTP API", serve)
    p = runtime.action(
        acts,
        "gate",
        "check",
        "may this deploy go now? exit 0 allow, 1 deny, 2 error",
        check,
        description="Asks the gate whether SERVICE may deploy to ENV now (an approved change, no "
        "freeze). With --wait, a denied deploy requests a change (or waits for --change) and polls.",
    )
    p.epilog = CHECK_EPILOG
    p.add_argument("--service", required=True, help="the service to deploy")
    p.add_argument("--env", required=True, help="the target environment")
    p.add_argument("--change", help="the change this deploy implements (number or correlation id)")
    p.add_argument("--commit", help="the commit to deploy")
    p.add_argument("--ci", action="append", help="a CI the deploy touches (repeatable)")
    p.add_argument("--bypass", action="store_true", help="emergency bypass (needs --justification)")
    p.add_argument("--justification", help="why the emergency bypass")
    p.add_argument(
        "--wait",
        action="store_true",
        help="if denied, request a change (or, with --change, wait for it) and poll",
    )
    p.add_argument("--summary", help="with --wait: title of the change requested")
    p.add_argument(
        "--timeout", type=float, default=3600.0, help="with --wait: give up after this many seconds"
    )
    p.add_argument("--interval", type=float, default=15.0, help="with --wait: seconds between polls")
    runtime.add_output(p)
    p = runtime.action(acts, "gate", "token", "make a caller and print its token once", token)
    p.add_argument("name", help="the caller's name, e.g. release-bot")
    p.add_argument("--bypass", action="store_true", help="this caller may use the emergency bypass")
    p.add_argument(
        "--callers-file", help="tokens file (default ITSM_GATE_CALLERS_FILE, then ITSM_TOKENS_FILE)"
    )
    p.add_argument("--actor", help="who issues it, for the audit record (default: your login name)")
    p.add_argument("--offline", action="store_true", help="write the file without an audit record")
