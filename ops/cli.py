"""itsmctl: run and operate the ITSM event pipeline. The entry point; the commands live in
ops/commands, one module per group."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata

from confluent_kafka import KafkaException

from ops import runtime
from ops.commands import EXTRA, GROUPS
from streams.core import telemetry
from streams.core.kafka import quiet_client_logs

CONFIGURATION = """Configuration comes from ITSM_* environment variables (see README: Configuration);
a secret can be given as a file with ITSM_<NAME>_FILE, e.g. ITSM_SERVICENOW_PASSWORD_FILE."""


def version() -> str:
    try:
        return metadata.version("itsm-pipeline")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _overview() -> str:
    sections: dict[str, list[str]] = {}
    for module in (*GROUPS, *EXTRA):
        name = module.__name__.rsplit(".", 1)[1]
        sections.setdefault(module.SECTION, []).append(f"  {name:<11} {module.SUMMARY}")
    body = "\n\n".join(f"{title}:\n" + "\n".join(lines) for title, lines in sections.items())
    return (
        f"{body}\n\n`itsmctl COMMAND --help` explains a command and its actions.\n\n{CONFIGURATION}\n\n"
        + (runtime.EXIT_CODES)
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="itsmctl",
        usage="itsmctl [-h] [--version] COMMAND [ACTION] [options]",
        description="Run and operate the ITSM event pipeline.",
        epilog=_overview(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("--version", action="version", version=f"itsmctl {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help=argparse.SUPPRESS)
    for module in GROUPS:
        module.register(sub)
    for module in EXTRA:
        module.register(sub, p)
    return p


def main(argv: list[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)  # a usage error exits 2 here
    if extra:
        # Named by the command they were given to (an option of another action is refused).
        args.leaf.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "long_running", False):
        runtime.stop_while_starting(args.cmd)
    else:
        # A one-shot command reports a broker it cannot reach in one line, not librdkafka's; its
        # standard output is its answer (text or -o json), so a library's warning (a refusal the
        # broker logged, say) is a JSON line on stderr, never mixed into it. ITSM_LOG_LEVEL, when
        # given, asks for more (a value Settings refuses is reported by the command that loads it).
        quiet_client_logs()
        asked = os.environ.get("ITSM_LOG_LEVEL", "")
        telemetry.configure_logging(asked if asked in ("debug", "info", "warning", "error") else "warning")
    try:
        return int(args.func(args) or 0)
    except KafkaException as exc:
        failure = runtime.kafka_failure(exc)
        print(f"itsmctl {args.cmd}: {failure}", file=sys.stderr)
        return failure.code
    except runtime.CommandError as exc:
        print(f"itsmctl {args.cmd}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"itsmctl {args.cmd}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
