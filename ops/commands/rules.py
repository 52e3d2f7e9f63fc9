"""itsmctl rules test: which event rules an alert meets and what comes out, without a broker."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ops import runtime

SECTION = "incident management"
SUMMARY = "the rule files: try them on an alert; apply, roll back and list the sets the pipeline runs"
DESCRIPTION = """Which event rules of ops/rules/events.toml (or ITSM_RULES_DIR) an alert matches, in order,
and the alert that results (or that it is dropped, and by which rule), exactly as the worker would
apply them; then where routes.toml sends its incident (the routes, the sinks and their fields) and
the text of each target's template (templates.toml). Without the CMDB the CI is unknown here:
ci_* labels match nothing and a template sees ci as none. ALERT.json is what a source sends:
an Alertmanager webhook, Alertmanager's API body (a JSON array, as Prometheus posts it) or
canonical Alert JSON; - reads standard input.

  itsmctl rules test ops/samples/alertmanager/02-diskfull-firing.json
  itsmctl rules test alert.json -o json"""

LIFECYCLE = """

The rule files the pipeline runs are a rule set on the compacted rules.sets topic; every worker,
gateway and gate switches to a new set at a record or request boundary, without a restart, and
every switch is audited.

  itsmctl rules status                  the running set, its file versions, what differs locally
  itsmctl rules diff [SET_A SET_B]      the running set against the local files, or two sets
  itsmctl rules apply [--dir D]         validate the local files (refused when invalid, or when a
                                        changed file kept its version) and switch to them
  itsmctl rules rollback [--to SET]     switch back to the previous set (or SET)
  itsmctl rules history                 every set applied, who, when and why"""


def _alerts(payload: Any, now: datetime) -> list[Any]:
    from connectors.sources.alertmanager import api, mapping
    from connectors.sources.canonical.mapping import to_alerts as canonical

    if isinstance(payload, list):
        return api.to_alerts(payload, now)
    if isinstance(payload, dict) and "version" in payload and "alerts" in payload:
        return mapping.to_alerts(payload, now)
    return canonical(payload, now)


def test(args: argparse.Namespace) -> int:
    from connectors.sources.alertmanager.mapping import PayloadError
    from streams.stages.alerts.events import EventRuleSet
    from streams.stages.alerts.routing import Router
    from streams.stages.alerts.templates import TemplateFault, compile_all, context, render

    settings = runtime.settings()
    rules = runtime.rules(settings)
    payload = runtime.read_json(args.alert)
    try:
        alerts = _alerts(payload, datetime.now(UTC))
    except (PayloadError, ValueError) as exc:
        raise runtime.CommandError(f"{args.alert}: not an alert this pipeline reads: {exc}") from None
    engine = EventRuleSet(rules.events)
    router = Router(rules.routes)
    templates = compile_all(rules.templates.texts())
    results = []
    for alert in alerts:
        verdict = engine.apply(alert, count=False)
        routed = router.route(verdict.alert.labels) if verdict.alert else None
        rendered: dict[str, dict[str, str]] = {}
        problem = None
        if verdict.alert is not None and routed is not None and templates:
            extra = {"correlation_id": "(correlation id)", "impact": None, "urgency": None}
            try:
                ctx = context(verdict.alert, None, {**extra, "route": list(routed.routes)})
                rendered = render(templates, routed.targets, ctx)
            except TemplateFault as fault:
                problem = f"{fault} (the worker would dead-letter this alert)"
        results.append(
            {
                "fingerprint": alert.fingerprint,
                "name": alert.name,
                "matched": [{"rule": r, "action": a} for r, a in verdict.matched],
                "dropped_by": verdict.dropped_by,
                "alert": verdict.alert.model_dump(mode="json") if verdict.alert else None,
                "route": None
                if routed is None
                else {
                    "routes": list(routed.routes),
                    "targets": list(routed.targets),
                    "fields": routed.fields,
                },
                "templates": rendered,
                "template_error": problem,
            }
        )
    if args.output == "json":
        runtime.print_json(
            {
                "events_version": rules.events.version,
                "routes_version": rules.routes.version,
                "alerts": results,
            }
        )
        return runtime.EXIT_OK
    print(f"events.toml v{rules.events.version}: {len(rules.events.rule)} rule(s)")
    for i, r in enumerate(results, 1):
        print(f"\nalert {i} of {len(results)}: {r['name']} (fingerprint {r['fingerprint']})")
        for m in r["matched"]:
            print(f"  matched {m['rule']}: {m['action']}")
        if not r["matched"]:
            print("  no rule matched")
        if r["dropped_by"]:
            print(f"  -> dropped by {r['dropped_by']}: recorded in alerts.suppressed, no incident")
        else:
            out = r["alert"]
            labels = ",".join(f"{k}={v}" for k, v in sorted(out["labels"].items()))
            print(f"  -> severity {out['severity'] or '(none)'}, labels {{{labels}}}")
            route = r["route"]
            sinks = ", ".join(route["targets"]) or "every sink"
            print(f"  -> routes.toml v{rules.routes.version}: route {' + '.join(route['routes'])} to {sinks}")
            for target, values in sorted(route["fields"].items()):
                print(f"     {target}: " + ", ".join(f"{k}={v}" for k, v in sorted(values.items())))
            if r["template_error"]:
                print(f"  -> templates.toml: {r['template_error']}")
            for target, texts in sorted(r["templates"].items()):
                for name, text in texts.items():
                    print(f"  -> {target} {name} (templates.toml, the CI unknown here):")
                    print("     " + text.replace("\n", "\n     "))
    return runtime.EXIT_OK


def _sets(settings: Any) -> Any:
    from confluent_kafka import KafkaException

    from ops.rulesets import RuleSetError, read

    runtime.reachable(settings)
    try:
        return read(settings, runtime.serde(settings))
    except RuleSetError as exc:
        raise runtime.CommandError(str(exc)) from None
    except KafkaException as exc:
        raise runtime.kafka_failure(exc) from None


def _local(args: argparse.Namespace, settings: Any) -> tuple[str, dict[str, Any]]:
    from ops.rulesets import files_of
    from streams.core.rules import RuleError, default_rules_dir, rule_texts

    directory = Path(args.dir or settings.rules_dir or default_rules_dir())
    try:
        return str(directory), files_of(rule_texts(directory), str(directory))
    except RuleError as exc:
        raise runtime.CommandError(f"{exc} (nothing was applied)") from None


def _publish(settings: Any, rule_set: Any, action: str, detail: dict[str, str]) -> None:
    from confluent_kafka import Producer

    from ops.rulesets import CURRENT
    from streams.core.kafka import DeliveryError, producer_config, publish_batch
    from streams.core.messages import encoded
    from streams.core.models import AuditEvent, AuditOutcome
    from streams.core.topics import AUDIT_EVENTS, RULES

    serde = runtime.serde(settings)
    topic = settings.topic(RULES)
    audit = AuditEvent(
        event_id=f"rules.{action}-{rule_set.set_id}",
        occurred_at=rule_set.applied_at,
        actor=rule_set.applied_by,
        action=f"rules.{action}",
        subject_type="rule_set",
        subject_id=rule_set.set_id,
        outcome=AuditOutcome.DONE,
        reason=rule_set.reason,
        details={"previous": rule_set.previous_set_id or "", **detail},
    )
    try:
        publish_batch(
            Producer(producer_config(settings)),
            [
                encoded(serde, topic, f"set:{rule_set.set_id}", rule_set),
                encoded(serde, topic, CURRENT, rule_set),
                encoded(serde, settings.topic(AUDIT_EVENTS), audit.event_id, audit),
            ],
        )
    except DeliveryError as exc:
        raise runtime.CommandError(f"rules {action}: {exc}; {runtime.kafka_hint(settings)}") from None


def _versions(rule_set: Any) -> str:
    return ", ".join(f"{n.removesuffix('.toml')} v{v}" for n, v in rule_set.versions().items())


def apply(args: argparse.Namespace) -> int:
    import getpass

    from ops.rulesets import bump_problems, diff, set_id
    from streams.core.models import RuleSet

    settings = runtime.settings(kafka=True)
    where, files = _local(args, settings)
    sets = _sets(settings)
    problems = bump_problems(files, sets.current)
    if problems:
        raise runtime.CommandError("refused: " + "; ".join(problems))
    if sets.current is not None and all(
        sets.current.files.get(n) is not None and sets.current.files[n].sha256 == f.sha256
        for n, f in files.items()
    ):
        print(
            f"rules apply: {where} is what the pipeline runs already (set {sets.current.set_id}): "
            "nothing to do"
        )
        return runtime.EXIT_OK
    now = datetime.now(UTC)
    new = RuleSet(
        set_id=set_id(files, now),
        files=files,
        action="apply",
        applied_by=args.actor or getpass.getuser(),
        applied_at=now,
        reason=args.reason or "",
        previous_set_id=sets.current.set_id if sets.current else None,
    )
    changed = diff(sets.current, files, "running", where)
    if args.dry_run:
        print(changed or "(no difference)")
        print(f"rules apply: would switch to {_versions(new)} (dry run: nothing applied)")
        return runtime.EXIT_OK
    _publish(settings, new, "applied", {"versions": _versions(new), "from": where})
    print(changed, end="")
    print(
        f"rules apply: set {new.set_id} ({_versions(new)}) published; "
        "every worker, gateway and gate switches at its next record or request"
    )
    return runtime.EXIT_OK


def rollback(args: argparse.Namespace) -> int:
    import getpass

    from ops.rulesets import RuleSetError, diff, set_id, validate_set
    from streams.core.models import RuleSet

    settings = runtime.settings(kafka=True)
    sets = _sets(settings)
    if sets.current is None:
        raise runtime.CommandError("no rule set was ever applied (itsmctl rules apply first)")
    if args.to:
        target = sets.find(args.to)
        if target is None:
            raise runtime.CommandError(f"no rule set {args.to!r} in the history (itsmctl rules history)")
    else:
        target = sets.find(sets.current.previous_set_id or "") if sets.current.previous_set_id else None
        if target is None:
            raise runtime.CommandError(f"set {sets.current.set_id} has no previous set to roll back to")
    try:
        validate_set(target)  # the files must still load with this pipeline's code
    except RuleSetError as exc:
        raise runtime.CommandError(f"refused: {exc}") from None
    now = datetime.now(UTC)
    new = RuleSet(
        set_id=set_id(target.files, now),
        files=target.files,
        action="rollback",
        applied_by=args.actor or getpass.getuser(),
        applied_at=now,
        reason=args.reason or f"rollback to {target.set_id}",
        previous_set_id=sets.current.set_id,
    )
    _publish(settings, new, "rolled_back", {"versions": _versions(new), "restores": target.set_id})
    print(diff(sets.current, target.files, sets.current.set_id, target.set_id), end="")
    print(f"rules rollback: set {new.set_id} restores {target.set_id} ({_versions(new)})")
    return runtime.EXIT_OK


def history(args: argparse.Namespace) -> int:
    settings = runtime.settings(kafka=True)
    sets = _sets(settings)
    current = sets.current.set_id if sets.current else None
    if args.output == "json":
        runtime.print_json(
            {
                "current": current,
                "sets": [
                    {
                        "set_id": s.set_id,
                        "action": s.action,
                        "applied_by": s.applied_by,
                        "applied_at": s.applied_at,
                        "reason": s.reason,
                        "previous_set_id": s.previous_set_id,
                        "versions": s.versions(),
                    }
                    for s in sets.history
                ],
            }
        )
        return runtime.EXIT_OK
    if not sets.history:
        print("no rule set applied yet (itsmctl rules apply)")
    for s in sets.history:
        mark = "*" if s.set_id == current else " "
        print(
            f"{mark} {s.set_id}  {s.action:<8}  {s.applied_at:%Y-%m-%d %H:%M:%S}Z  {s.applied_by}  "
            f"{_versions(s)}"
        )
        if s.reason:
            print(f"    {s.reason}")
    return runtime.EXIT_OK


def diff_(args: argparse.Namespace) -> int:
    from ops.rulesets import diff

    settings = runtime.settings(kafka=True)
    sets = _sets(settings)
    if args.a and args.b:
        a, b = sets.find(args.a), sets.find(args.b)
        if a is None or b is None:
            raise runtime.CommandError(f"no rule set {args.a if a is None else args.b!r} in the history")
        print(diff(a, b.files, a.set_id, b.set_id), end="")
        return runtime.EXIT_OK
    where, files = _local(args, settings)
    text = diff(sets.current, files, "running", where)
    print(text or f"{where} is what the pipeline runs", end="\n" if not text else "")
    return runtime.EXIT_PROBLEMS if text else runtime.EXIT_OK


def status(args: argparse.Namespace) -> int:
    settings = runtime.settings(kafka=True)
    sets = _sets(settings)
    current = sets.current
    where, files = _local(args, settings)
    pending = (
        []
        if current is None
        else [n for n, f in files.items() if n not in current.files or current.files[n].sha256 != f.sha256]
    )
    if args.output == "json":
        runtime.print_json(
            {
                "current": None
                if current is None
                else {
                    "set_id": current.set_id,
                    "action": current.action,
                    "applied_by": current.applied_by,
                    "applied_at": current.applied_at,
                    "versions": current.versions(),
                },
                "local": {
                    "dir": where,
                    "versions": {n: f.version for n, f in files.items()},
                    "differs": pending,
                },
            }
        )
        return runtime.EXIT_OK
    if current is None:
        print(f"no rule set on the rules topic: the pipeline runs the files it started with ({where})")
        return runtime.EXIT_OK
    print(
        f"running: set {current.set_id}, {current.action} by {current.applied_by} "
        f"at {current.applied_at:%Y-%m-%d %H:%M:%S}Z"
    )
    for name, f in sorted(current.files.items()):
        local = files.get(name)
        note = (
            "" if local is None or local.sha256 == f.sha256 else f"  (differs in {where}: v{local.version})"
        )
        print(f"  {name:<16} v{f.version}{note}")
    print(
        "each worker, gateway and gate exports the set it runs: itsm_pipeline_rules_version{file} and "
        "itsm_pipeline_rules_set_info"
    )
    return runtime.EXIT_OK


def register(sub: Any) -> None:
    group = runtime.command(sub, "rules", SUMMARY, description=DESCRIPTION + LIFECYCLE)
    acts = runtime.actions(group)
    p = runtime.action(
        acts, "rules", "test", "the event rules an alert matches, and the result", test, DESCRIPTION
    )
    p.add_argument(
        "alert", metavar="ALERT.json", help="a webhook body, Alertmanager API body or Alert JSON; - for stdin"
    )
    runtime.add_output(p)

    def local_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--dir", help="the rule files to compare or apply (default ITSM_RULES_DIR, else ops/rules)"
        )

    p = runtime.action(
        acts, "rules", "status", "the rule set the pipeline runs, and what differs locally", status
    )
    local_dir(p)
    runtime.add_output(p)
    p = runtime.action(acts, "rules", "history", "every rule set applied, newest last (* runs now)", history)
    runtime.add_output(p)
    p = runtime.action(
        acts,
        "rules",
        "diff",
        "the running set against the local files (exit 1 when they differ), or set A against B",
        diff_,
    )
    p.add_argument("a", nargs="?", metavar="SET_A", help="a set id (or its start) from rules history")
    p.add_argument("b", nargs="?", metavar="SET_B", help="another one")
    local_dir(p)
    for name, handler, summary in (
        ("apply", apply, "validate the local files and switch the pipeline to them (audited)"),
        ("rollback", rollback, "switch the pipeline back to the previous set, or --to SET (audited)"),
    ):
        p = runtime.action(acts, "rules", name, summary, handler)
        if name == "apply":
            local_dir(p)
            p.add_argument("--dry-run", action="store_true", help="show the difference, apply nothing")
        else:
            p.add_argument(
                "--to", metavar="SET", help="the set to restore (default: the one before the running one)"
            )
        p.add_argument("--reason", help="why, for the audit record")
        p.add_argument("--actor", help="who does it, for the audit record (default: your login name)")
