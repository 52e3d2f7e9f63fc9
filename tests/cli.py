"""Run itsmctl in the test's own process (no interpreter start per call), with only the ITSM_*
variables a test gives, and capture what a person would see."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
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
        # A command that configures logging (a long-running one, run with --once) must not leave
        # its configuration to the tests after it.
        saved = structlog.get_config()
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse: --help, --version and usage errors
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            structlog.configure(**saved)
            root.handlers[:] = handlers
            root.setLevel(level)
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    return itsmctl
