"""itsmctl status: every integration's health, throughput, lag, dead letters and SLOs; `serve` keeps
it live on a page and exports the lag metrics."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

from ops import runtime

SECTION = "operate"
SUMMARY = "the pipeline's status: health, throughput, lag, dead letters, SLOs (and a live page)"
DESCRIPTION = """The status of every integration: health (its /readyz), throughput and last error (its
/metrics), consumer lag of every pipeline group, dead-letter depth and the latest dead letters with
their reasons, and each SLO of ops/slo.toml with its compliance and error budget left.

The processes to watch are NAME=URL pairs (their metrics port), from --scrape or ITSM_STATUS_SCRAPE:
  ITSM_STATUS_SCRAPE=gateway=http://127.0.0.1:8080,worker=http://127.0.0.1:9464,sink-servicenow=http://127.0.0.1:9465
A name's first word is its kind: gateway, worker, sink-<target>, gate, changes-sync, incidents-sync.

  itsmctl status                one snapshot (exit 1 when an integration is down or not ready)
  itsmctl status -o json        the same as one JSON document
  itsmctl status serve          the live page on http://127.0.0.1:9470/ (JSON at /api/status),
                                lag in kafka_exporter's names at /metrics, /healthz and /readyz"""
PAGE = Path(__file__).resolve().parents[1] / "status_page.html"


def _service(args: argparse.Namespace) -> Any:
    from ops import slo
    from ops.status import StatusService, parse_targets

    settings = runtime.settings(kafka=True)
    try:
        targets = parse_targets(",".join([settings.status_scrape, *(args.scrape or [])]))
        slos = slo.load()
    except ValueError as exc:
        raise runtime.CommandError(str(exc)) from None
    return settings, StatusService(settings, targets, slos)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.3f}%"


def show(args: argparse.Namespace) -> int:
    _settings, service = _service(args)
    try:
        service.refresh()
        snap = service.snapshot()
    finally:
        service.close()
    if snap["broker_error"]:
        raise runtime.CommandError(f"Kafka: {snap['broker_error']}; {runtime.kafka_hint(_settings)}")
    bad = [i for i in snap["integrations"] if i["health"] != "up"]
    if args.output == "json":
        runtime.print_json(snap)
        return runtime.EXIT_PROBLEMS if bad else runtime.EXIT_OK
    print(f"status at {snap['at']}")
    print(
        "\nintegrations:" if snap["integrations"] else "\nintegrations: none watched (set ITSM_STATUS_SCRAPE)"
    )
    for i in snap["integrations"]:
        err = i["last_error"]
        last = f"; last error {err['class']} at {err['stage']}" if err else ""
        checks = ", ".join(f"{k}: {v}" for k, v in i["checks"].items() if v != "ok")
        print(
            f"  {i['name']:<20} {i['health']:<10} {i['processed']:>10.0f} processed"
            f"{last}{'; ' + checks if checks else ''}"
        )
        for r in i["routes"]:
            refused = f", {r['refused']:.0f} request(s) refused" if r["refused"] else ""
            print(f"    route {r['source']:<14} {r['processed']:>10.0f} alerts{refused}")
    print("\nconsumer groups:")
    for g in snap["groups"]:
        print(f"  {g['group']:<40} {g['state']:<12} lag {g['lag']:>8} records, {g['lag_seconds']:.1f} s")
    print("\nSLOs:")
    for o in snap["slos"]:
        print(
            f"  {o['name']:<24} objective {_pct(o['objective'])}, compliance {_pct(o['compliance'])}, "
            f"budget left {_pct(o['budget_left'])} ({o['events']:.0f} events)"
        )
    print("\ndead letters:")
    for d in snap["dlq"]:
        if d["depth"]:
            print(f"  {d['topic']:<40} {d['depth']:>8} kept")
    for letter in snap["recent_dead_letters"][:5]:
        print(
            f"  {letter['topic']}:{letter['partition']}:{letter['offset']} {letter['error_class']} "
            f"at {letter['stage']}: {letter['reason'][:120]}"
        )
    return runtime.EXIT_PROBLEMS if bad else runtime.EXIT_OK


def serve(args: argparse.Namespace) -> int:
    from aiohttp import web
    from prometheus_client import REGISTRY

    from connectors.auth import Refusal, TokensError, guard_for, refused
    from streams.core import telemetry

    settings, service = _service(args)
    runtime.configure_logging(settings)
    runtime.announce_kafka(settings, "status")
    log = telemetry.get_logger("status")
    try:
        # With ITSM_TOKENS_FILE, /api/status needs status:read (dead-letter reasons are data);
        # the page itself, /metrics and the health endpoints stay open.
        guard = guard_for("status", settings, open_scopes=("status:read",))
    except TokensError as exc:
        raise runtime.CommandError(str(exc)) from None
    if guard.insecure:
        log.warning("insecure_no_authentication", detail="/api/status is open; set ITSM_TOKENS_FILE")
    interval = args.interval or settings.status_interval_seconds
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                service.refresh()
            except Exception:  # one failed refresh is logged; the next one tries again
                log.exception("status_refresh_failed")
            stop.wait(max(0.0, interval - (time.monotonic() - started)))

    service.refresh()  # the first answer already has figures
    REGISTRY.register(service)  # kafka_consumergroup_* and the DLQ gauges at /metrics
    thread = threading.Thread(target=loop, name="status-refresh", daemon=True)
    thread.start()

    def ready() -> str | None:
        if service.broker_error:
            return service.broker_error
        if time.time() - service.at > 3 * interval + 10:
            return f"status not refreshed for {time.time() - service.at:.0f} s"
        return None

    page = PAGE.read_bytes()

    async def index(_: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def status(request: web.Request) -> web.Response:
        who = guard.check(request.headers, "status:read", path=request.path, remote=request.remote)
        if isinstance(who, Refusal):
            return refused(who)
        return web.json_response(service.snapshot(), dumps=_dumps)

    async def metrics(_: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return web.Response(body=telemetry.metrics_text(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "tokens_file_error": guard.error})

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/api/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", telemetry.readyz_handler({"status": ready}))
    host, port = (
        args.host or settings.status_host,
        args.port if args.port is not None else settings.status_port,
    )
    log.info("status_listening", host=host, port=port, integrations=sorted(service.integrations))
    try:
        web.run_app(
            app,
            host=host,
            port=port,
            ssl_context=runtime.server_tls(settings, "status"),
            print=None,
            shutdown_timeout=5,
        )
    finally:
        stop.set()
        service.close()
    return runtime.EXIT_OK


def _dumps(document: Any) -> str:
    import json

    return json.dumps(document, default=str)


def register(sub: Any) -> None:
    group = runtime.command(sub, "status", SUMMARY, show, DESCRIPTION)
    group.usage = "itsmctl status [-h] [--scrape NAME=URL] [-o {text,json}] [serve [options]]"
    group.add_argument(
        "--scrape",
        action="append",
        metavar="NAME=URL",
        help="a process to watch (repeatable), besides ITSM_STATUS_SCRAPE",
    )
    runtime.add_output(group)
    acts = group.add_subparsers(dest="action", required=False, metavar="ACTION")
    p = runtime.action(
        acts,
        "status",
        "serve",
        "serve the live status page, /api/status, /metrics (lag), /healthz and /readyz",
        serve,
    )
    p.set_defaults(long_running=True)
    p.add_argument("--scrape", action="append", metavar="NAME=URL", help="a process to watch (repeatable)")
    p.add_argument("--host", help="address to listen on (default ITSM_STATUS_HOST, 127.0.0.1)")
    p.add_argument("--port", type=runtime.int_between(0, 65535), help="port (default ITSM_STATUS_PORT, 9470)")
    p.add_argument(
        "--interval", type=float, help="seconds between refreshes (default ITSM_STATUS_INTERVAL_SECONDS, 5)"
    )
