"""itsmctl lag: consumer lag of the pipeline's consumer groups, like kafka-consumer-groups --describe."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ops import runtime

SECTION = "operate"
SUMMARY = "consumer lag per group, topic and partition (records and seconds)"
DESCRIPTION = """Consumer lag of the pipeline's consumer groups: the worker's (the app id, ITSM_APP_ID)
and each sink's (<app id>-sink-<name>). Per partition: the committed offset, the log-end offset, the
lag in records and in seconds (the age of the oldest record the group has not consumed yet).
Views and itsmctl's own readers commit nothing and are not listed.

  itsmctl lag                         every pipeline group
  itsmctl lag --group itsm-pipeline   one group (any group, by its exact id)
  itsmctl lag --watch 5               again every 5 seconds until Ctrl-C
  itsmctl lag -o json                 one JSON document for scripts

Exit 1 when a group asked for by --group does not exist."""


def _rows(reader: Any, groups: list[str]) -> tuple[list[Any], list[Any]]:
    infos = reader.groups(groups)
    return infos, reader.lag([g.group for g in infos])


def _print(infos: list[Any], rows: list[Any]) -> None:
    if not infos:
        print("no pipeline consumer group has committed anything yet (is the worker or a sink running?)")
        return
    header = ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "LAG-SECONDS")
    table = [header] + [
        (
            r.group,
            r.topic,
            str(r.partition),
            str(r.current_offset) if r.current_offset >= 0 else "-",
            str(r.log_end_offset),
            str(r.lag),
            f"{r.lag_seconds:.1f}",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for info in infos:
        total = sum(r.lag for r in rows if r.group == info.group)
        print(f"group {info.group}: {info.state}, {info.members} member(s), total lag {total}")
    print()
    for row in table:
        print(
            "  ".join(cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        )


def run(args: argparse.Namespace) -> int:
    from ops.lag import LagReader

    settings = runtime.settings(kafka=True)
    reader = LagReader(settings)
    groups = list(args.group or [])
    try:
        while True:
            infos, rows = _rows(reader, groups)
            if args.output == "json":
                runtime.print_json(
                    {
                        "groups": [vars(i) for i in infos],
                        "partitions": [r.as_dict() for r in rows],
                    }
                )
            else:
                if args.watch:
                    print(f"\n{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
                _print(infos, rows)
            unknown = [
                i.group for i in infos if i.state == "dead" and not any(r.group == i.group for r in rows)
            ]
            if not args.watch:
                if unknown:
                    raise runtime.CommandError(
                        f"consumer group {', '.join(unknown)} does not exist "
                        "(`itsmctl lag` without --group lists the pipeline's groups)",
                        runtime.EXIT_PROBLEMS,
                    )
                return runtime.EXIT_OK
            time.sleep(args.watch)
    finally:
        reader.close()


def register(sub: Any) -> None:
    p = runtime.command(sub, "lag", SUMMARY, run, DESCRIPTION)
    p.add_argument(
        "--group", action="append", metavar="G", help="only this consumer group (repeatable); any group id"
    )
    p.add_argument(
        "--watch",
        nargs="?",
        const=5.0,
        type=float,
        metavar="SECONDS",
        help="print again every SECONDS (default 5) until Ctrl-C",
    )
    runtime.add_output(p)
