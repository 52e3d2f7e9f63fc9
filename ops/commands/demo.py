"""itsmctl demo: the whole pipeline on one machine with the bundled samples."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ops import runtime

SECTION = "try it"
SUMMARY = "run the whole pipeline locally and feed it the bundled sample alerts"


def run(args: argparse.Namespace) -> int:
    from ops.demo import run_demo

    return run_demo(
        once=args.once, samples=Path(args.samples) if args.samples else None, workdir=Path(args.workdir)
    )


def register(sub: Any) -> None:
    p = runtime.command(
        sub,
        "demo",
        SUMMARY,
        run,
        description="Starts Kafka, applies topics, starts the development ITSM, worker, sinks, gateway, "
        "change sync and change gate, posts the bundled Alertmanager webhooks and prints what became of "
        "each alert, then runs a deployment pipeline through the change gate (denied in a freeze, a change "
        "requested and approved, allowed, the change closed with what was deployed). Runs until Ctrl-C, "
        "or with --once exits when every step is accounted for.",
    )
    p.set_defaults(long_running=True)
    p.add_argument(
        "--once",
        action="store_true",
        help="non-interactive: exit 0 when every sample alert and gate step is accounted for, 1 otherwise",
    )
    p.add_argument(
        "--samples", help="directory of Alertmanager webhook JSON files (default: the bundled ones)"
    )
    p.add_argument(
        "--workdir",
        default=".itsm/demo",
        help="where the demo keeps its broker and ITSM data (wiped at start)",
    )
