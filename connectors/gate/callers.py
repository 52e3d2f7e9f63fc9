"""Who may call the change gate: callers by the SHA-256 of their bearer token, and whether each
may bypass the gate in an emergency. Only hashes are stored; a token is shown once, when made.
A caller may list several hashes, so a token is rotated without downtime: add the new hash, move
the pipeline to the new token, remove the old hash (the gate rereads the file when it changes)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class CallersError(ValueError):
    """The callers file is missing or invalid; the message names the file and the problem."""


@dataclass(frozen=True)
class Caller:
    name: str
    token_sha256: tuple[str, ...]  # several during a rotation: old and new tokens both work
    bypass: bool = False


def token_hash(token: str) -> str:
    # Any text a header may carry hashes (and then simply matches no caller): never an exception.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Callers:
    """The callers file, loaded; `identify` compares hashes in constant time."""

    def __init__(self, callers: list[Caller]) -> None:
        self.callers = callers

    @classmethod
    def load(cls, path: Path) -> Callers:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CallersError(
                f"gate callers file {path} does not exist (make one with `itsmctl gate token`)"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise CallersError(f"{path}: not valid TOML: {exc}") from None
        callers = []
        for name, entry in (data.get("callers") or {}).items():
            raw = entry.get("token_sha256", "")
            digests = tuple(str(d) for d in (raw if isinstance(raw, list) else [raw]))
            if (
                not NAME.match(name)
                or not digests
                or not all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests)
            ):
                raise CallersError(
                    f"{path}: caller {name!r} needs a plain name and token_sha256 (64 hex, or a list of them)"
                )
            callers.append(Caller(name, digests, bool(entry.get("bypass", False))))
        if not callers:
            raise CallersError(f"{path}: no [callers.<name>] entries; nobody could call the gate")
        return cls(callers)

    def identify(self, token: str | None) -> Caller | None:
        if not token:
            return None
        digest = token_hash(token)
        found = None
        for caller in self.callers:
            for known in caller.token_sha256:
                if hmac.compare_digest(known, digest):
                    found = caller
        return found

    def bypassers(self) -> frozenset[str]:
        return frozenset(c.name for c in self.callers if c.bypass)


class CallersFile:
    """The callers file, reread when it changes on disk; an invalid new version keeps the last
    good one (and says so in the log) rather than locking every pipeline out."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current = Callers.load(path)
        self.stamp = self._stamp()
        self.error: str | None = None

    def _stamp(self) -> tuple[int, int]:
        st = self.path.stat()
        return st.st_mtime_ns, st.st_size

    def get(self) -> Callers:
        try:
            stamp = self._stamp()
            if stamp != self.stamp:
                self.stamp = stamp
                self.current, self.error = Callers.load(self.path), None
        except (OSError, CallersError) as exc:
            self.error = str(exc)
        return self.current


def add_caller(path: Path, name: str, bypass: bool) -> str:
    """Make a token for a new caller, store its hash in the callers file, return the token."""
    if not NAME.match(name):
        raise CallersError(f"caller name {name!r}: letters, digits, '.', '_' and '-' only")
    existing = Callers.load(path).callers if path.exists() else []
    if any(c.name == name for c in existing):
        raise CallersError(f"{path} has a caller {name!r} already (remove it first to rotate its token)")
    token = secrets.token_urlsafe(32)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(
            f'\n[callers.{name}]\ntoken_sha256 = "{token_hash(token)}"\nbypass = {str(bypass).lower()}\n'
        )
    path.chmod(0o600)
    return token
