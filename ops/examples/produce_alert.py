"""Publish canonical Alerts straight to alerts.raw as Avro, as any producer may (no gateway needed).

    .venv/bin/python -m ops.examples.produce_alert --bootstrap 127.0.0.1:9092 \\
        --fingerprint disk-db-1 --name DiskFull --severity critical --label instance=db-1:9100

On a secured broker (SASL_SSL, SCRAM-SHA-512) add your principal, its password file and the CA:
    --username monitoring --password-file /etc/itsm/kafka-monitoring.password --ca-file ca.pem

What a producer must do (and this example does):
  * encode with the canonical schema: Avro single-object encoding (C3 01 + fingerprint + body)
    from schemas/avro/Alert.avsc, or the Confluent wire format with a schema registry;
  * key each record by the alert's fingerprint, with the Java-compatible murmur2 partitioner,
    so every notification of one alert lands on one partition (the dedup state lives there);
  * wait for the broker's acknowledgement (acks=all) before calling the alert delivered.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from confluent_kafka import Producer

from streams.core.models import Alert, AlertSource, AlertStatus
from streams.core.serde import AvroSerde
from streams.core.topics import ALERTS_RAW


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--topic-prefix", default="")
    p.add_argument("--username", help="SCRAM-SHA-512 principal on a secured broker (SASL_SSL)")
    p.add_argument("--password-file", help="a file holding its password (never the command line)")
    p.add_argument("--ca-file", help="CA bundle the broker's certificate is checked against")
    p.add_argument("--fingerprint", required=True, help="stable identity of the alert (the Kafka key)")
    p.add_argument("--name", required=True, help="alert name, e.g. DiskFull")
    p.add_argument("--status", choices=["FIRING", "RESOLVED"], default="FIRING")
    p.add_argument("--severity", default="warning")
    p.add_argument("--summary", default="")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    labels = {"alertname": args.name}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--label {item!r}: expected KEY=VALUE")
        labels[key] = value
    now = datetime.now(UTC)
    alert = Alert(
        fingerprint=args.fingerprint,
        source=AlertSource.CANONICAL,
        status=AlertStatus(args.status),
        name=args.name,
        severity=args.severity,
        summary=args.summary or args.name,
        labels=labels,
        starts_at=now,
        ends_at=now if args.status == "RESOLVED" else None,
        received_at=now,
    )
    topic = args.topic_prefix + ALERTS_RAW
    config = {
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "partitioner": "murmur2_random",
    }
    if args.username:
        if not args.password_file:
            p.error("--username needs --password-file")
        try:
            password = open(args.password_file, encoding="utf-8").read().strip()
        except OSError as exc:
            p.error(f"cannot read {args.password_file}: {exc.strerror}")
        config.update(
            {
                "security.protocol": "SASL_SSL",
                "sasl.mechanisms": "SCRAM-SHA-512",
                "sasl.username": args.username,
                "sasl.password": password,
            }
        )
        if args.ca_file:
            config["ssl.ca.location"] = args.ca_file
    producer = Producer(config)
    errors: list[str] = []
    producer.produce(
        topic,
        key=alert.fingerprint.encode(),
        value=AvroSerde().encode(alert, topic),
        on_delivery=lambda err, msg: (
            errors.append(str(err))
            if err
            else print(f"delivered {alert.fingerprint} to {msg.topic()}[{msg.partition()}]@{msg.offset()}")
        ),
    )
    if producer.flush(30) or errors:
        print(f"not delivered: {errors or 'timeout'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
