"""itsmctl completion SHELL: print a shell completion script for itsmctl."""

from __future__ import annotations

import argparse
from typing import Any

from ops import runtime

SECTION = "shell"
SUMMARY = "print a shell completion script (bash, zsh, tcsh)"
SHELLS = ("bash", "zsh", "tcsh")


def run(args: argparse.Namespace) -> int:
    import shtab

    root: argparse.ArgumentParser = args.root
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            # `itsmctl --help` lists the commands grouped by hand; completion needs them listed.
            action.help = "command"
    print(shtab.complete(root, shell=args.shell))
    return runtime.EXIT_OK


def register(sub: Any, root: argparse.ArgumentParser) -> None:
    p = runtime.command(
        sub,
        "completion",
        SUMMARY,
        run,
        description="Prints a completion script for itsmctl's commands, actions and options. bash: add "
        'eval "$(itsmctl completion bash)" to ~/.bashrc; zsh: itsmctl completion zsh > '
        "~/.zfunc/_itsmctl (a directory on $fpath).",
    )
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(root=root)
