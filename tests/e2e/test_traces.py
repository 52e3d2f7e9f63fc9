"""Traces leave the processes over OTLP/HTTP (the standard OTEL_* variables) and one trace runs from
the webhook to the ITSM call: gateway request -> ingest -> worker record -> sink command -> HTTP
request to the ITSM, each span the parent of the next, across three processes and two topics.
The receiver is an in-process OTLP/HTTP endpoint decoding the protobuf the exporters send."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ops.kafka import Broker
from streams.core.settings import Settings
from tests.stacks import pipeline_stack

pytestmark = pytest.mark.e2e


class Receiver:
    """Every span exported to it: (service name, span) pairs."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    for resource_spans in request.resource_spans:
                        attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                        for scope in resource_spans.scope_spans:
                            receiver.spans.extend((attrs.get("service.name", ""), s) for s in scope.spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def snapshot(self) -> list[tuple[str, Any]]:
        with self.lock:
            return list(self.spans)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def test_one_trace_runs_from_the_webhook_to_the_itsm_call(
    receiver: Receiver, kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    with pipeline_stack(kafka_broker, kafka_settings, tmp_path / "stack", extra_env=env) as stack:
        stack.start(["devitsm", "worker", "sink", "gateway"])
        alert = {
            "status": "firing",
            "labels": {"alertname": "TraceMe", "instance": "traced:9100", "severity": "critical"},
            "annotations": {"summary": "one traced alert"},
            "startsAt": datetime.now(UTC).isoformat(),
            "endsAt": "0001-01-01T00:00:00Z",
        }
        body = {"receiver": "itsm-pipeline", "status": "firing", "alerts": [alert], "version": "4"}
        assert (
            httpx.post(f"{stack.gateway_url}/v1/alerts/alertmanager", json=body, timeout=30).status_code
            == 202
        )

        def chain() -> list[tuple[str, Any]] | None:
            spans = receiver.snapshot()
            by_id = {s.span_id: (svc, s) for svc, s in spans}
            for svc, span in spans:
                if svc != "itsm-sink" or span.kind != span.SPAN_KIND_CLIENT:
                    continue
                path = [(svc, span)]
                while path[-1][1].parent_span_id in by_id:
                    path.append(by_id[path[-1][1].parent_span_id])
                if path[-1][0] == "itsm-gateway" and any(p[0] == "itsm-worker" for p in path):
                    return list(reversed(path))
            return None

        deadline = time.monotonic() + 90
        while (found := chain()) is None:
            stack.check_alive()
            assert time.monotonic() < deadline, [(svc, s.name) for svc, s in receiver.snapshot()]
            time.sleep(0.5)

    names = [(svc, span.name) for svc, span in found]
    assert names[0] == ("itsm-gateway", "POST /v1/alerts/alertmanager")
    assert ("itsm-gateway", "ingest alertmanager") in names
    assert ("itsm-worker", "alerts process") in names
    assert names[-2][0] == "itsm-sink" and names[-1][1].startswith("servicenow ")
    assert len({span.trace_id for _, span in found}) == 1  # one trace, end to end
    worker = next(span for svc, span in found if svc == "itsm-worker")
    events = [e.name for e in worker.events]
    # The engine's stages are the worker span's events, in order (a new alert passes them all).
    assert events[:2] == ["order", "dedup"] and "correlation" in events and events[-1] == "lifecycle", events
    client = found[-1][1]
    status = {a.key: a.value.int_value for a in client.attributes}.get("http.response.status_code")
    assert status in (200, 201)
