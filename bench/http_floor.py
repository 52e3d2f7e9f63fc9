"""What one Python process can reach under the gateway bench's load before any of the gateway's
own work: its floors, served as the gateway serves (aiohttp's web.run_app, one process).

    .venv/bin/python -m bench.http_floor PORT bare|work

- bare: read the body, answer 202 (aiohttp alone);
- work: also the per-alert library work every accepted webhook needs: the strict JSON parse,
  the Alertmanager webhook mapped to canonical Alerts, each Alert Avro-encoded; no Kafka, no
  authentication, no tracing, no metrics.

gateway_bench runs both beside the gateway and Alertmanager: the gap between `work` and the
gateway is the gateway's own cost (authentication, tracing, metrics, publishing and awaiting the
broker), and `work` against Alertmanager is the ceiling of the chosen stack in one process.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from aiohttp import web

from connectors.jsonbody import parse_json
from connectors.sources.alertmanager.mapping import to_alerts
from streams.core.serde import AvroSerde


def app(mode: str) -> web.Application:
    serde = AvroSerde()

    async def bare(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202)

    async def work(request: web.Request) -> web.Response:
        alerts = to_alerts(parse_json(await request.read()), datetime.now(UTC))
        encoded = [serde.encode(alert, "alerts.raw") for alert in alerts]
        return web.json_response({"accepted": len(encoded)}, status=202)

    application = web.Application()
    application.router.add_post("/v1/alerts/alertmanager", bare if mode == "bare" else work)
    return application


def main() -> None:
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode not in ("bare", "work"):
        raise SystemExit("usage: python -m bench.http_floor PORT bare|work")
    web.run_app(app(mode), host="127.0.0.1", port=port, print=None, handle_signals=True)


if __name__ == "__main__":
    main()
