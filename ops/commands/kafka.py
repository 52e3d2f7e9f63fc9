"""itsmctl kafka: fetch, start, stop or probe the local KRaft broker."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from ops import runtime

SECTION = "run the pipeline"
SUMMARY = "fetch, start, stop or probe the local single-node KRaft broker"


def _where(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="broker data directory (default ITSM_KAFKA_DATA_DIR or .itsm/kafka)")
    p.add_argument("--port", type=int, help="client port (default ITSM_KAFKA_PORT or 9092)")
    p.add_argument("--controller-port", type=int, help="KRaft controller port (default 9093)")


def _broker(args: argparse.Namespace) -> Any:
    """The local broker; secured when --secure asks or when its store was made secured."""
    from ops.kafka import Broker
    from ops.kafka.security import BrokerSecurity

    settings = runtime.settings()
    data_dir = Path(args.data_dir or settings.kafka_data_dir).resolve()
    keys = data_dir / "security"
    security = None
    if getattr(args, "secure", False) or (keys / "broker.pem").exists():
        if not (keys / "broker.pem").exists() and (data_dir / "logs" / "meta.properties").exists():
            raise runtime.CommandError(
                f"{data_dir} holds a plain broker's store (no SCRAM administrator in it); "
                "give --secure another --data-dir"
            )
        security = BrokerSecurity.create(keys)
    return Broker(
        data_dir,
        port=args.port or settings.kafka_port,
        controller_port=args.controller_port or settings.kafka_controller_port,
        security=security,
    )


def _reported(handler: runtime.Handler) -> runtime.Handler:
    """handler with a broker failure as one line (exit 2) instead of a traceback."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from ops.kafka import BrokerError

        try:
            return handler(args)
        except BrokerError as exc:
            raise runtime.CommandError(str(exc)) from None

    return run


@_reported
def fetch(args: argparse.Namespace) -> int:
    from ops.kafka import KAFKA_VERSION, fetch_jars

    print(f"kafka {KAFKA_VERSION} jars in {fetch_jars()}")
    return runtime.EXIT_OK


@_reported
def up(args: argparse.Namespace) -> int:
    from ops.kafka import KAFKA_VERSION

    broker = _broker(args)
    pid = broker.start(wait=args.wait)
    print(f"kafka {KAFKA_VERSION} up: pid {pid}, bootstrap {broker.bootstrap}, data {broker.data_dir}")
    if broker.security is None:
        print("insecure: PLAINTEXT, no authentication, no ACLs (local development only; --secure)")
    else:
        print("secured: SASL_SSL, SCRAM-SHA-512, ACLs enforced; as its administrator:")
        for name, value in broker.env().items():
            print(f"  export {name}={value}")
        print("then: itsmctl acls user NAME --password-file FILE; itsmctl acls apply")
    return runtime.EXIT_OK


@_reported
def down(args: argparse.Namespace) -> int:
    print("kafka stopped" if _broker(args).stop() else "kafka was not running")
    return runtime.EXIT_OK


def status(args: argparse.Namespace) -> int:
    broker = _broker(args)
    pid = broker.running_pid()
    answers = pid is not None and broker.answers()
    state = "up" if answers else ("down" if pid is None else "not answering")
    if args.output == "json":
        runtime.print_json(
            {"state": state, "pid": pid, "bootstrap": broker.bootstrap, "data_dir": str(broker.data_dir)}
        )
    elif pid is None:
        print(f"kafka down (no broker for {broker.data_dir})")
    else:
        print(
            f"kafka {'up' if answers else 'NOT ANSWERING'}: pid {pid}, "
            f"bootstrap {broker.bootstrap}, data {broker.data_dir}"
        )
    return runtime.EXIT_OK if answers else runtime.EXIT_PROBLEMS


def register(sub: Any) -> None:
    group = runtime.command(
        sub,
        "kafka",
        SUMMARY,
        description="The local Kafka broker (Apache Kafka jars from Maven Central, cached in "
        "~/.cache/itsm-pipeline), bound to 127.0.0.1.",
    )
    acts = runtime.actions(group)
    runtime.action(
        acts, "kafka", "fetch", "download the broker's jars (mvn dependency:copy-dependencies)", fetch
    )
    p = runtime.action(
        acts, "kafka", "up", "format the store (once) and start the broker; wait until it answers", up
    )
    _where(p)
    p.add_argument("--wait", type=float, default=90.0, help="seconds to wait for the broker to answer")
    p.add_argument(
        "--secure",
        action="store_true",
        help="SASL_SSL with SCRAM-SHA-512, a CA and certificate of its own (DATA_DIR/security) and "
        "ACLs enforced (nothing allowed that no grant allows); a store made secured stays secured",
    )
    _where(runtime.action(acts, "kafka", "down", "stop the broker cleanly", down))
    p = runtime.action(
        acts, "kafka", "status", "probe the broker: exit 0 if it answers, 1 if down or not answering", status
    )
    _where(p)
    runtime.add_output(p)
