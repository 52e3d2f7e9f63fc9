"""Run itsmctl in the test's own process (no interpreter start per call), with only the ITSM_*
variables a test gives, and capture what a person would see."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from ops.cli import main

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


Itsmctl = Callable[..., Ran]


@contextmanager
def logging_kept() -> Iterator[None]:
    """structlog's configuration and the root logger's handlers and level as they were before,
    whatever itsmctl configured in between (a one-shot command: warnings on stderr; a
    long-running one run with --once: its JSON logs)."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


def runner(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, base: dict[str, str] | None = None
) -> Itsmctl:
    """itsmctl(*argv, **env) -> Ran, as `itsmctl argv` run from the checkout with env's ITSM_* only
    (over base: how the session broker is reached)."""

    def itsmctl(*argv: str, **env: str) -> Ran:
        for name in [n for n in os.environ if n.startswith("ITSM_")]:
            monkeypatch.delenv(name)
        for name, value in {**(base or {}), **env}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(ROOT)
        capsys.readouterr()
        # A command that configures logging must not leave its configuration to what follows.
        with logging_kept():
            try:
                code = main(list(argv))
            except SystemExit as exc:  # argparse: --help, --version and usage errors
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    return itsmctl
