"""itsmctl cmdb show|reconcile|drift: a CI with each field's source and age; the drift between the
CMDB and monitoring, found and listed."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from ops import runtime

SECTION = "change management"
SUMMARY = "the CMDB: a CI with each field's source and age; drift between the CMDB and monitoring"


def _age(seconds: float) -> str:
    """3d 4h, 2h 5m, 40s: the two largest units."""
    seconds = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def latest(settings: Any, ci_id: str) -> Any:
    """The newest cmdb.ci record keyed ci_id (a retired CI too), or None."""
    from ops.dlq import read_all
    from streams.core.models import ConfigurationItem
    from streams.core.serde import SerdeError
    from streams.core.topics import CMDB_CI

    serde = runtime.serde(settings)
    found = None
    key = ci_id.encode()
    for msg in read_all(settings, settings.topic(CMDB_CI)):
        if msg.key() != key:
            continue
        if msg.value() is None:
            found = None  # a tombstone
            continue
        try:
            found = serde.decode(msg.value() or b"", ConfigurationItem)
        except SerdeError as exc:
            print(f"(record at offset {msg.offset()} skipped: {exc})", file=sys.stderr)
    return found


def show(args: argparse.Namespace) -> int:
    from streams.stages.changes.validation import field_values

    settings = runtime.settings(kafka=True)
    ci = latest(settings, args.ci)
    if ci is None:
        print(
            f"cmdb show: no CI {args.ci!r} in {settings.topic('cmdb.ci')} (ids are case-sensitive; "
            "was it accepted? see itsmctl dlq list cmdb.ci.updates.dlq)",
            file=sys.stderr,
        )
        return runtime.EXIT_PROBLEMS
    now = datetime.now(UTC)
    values = field_values(ci)
    rows: list[dict[str, Any]] = []
    for path in sorted(values):
        held = ci.provenance.get(path)
        rows.append(
            {
                "field": path,
                "value": values[path],
                "source": held.source if held else None,
                "reported_at": held.at if held else None,
                "age_seconds": round((now - held.at).total_seconds()) if held else None,
            }
        )
    if args.output == "json":
        runtime.print_json(
            {
                "ci_id": ci.ci_id,
                "ci_class": ci.ci_class,
                "deleted": ci.deleted,
                "source_system": ci.source_system,
                "updated_at": ci.updated_at,
                "fields": rows,
            }
        )
        return runtime.EXIT_OK
    state = " (retired)" if ci.deleted else ""
    print(
        f"{ci.ci_id}{state}: {ci.name}, class {ci.ci_class}; this version from {ci.source_system}, "
        f"{ci.updated_at.isoformat(timespec='seconds')}"
    )
    wide = {k: max([len(k)] + [len(str(r[k] or "")) for r in rows]) for k in ("field", "value", "source")}
    wide["value"] = min(wide["value"], 48)
    print(f"{'FIELD':<{wide['field']}}  {'VALUE':<{wide['value']}}  {'SOURCE':<{wide['source']}}  AGE")
    for r in rows:
        value = str(r["value"])
        value = value if len(value) <= 48 else value[:45] + "..."
        age = (
            f"{_age(r['age_seconds'])} ({r['reported_at'].isoformat(timespec='seconds')})"
            if r["source"]
            else "-"
        )
        source = r["source"] or "-"
        print(f"{r['field']:<{wide['field']}}  {value:<{wide['value']}}  {source:<{wide['source']}}  {age}")
    if not ci.provenance:
        print("(no field provenance: this version was written before reconciliation rules kept it)")
    return runtime.EXIT_OK


def _period(text: str) -> float:
    from streams.core.timeutil import parse_age

    try:
        return parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def reconcile(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from confluent_kafka import KafkaException, Producer

    from ops.drift import run_pass
    from streams.core.kafka import DeliveryError, producer_config

    settings = runtime.settings(kafka=True)
    if not args.once:
        runtime.configure_logging(settings)
        runtime.announce_kafka(settings, "cmdb-reconcile")
    else:
        from streams.core.kafka import identify

        identify("cmdb-reconcile", settings.kafka_sasl_username)
    serde = runtime.serde(settings)
    producer = Producer(producer_config(settings))
    stop = runtime.stop_on_signals()
    period = timedelta(seconds=args.period)
    while True:
        try:
            done = run_pass(
                settings, serde, producer, datetime.now(UTC), period, args.prometheus, args.propose
            )
        except (KafkaException, DeliveryError) as exc:
            raise runtime.kafka_failure(exc) from None
        kinds: dict[str, int] = {}
        for d in done.drift:
            kinds[d.kind.value] = kinds.get(d.kind.value, 0) + 1
        summary = ", ".join(f"{n} {k.lower()}" for k, n in sorted(kinds.items())) or "no drift"
        print(
            f"cmdb reconcile: {done.cis} CIs, {done.alerts} alerts over {args.period / 3600:g} h, "
            f"{done.targets} Prometheus targets: {summary}; {len(done.resolved)} resolved"
            + (f"; {done.proposed} correction(s) proposed to cmdb.ci.updates" if args.propose else ""),
            flush=True,
        )
        if args.once or stop.wait(args.interval):
            return runtime.EXIT_OK


def drift(args: argparse.Namespace) -> int:
    from ops.drift import current

    settings = runtime.settings(kafka=True)
    found = [
        d for d in current(settings, runtime.serde(settings)) if not args.kind or d.kind.value == args.kind
    ]
    if args.output == "json":
        runtime.print_json({"drift": [d.model_dump(mode="json") for d in found]})
    elif not found:
        print("no drift recorded (itsmctl cmdb reconcile finds it)")
    else:
        now = datetime.now(UTC)
        for d in found:
            since = _age((now - d.first_detected_at).total_seconds())
            print(f"{d.kind.value:<18}  {d.ci_id or d.host or '-':<24}  for {since:<8}  {d.detail}")
    return runtime.EXIT_PROBLEMS if found else runtime.EXIT_OK


def import_(args: argparse.Namespace) -> int:
    from pathlib import Path

    from confluent_kafka import KafkaException, Producer

    from ops.cmdb_import import CMDBImportError, Report, rows
    from streams.core.kafka import DeliveryError, producer_config, publish_batch
    from streams.core.messages import encoded
    from streams.core.topics import CMDB_CI_UPDATES

    settings = runtime.settings(kafka=True)
    rules = runtime.rules(settings)
    if args.source not in rules.changes.sources:
        known = ", ".join(sorted(rules.changes.sources))
        raise runtime.CommandError(
            f"--source {args.source!r} has no grant in changes.toml [sources] (there are: {known}); "
            "the worker would reject every CI"
        )
    serde = runtime.serde(settings)
    topic = settings.topic(CMDB_CI_UPDATES)
    producer = Producer(producer_config(settings))
    report = Report()
    chunk: list[Any] = []

    def flush() -> None:
        try:
            publish_batch(producer, chunk)
        except (KafkaException, DeliveryError) as exc:
            raise runtime.CommandError(
                f"cmdb import: {exc}; {report.published} CI(s) were published before this chunk "
                f"(a rerun publishes them again: the worker treats a repeated update as a confirmation)"
            ) from None
        report.published += len(chunk)
        chunk.clear()
        print(f"cmdb import: {report.published} published, {len(report.rejected)} rejected", file=sys.stderr)

    try:
        for row in rows(Path(args.file), args.source, datetime.now(UTC)):
            report.read += 1
            if row.ci is None:
                report.rejected.append(f"{row.where}: {row.problem}")
                print(f"cmdb import: {args.file} {row.where}: {row.problem}", file=sys.stderr)
                continue
            chunk.append(encoded(serde, topic, row.ci.ci_id, row.ci))
            if len(chunk) >= args.chunk:
                flush()
    except CMDBImportError as exc:
        raise runtime.CommandError(str(exc)) from None
    if chunk:
        flush()
    summary = (
        f"cmdb import: {report.read} row(s) read, {report.published} CI update(s) published to {topic} "
        f"as {args.source}, {len(report.rejected)} rejected"
    )
    if args.output == "json":
        runtime.print_json({"read": report.read, "published": report.published, "rejected": report.rejected})
    else:
        print(summary)
    return runtime.EXIT_PROBLEMS if report.rejected else runtime.EXIT_OK


def register(sub: Any) -> None:
    group = runtime.command(
        sub,
        "cmdb",
        SUMMARY,
        description="show: the newest version of a CI in cmdb.ci and, per field, the source whose value "
        "it holds and how long ago that source last reported it. Which source wins a field is decided "
        "by the [[reconcile]] rules of ops/rules/changes.toml.",
    )
    acts = runtime.actions(group)
    p = runtime.action(
        acts,
        "cmdb",
        "show",
        "a CI with the source and age of each field",
        show,
        description="The newest version of CI in cmdb.ci, each field with the source that set it and "
        "its age (provenance kept by the reconciliation rules).\n\n  itsmctl cmdb show web-1\n"
        "  itsmctl cmdb show web-1 -o json",
    )
    p.add_argument("ci", metavar="CI", help="the CI's id (ConfigurationItem.ci_id)")
    runtime.add_output(p)
    p = runtime.action(
        acts,
        "cmdb",
        "reconcile",
        "compare the CMDB with monitoring and publish the drift to cmdb.drift",
        reconcile,
        description="Compare cmdb.ci with the hosts monitoring saw (alerts on alerts.raw over --period "
        "and, with --prometheus, every target of its `up` series) and publish the result to the "
        "compacted cmdb.drift: MISSING_IN_CMDB (a monitored host no CI has), NOT_MONITORED (a CMDB "
        "host nothing saw in the period), ATTRIBUTE_MISMATCH (service or addresses differ); drift "
        "that is gone is deleted (a tombstone). With --propose, each missing host and mismatch also "
        "becomes a CI update on cmdb.ci.updates from the source monitoring-drift, which the worker "
        "validates and reconciles like any other (so it loses to a fresher, higher-priority "
        "source). Runs every --interval seconds until stopped, or once.\n\n"
        "  itsmctl cmdb reconcile --once --prometheus http://127.0.0.1:9090\n"
        "  itsmctl cmdb reconcile --interval 900 --period 24h --propose",
    )
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--interval", type=float, default=900.0, help="seconds between passes (default 900)")
    p.add_argument(
        "--period", type=_period, default=86400.0, help="how far back monitoring counts (default 24h)"
    )
    p.add_argument("--prometheus", metavar="URL", help="a Prometheus whose `up` targets count as monitored")
    p.add_argument("--propose", action="store_true", help="also publish corrections to cmdb.ci.updates")
    p = runtime.action(
        acts,
        "cmdb",
        "import",
        "CIs from a CSV or JSON export onto cmdb.ci.updates, in chunks",
        import_,
        description="Publish the CIs of a CSV file (a header row of ConfigurationItem fields and "
        "attributes.<key> columns; ip_addresses separated by ';', relationships as "
        "'TYPE:target;...') or a JSON file (an array of CIs, or a ServiceNow export {\"records\": "
        "[...]}) to cmdb.ci.updates as updates from --source, --chunk at a time, each chunk "
        "acknowledged before the next, with progress on stderr. The worker validates and reconciles "
        "them; a CI whose relationships point at CIs not in the CMDB yet waits (parked) until they "
        "arrive, or is dead-lettered after park_timeout. A row that is no CI is named on stderr and "
        "skipped; exit 1 when any was.\n\n"
        "  itsmctl cmdb import cis.csv --source discovery\n"
        "  itsmctl cmdb import cmdb_ci_export.json --source servicenow-cmdb --chunk 1000",
    )
    p.add_argument("file", metavar="FILE", help="a .csv or .json export")
    p.add_argument(
        "--source", required=True, help="the source system the CIs come from (a changes.toml grant)"
    )
    p.add_argument(
        "--chunk", type=runtime.int_between(1, 100000), default=500, help="CIs per acknowledged chunk (500)"
    )
    runtime.add_output(p)
    p = runtime.action(
        acts,
        "cmdb",
        "drift",
        "the drift cmdb.drift holds; exit 1 when there is any",
        drift,
        description="The drift between the CMDB and monitoring the last reconciliation pass found "
        "(itsmctl cmdb reconcile), oldest first detection kept. Exit 1 when there is any.\n\n"
        "  itsmctl cmdb drift\n  itsmctl cmdb drift --kind MISSING_IN_CMDB -o json",
    )
    p.add_argument(
        "--kind", choices=["MISSING_IN_CMDB", "NOT_MONITORED", "ATTRIBUTE_MISMATCH"], help="only this kind"
    )
    runtime.add_output(p)
