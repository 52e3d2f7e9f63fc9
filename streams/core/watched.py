"""A file whose parsed content follows the file on disk: a rotated secret needs no restart.

`get()` re-reads the file when its modification time, size or inode changed (checked at most once
per `interval` seconds, so a hot path pays a clock read, not a stat). A new version that does not
load keeps the last good one and sets `error`: a bad edit must not lock every caller out or stop
the pipeline; the log says what is wrong, once per distinct error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from streams.core import telemetry

T = TypeVar("T")
log = telemetry.get_logger("watched")


class Watched(Generic[T]):
    """load(path) now (its error propagates: a process must not start without it), again on change."""

    def __init__(
        self,
        path: Path,
        load: Callable[[Path], T],
        *,
        errors: tuple[type[Exception], ...] = (ValueError,),
        interval: float = 0.0,
        what: str = "watched",
        describe: Callable[[T], dict[str, object]] | None = None,
    ) -> None:
        self.path = path
        self.load = load
        self.errors = errors
        self.interval = interval
        self.what = what
        self.describe = describe or (lambda _value: {})
        self.current = load(path)
        self.stamp = self._stamp()
        self.checked = time.monotonic()
        self.error: str | None = None

    def _stamp(self) -> tuple[int, int, int]:
        st = self.path.stat()
        return st.st_mtime_ns, st.st_size, st.st_ino

    def get(self, force: bool = False) -> T:
        """The current content; force checks the file now, whatever the interval."""
        if self.interval and not force:
            now = time.monotonic()
            if now - self.checked < self.interval:
                return self.current
            self.checked = now
        elif force:
            self.checked = time.monotonic()
        try:
            stamp = self._stamp()
            if stamp != self.stamp:
                self.stamp = stamp
                self.current, self.error = self.load(self.path), None
                log.info(f"{self.what}_reloaded", path=str(self.path), **self.describe(self.current))
        except (OSError, *self.errors) as exc:  # type: ignore[misc]
            if str(exc) != self.error:
                log.error(f"{self.what}_file_invalid", path=str(self.path), error=str(exc))
            self.error = str(exc)
        return self.current
