"""itsmctl rules test: which event rules an alert meets and what comes out, without a broker."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from ops import runtime

SECTION = "incident management"
SUMMARY = "try the rule files on an alert without a broker (rules test ALERT.json)"
DESCRIPTION = """Which event rules of ops/rules/events.toml (or ITSM_RULES_DIR) an alert matches, in order,
and the alert that results (or that it is dropped, and by which rule), exactly as the worker would
apply them; then where routes.toml sends its incident (the routes, the sinks and their fields) and
the text of each target's template (templates.toml). Without the CMDB the CI is unknown here:
ci_* labels match nothing and a template sees ci as none. ALERT.json is what a source sends:
an Alertmanager webhook, Alertmanager's API body (a JSON array, as Prometheus posts it) or
canonical Alert JSON; - reads standard input.

  itsmctl rules test ops/samples/alertmanager/02-diskfull-firing.json
  itsmctl rules test alert.json -o json"""


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


def register(sub: Any) -> None:
    group = runtime.command(sub, "rules", SUMMARY, description=DESCRIPTION)
    acts = runtime.actions(group)
    p = runtime.action(
        acts, "rules", "test", "the event rules an alert matches, and the result", test, DESCRIPTION
    )
    p.add_argument(
        "alert", metavar="ALERT.json", help="a webhook body, Alertmanager API body or Alert JSON; - for stdin"
    )
    runtime.add_output(p)
