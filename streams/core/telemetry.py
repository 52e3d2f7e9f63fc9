"""Logs, metrics and traces: structlog JSON, prometheus-client metrics, W3C trace context in headers."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from http.server import ThreadingHTTPServer
from typing import Any

import structlog
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest

from streams.core.dlq import Headers
from streams.core.redact import redact

# Metric names live here and nowhere else: itsm_pipeline_<noun>_<unit>.
RECORDS_IN = Counter("itsm_pipeline_records_in_total", "Records a stage consumed.", ["stage"])
RECORDS_OUT = Counter(
    "itsm_pipeline_records_out_total",
    "Records a stage finished, by outcome (emitted | suppressed | deduplicated).",
    ["stage", "outcome"],
)
DEAD_LETTERS = Counter(
    "itsm_pipeline_dead_letters_total",
    "Records dead-lettered, by stage and error class.",
    ["stage", "error_class"],
)
DEAD_LETTER_WRITE_FAILURES = Counter(
    "itsm_pipeline_dead_letter_write_failures_total", "Dead-letter writes the broker refused.", ["stage"]
)
DELIVERY_SKIPS = Counter(
    "itsm_pipeline_delivery_skips_total",
    "Records the worker's delivery cursor did not process when they arrived, by reason: not_owned "
    "(another member owns the partition), redelivered (processed already), sought_back (arrived "
    "ahead of the partition's position; sought back and processed in order); stalled counts partitions "
    "sought back because their position did not move while records waited; gap_confirmed counts "
    "gaps the broker confirmed empty (compaction, transaction markers), whose next record was processed.",
    ["reason"],
)
WEBHOOK_REQUESTS = Counter(
    "itsm_pipeline_webhook_requests_total",
    "Webhook requests at the ingest gateway, by answer.",
    ["source", "outcome"],
)
WEBHOOK_ALERTS = Counter(
    "itsm_pipeline_webhook_alerts_total", "Alerts published by the ingest gateway.", ["source"]
)
STAGE_SECONDS = Histogram(
    "itsm_pipeline_stage_seconds",
    "Time spent in one stage per record (one record in 16 is timed, and every traced one).",
    ["stage"],
    buckets=(0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1),
)
UNMAPPED_VALUES = Counter(
    "itsm_pipeline_unmapped_values_total",
    "Values a rule file did not map, which took the declared default.",
    ["rule", "source"],
)
ALERTS_UNKNOWN_CI = Counter(
    "itsm_pipeline_alerts_unknown_ci_total", "Alerts that matched no CMDB configuration item.", ["source"]
)
CORRELATIONS = Counter(
    "itsm_pipeline_correlations_total",
    "CI correlation decisions, by the rule that decided.",
    ["rule", "decision"],
)
FLAPS = Counter("itsm_pipeline_flaps_total", "Alerts that fired again inside the stable period.", ["source"])
HOLDS = Counter(
    "itsm_pipeline_holds_total",
    "New alerts held before their incident opened (lifecycle.toml open_after_*), by what happened: "
    "held (a notification inside the hold), opened (the hold was over), ended_quietly (resolved inside it).",
    ["outcome"],
)
TEMPLATE_ERRORS = Counter(
    "itsm_pipeline_template_errors_total",
    "Incident templates (templates.toml) that failed to render: the alert was dead-lettered, or on "
    "an open the timer made (a window or hold ended) the default text was used.",
    ["target"],
)
LATE_PARENTS = Counter(
    "itsm_pipeline_late_parent_gathered_total",
    "Open incidents of dependent CIs a parent incident gathered when it opened after them, by the "
    "correlation.toml late_parent policy that acted (link or resolve).",
    ["policy"],
)
INCIDENT_CAUSES = Counter(
    "itsm_pipeline_incident_causes_total",
    "Incidents opened that name a deployment finished within change_lookback as probable cause.",
)
ROUTES = Counter(
    "itsm_pipeline_routes_total",
    "Incidents opened per route of ops/rules/routes.toml that matched (root: no route matched).",
    ["route"],
)
FLAPS_DAMPED = Counter(
    "itsm_pipeline_flaps_damped_total",
    "Flaps that wrote no work note because flap damping held them (lifecycle.toml flap_threshold).",
    ["source"],
)
CORRELATION_VERDICTS = Counter(
    "itsm_pipeline_correlation_verdicts_total",
    "Service desk verdicts on sampled correlation decisions.",
    ["rule", "verdict"],
)
VIEW_SKIPPED = Counter(
    "itsm_pipeline_view_records_skipped_total",
    "Records a global view could not decode and skipped (the topic's guard agent dead-letters them).",
    ["topic"],
)
ALERT_OUTCOMES = Counter(
    "itsm_pipeline_alert_outcomes_total",
    "Every alerts.raw record by how it was accounted for: in = emitted + absorbed + deduplicated + "
    "suppressed + inhibited + stale + held + dead_lettered.",
    ["outcome"],
)
CORRELATION_PRECISION = Gauge(
    "itsm_pipeline_correlation_precision_ratio",
    "Share of reviewed correlation decisions judged correct, per rule (this gateway's verdicts).",
    ["rule"],
)
SINK_THROTTLED_SECONDS = Counter(
    "itsm_pipeline_sink_throttled_seconds_total",
    "Time sink requests waited for the client-side rate limiter.",
    ["target"],
)
PERSON_RESOLUTIONS = Counter(
    "itsm_pipeline_person_resolutions_total",
    "Incidents a person resolved in the ITSM while their alert still fired, by what the worker did: "
    "held (within reopen_period), reopened, new (the lifecycle rules' person_resolved policy).",
    ["action"],
)
SINK_LOOKUPS = Counter(
    "itsm_pipeline_sink_lookups_total",
    "How sinks found existing records: by a known id or by a search.",
    ["target", "via"],
)
SINK_REQUESTS = Counter(
    "itsm_pipeline_sink_requests_total",
    "HTTP requests made by sinks, by status class.",
    ["target", "status_class"],
)
SINK_COMMANDS = Counter(
    "itsm_pipeline_sink_commands_total", "Commands a sink finished, by outcome.", ["target", "outcome"]
)
SINK_REQUEST_SECONDS = Histogram(
    "itsm_pipeline_sink_request_seconds", "Latency of sink HTTP requests.", ["target"]
)
RULES_VERSION = Gauge(
    "itsm_pipeline_rules_version",
    "The version of each rule file this process runs (ops/rules/*.toml, or the current set of the "
    "rules.sets topic).",
    ["file"],
)
RULES_SET = Gauge(
    "itsm_pipeline_rules_set_info",
    "1 for the rule set this process runs (set id), 0 for sets it ran before.",
    ["set_id"],
)
RULE_SWITCHES = Counter(
    "itsm_pipeline_rule_switches_total",
    "Rule sets from rules.sets this worker switched to, or refused (invalid: the running set stays).",
    ["outcome"],
)
CI_RECONCILED = Counter(
    "itsm_pipeline_ci_reconciliation_total",
    "Changed CI fields of accepted cmdb.ci.updates by how they fared against the source of the CMDB's "
    "value (ops/rules/changes.toml [[reconcile]]): won_new, won_same_source, won_newest, won_priority, "
    "won_stale, lost_older, lost_priority. Attributes are counted under their rule's pattern.",
    ["ci_class", "field", "outcome"],
)
CHANGE_INPUTS = Counter(
    "itsm_pipeline_change_inputs_total",
    "Every record of cmdb.ci.updates, change.requests and deploy.events by how it was accounted for: "
    "in = accepted + forwarded + linked + unlinked + not_required + rejected + dead_lettered, "
    "with parked records counted again when they go on (unparked) or time out (dead_lettered).",
    ["input", "outcome"],
)
PARKED_RECORDS = Gauge(
    "itsm_pipeline_parked_records",
    "Change requests and deployments waiting for a CI to arrive, by partition.",
    ["partition"],
)
DEPLOY_OUTCOMES = Counter(
    "itsm_pipeline_deploy_outcomes_total",
    "Finished deployments linked to a change, by service and outcome (succeeded | failed | rolled_back).",
    ["service", "outcome"],
)
DEPLOY_DURATION = Histogram(
    "itsm_pipeline_deploy_duration_seconds",
    "Duration of finished deployments linked to a change, by service.",
    ["service"],
    buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)
GATE_DECISIONS = Counter(
    "itsm_pipeline_gate_decisions_total",
    "Change gate answers, by decision (allow | deny | bypass | pending).",
    ["decision"],
)
GATE_SECONDS = Histogram(
    "itsm_pipeline_gate_decision_seconds",
    "Time from a gate request to its answer, including the audit record's broker acknowledgement.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ITSM_CHANGES_UNREADABLE = Counter(
    "itsm_pipeline_itsm_changes_unreadable_total",
    "Change records the sync could not read (malformed in the ITSM), skipped with a warning naming them.",
    ["target"],
)
ITSM_CHANGES_SYNCED = Counter(
    "itsm_pipeline_itsm_changes_synced_total", "Change records read from the ITSM and published.", ["target"]
)

EVENT_RULES = Counter(
    "itsm_pipeline_event_rules_total",
    "Alerts an event rule of events.toml matched, by rule and what it did (dropped | changed).",
    ["rule", "action"],
)
AUTH_FAILURES = Counter(
    "itsm_pipeline_auth_failures_total",
    "Refused authentication or authorization, by the component that saw it and why: "
    "missing_token, unknown_token, missing_scope or signature (a caller of our APIs), itsm_401, "
    "itsm_403 or oauth_token (the ITSM refused us).",
    ["component", "reason"],
)
VIEW_UP = Gauge(
    "itsm_pipeline_view_up",
    "1 while a global view follows its topic and has caught up, 0 while catching up or after it failed.",
    ["topic"],
)
LATENCY = Histogram(
    "itsm_pipeline_latency_seconds",
    "Time between the hops of an alert on its way to the ITSM, by hop: source_to_gateway (the alert's "
    "start to its arrival at the gateway), ingest_to_command (alerts.raw record to its incident "
    "command, in the worker), command_to_itsm (command record to the ITSM's answer) and "
    "ingest_to_itsm (alerts.raw record to the ITSM's answer: end to end); integration names the "
    "source, the worker or the sink target, action the incident command's action at a sink.",
    ["hop", "integration", "action"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)

TRACE_HEADERS = ("traceparent", "tracestate")
# The epoch milliseconds at which an alert entered the pipeline (its alerts.raw record), carried
# onto every record made from it, so a sink can tell the whole way's latency.
INGESTED_AT = "itsm.ingested_at"
CARRIED_HEADERS = (*TRACE_HEADERS, INGESTED_AT)


def ingested_at(headers: Iterable[tuple[str, Any]] | None) -> float | None:
    """The ingest time (epoch seconds) a record carries, or None."""
    for key, value in headers or ():
        if key == INGESTED_AT and value is not None:
            try:
                return int(value.decode() if isinstance(value, bytes | bytearray) else value) / 1000.0
            except ValueError:
                return None
    return None


LEVELS = logging.getLevelNamesMapping()
# Libraries whose info lines are per request or per fetch: warnings and up unless asked for.
QUIET_LIBRARIES = ("faust", "mode", "aiokafka", "aiohttp.access", "httpx", "httpcore")
# Escape sequences (colours, cursor moves) never reach a log line.
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def parse_levels(text: str) -> dict[str, int]:
    """ITSM_LOG_LEVELS: `component=level` pairs, comma-separated (e.g. `sink=debug,aiokafka=warning`);
    ValueError names a bad pair."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, level = part.partition("=")
        if not sep or not name.strip() or level.strip().upper() not in LEVELS:
            raise ValueError(f"log level {part!r} is not component=debug|info|warning|error")
        out[name.strip()] = LEVELS[level.strip().upper()]
    return out


def _threshold(component: str, levels: dict[str, int], default: int) -> int:
    """The level of the longest configured prefix of component (`sink` covers `sink.servicenow`)."""
    best, found = -1, default
    for name, level in levels.items():
        if (component == name or component.startswith(name + ".")) and len(name) > best:
            best, found = len(name), level
    return found


class RotatingStream:
    """A log file rotated at UTC midnight (FILE.YYYY-MM-DD), keeping `days` old files (the
    standard library's TimedRotatingFileHandler does the rotation and the deleting), written
    line by line by structlog and the logging module alike."""

    def __init__(self, path: str, days: int) -> None:
        import logging.handlers

        self._handler = logging.handlers.TimedRotatingFileHandler(
            path, when="midnight", backupCount=days, utc=True, encoding="utf-8"
        )
        self._lock = threading.Lock()
        self._probe = logging.makeLogRecord({})

    def write(self, text: str) -> int:
        with self._lock:
            if self._handler.shouldRollover(self._probe):
                self._handler.doRollover()
            assert self._handler.stream is not None
            return self._handler.stream.write(text)

    def flush(self) -> None:
        with self._lock:
            self._handler.flush()


def configure_logging(
    level: str = "info", stream: Any = None, levels: str = "", file: str = "", retention_days: int = 14
) -> None:
    """JSON logs on stderr (or stream, or a daily-rotated file keeping retention_days of them), one
    object per line, with ISO UTC timestamps: our own (structlog) and every library's (the logging
    module: Faust, aiokafka, librdkafka's lines), never a terminal escape code. levels sets a level
    per component (parse_levels)."""
    if file:
        stream = RotatingStream(file, retention_days)
    default = LEVELS[level.upper()]
    per = parse_levels(levels)
    lowest = min([default, *per.values()])

    def by_component(_logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        component = str(event.get("component", ""))
        if LEVELS.get(method.upper(), 0) < _threshold(component, per, default):
            raise structlog.DropEvent
        return event

    def clean(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if isinstance(value, str):
                if "\x1b" in value:
                    value = _ESCAPES.sub("", value)
                event[key] = redact(value)  # a secret a library's text carries (streams/core/redact.py)
        return event

    renderer: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        clean,
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            by_component,
            *renderer,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lowest),
        # Without a stream, whatever sys.stderr is when a line is written (not when configured).
        logger_factory=(
            structlog.PrintLoggerFactory(stream) if stream else lambda *_: structlog.PrintLogger(sys.stderr)
        ),
        cache_logger_on_first_use=False,
    )

    # The logging module's records (libraries) rendered the same way, component = logger name.
    def component_of(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        record = event.get("_record")
        if record is not None:
            event.setdefault("component", record.name)
        return event

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[component_of, *renderer],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = _StderrHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    previous = _logging_state.get("handler")
    if previous is not None:
        root.removeHandler(previous)  # configured again (tests): one JSON handler, others kept
    root.addHandler(handler)
    root.setLevel(default)
    for name in QUIET_LIBRARIES:
        # The stream libraries' info lines (every fetch, every rebalance step) only when asked.
        logging.getLogger(name).setLevel(max(default, logging.WARNING))
    for name, lvl in per.items():
        logging.getLogger(name).setLevel(lvl)
    _logging_state.update(handler=handler)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests swap it), or to a given stream."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._fixed = stream

    def emit(self, record: logging.LogRecord) -> None:
        if self._fixed is None:
            self.stream = sys.stderr
        super().emit(record)


_logging_state: dict[str, logging.Handler] = {}


def faust_logging_config() -> dict[str, Any]:
    """For faust.Worker(logging_config=...): keep the JSON handler configure_logging installed
    instead of mode's own console format (mode applies it with logging.config.dictConfig)."""
    handler = _logging_state.get("handler")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"json": {"()": lambda: handler}} if handler else {},
        "root": {"handlers": ["json"] if handler else [], "level": logging.getLogger().level},
    }


def get_logger(name: str, **bound: Any) -> Any:
    """A structlog logger with the component name (and anything else) bound.

    Lazy: a module-level logger made at import still renders with the configuration that
    configure_logging() installs later.
    """
    return structlog.get_logger(component=name, **bound)


def metrics_text() -> bytes:
    """This process's metrics in the text format; with PROMETHEUS_MULTIPROC_DIR set (the gateway's
    processes sharing a port), every process's, summed, whichever process is asked."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import CollectorRegistry, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


Check = Callable[[], str | None]  # None: fine; otherwise what is wrong, in one line


def readiness(checks: dict[str, Check]) -> tuple[bool, dict[str, str]]:
    """Run every check: ready when none names a problem; each check's answer ("ok" or the problem)."""
    answers: dict[str, str] = {}
    for name, check in checks.items():
        try:
            problem = check()
        except Exception as exc:  # noqa: BLE001 - a check that fails is a problem to report, not a crash
            problem = f"{type(exc).__name__}: {exc}"
        answers[name] = problem or "ok"
    return all(a == "ok" for a in answers.values()), answers


def readyz_handler(checks: dict[str, Check]) -> Callable[[Any], Any]:
    """An aiohttp GET /readyz handler for an HTTP service of ours (checks run off the event loop)."""
    import asyncio

    from aiohttp import web

    async def readyz(_request: Any) -> web.Response:
        ready, answers = await asyncio.to_thread(readiness, checks)
        return web.json_response({"ready": ready, "checks": answers}, status=200 if ready else 503)

    return readyz


class OpsHTTPServer(ThreadingHTTPServer):
    """The /metrics, /healthz and /readyz server. A request that fails is one JSON log line, not
    socketserver's traceback on stderr between dashed lines (the log stays one JSON object per
    line); a client that left before its answer was written (a scraper's timeout) is expected."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        log = get_logger("ops-http")
        if isinstance(exc, ConnectionError):  # BrokenPipeError, ConnectionResetError, ...
            log.info("ops_http_client_gone", client=str(client_address[0]), error=type(exc).__name__)
        else:
            log.error("ops_http_request_failed", client=str(client_address[0]), error=repr(exc))


def start_metrics_server(host: str, port: int, checks: dict[str, Check] | None = None) -> int:
    """Serve /metrics, /healthz (alive) and /readyz (every check fine: 200, else 503 naming the
    problems, as JSON) on host:port in a daemon thread; returns the bound port (0 picks one)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler

    from prometheus_client import CONTENT_TYPE_LATEST

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(200, b"ok\n", "text/plain")
            elif path == "/readyz":
                ready, answers = readiness(checks or {})
                body = json.dumps({"ready": ready, "checks": answers}).encode()
                self._send(200 if ready else 503, body, "application/json")
            elif path in ("/metrics", "/"):
                self._send(200, metrics_text(), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # scrapes and probes are not log events

    httpd = OpsHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="ops-http", daemon=True).start()
    return int(httpd.server_address[1])


_tracing_ready = False
TRACE_EXPORT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def otlp_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Spans leave the process only when OTLP is configured through the standard OTEL_* variables:
    an endpoint, or OTEL_TRACES_EXPORTER=otlp; OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none
    turn it off."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporter == "none":
        return False
    return exporter == "otlp" or any(env.get(name) for name in TRACE_EXPORT_VARIABLES)


def configure_tracing(service_name: str) -> None:
    """Install an SDK tracer provider once, so spans carry real ids through Kafka headers; with OTLP
    configured (OTEL_EXPORTER_OTLP_ENDPOINT, ...), spans are exported in batches over OTLP/HTTP.
    OTEL_SERVICE_NAME overrides the component's name."""
    global _tracing_ready
    if _tracing_ready:
        return
    from opentelemetry.sdk.resources import Resource

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    exporting = otlp_enabled()
    # Not exporting: spans still carry ids (trace context goes on through every hop), but none is
    # sampled, so nothing records attributes and events nobody reads (about 70 us per record).
    sampler = None if exporting else ALWAYS_OFF
    provider = TracerProvider(resource=Resource.create({"service.name": name}), sampler=sampler)
    if exporting:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # Endpoint, headers, timeout, compression and TLS come from the OTEL_EXPORTER_OTLP_* variables.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        get_logger("telemetry").info("traces_exported", service=name, protocol="otlp/http")
    trace.set_tracer_provider(provider)
    _tracing_ready = True


def tracing_middleware(name: str) -> Any:
    """An aiohttp middleware: one server span per request (continuing a W3C traceparent the caller
    sent), named by its route, with the answer's status."""
    from aiohttp import web

    tracer_ = trace.get_tracer(name)

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> Any:
        route = request.match_info.route.resource
        path = route.canonical if route is not None else "unmatched"
        context = propagate.extract(dict(request.headers))
        with tracer_.start_as_current_span(
            f"{request.method} {path}", context=context, kind=trace.SpanKind.SERVER
        ) as span:
            span.set_attribute("http.request.method", request.method)
            span.set_attribute("http.route", path)
            response = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(trace.StatusCode.ERROR)
            return response

    return middleware


_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def labelled(metric: Any, *values: str) -> Any:
    """metric.labels(*values), resolved once per label set: `.labels()` takes a lock and builds
    its key on every call (about 2 us, a few per record in the worker's stages). Label values
    are bounded by design (a rule's, a source's or a route's name), and so is this cache."""
    key = (metric, values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


def current_span() -> trace.Span:
    return trace.get_current_span()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers(headers: Headers | None = None) -> Headers:
    """Headers plus the current span's W3C trace context."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    out: Headers = [(k, v) for k, v in (headers or []) if k not in TRACE_HEADERS]
    out.extend((k, v.encode()) for k, v in carrier.items())
    return out


def extract_context(headers: Iterable[tuple[str, str | bytes | None]] | Sequence[Any] | None) -> Any:
    """The trace context carried in Kafka headers (an empty context if none)."""
    carrier: dict[str, str] = {}
    for key, value in headers or ():
        if key in TRACE_HEADERS and value is not None:
            carrier[key] = value.decode() if isinstance(value, bytes | bytearray) else str(value)
    return propagate.extract(carrier)
