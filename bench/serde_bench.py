"""Serde throughput, per-record latency and memory, beside baselines measured in the same run.

    .venv/bin/python -m bench.serde_bench [--records N]

Baselines: plain fastavro schemaless encode/decode of the same dicts (what the framing and the
pydantic validation add on top), and json.dumps/loads (what a JSON pipeline would cost).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from bench.measure import measure, table
from streams.core.models import Alert
from streams.core.serde import AvroSerde
from tests.examples import alert


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=20000)
    n = parser.parse_args().records
    serde = AvroSerde()
    schema = serde.store.for_record(Alert).parsed
    alerts = [
        alert(f"fp{i:08d}", labels={"alertname": "HighCPU", "instance": f"web-{i}:9100", "job": "node"})
        for i in range(n)
    ]
    dicts = [a.to_avro() for a in alerts]
    encoded = [serde.encode(a) for a in alerts]
    bodies = [e[10:] for e in encoded]
    jsons = [a.model_dump_json().encode() for a in alerts]

    def fast_encode(d: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        schemaless_writer(buf, schema, d)
        return buf.getvalue()

    rows = [
        measure("encode  AvroSerde (single-object)", alerts, serde.encode),
        measure("encode  baseline fastavro schemaless", dicts, fast_encode),
        measure("encode  baseline json.dumps", dicts, lambda d: json.dumps(d, default=str).encode()),
        measure("decode  AvroSerde -> validated Alert", encoded, lambda b: serde.decode(b, Alert)),
        measure(
            "decode  baseline fastavro schemaless",
            bodies,
            lambda b: schemaless_reader(io.BytesIO(b), schema, schema),
        ),
        measure("decode  baseline json.loads", jsons, json.loads),
    ]
    print(
        f"{n} Alert records; avg size: avro {statistics.mean(map(len, encoded)):.0f} B, "
        f"json {statistics.mean(map(len, jsons)):.0f} B"
    )
    print(table(rows, "records"))


if __name__ == "__main__":
    main()
