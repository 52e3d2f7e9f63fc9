"""Preflight checks of an ITSM target: what `itsmctl itsm check TARGET` runs and the sink runs at
start. Each check yields Findings; a target that cannot be reached at all raises Unreachable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx

from connectors.tls import tls

# Clock skew beyond which timestamps the pipeline compares with the ITSM's (sync cursors, time to
# restore) mislead, and beyond which signed tokens start to fail.
SKEW_WARN_SECONDS = 30.0
SKEW_PROBLEM_SECONDS = 300.0


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    PROBLEM = "problem"


@dataclass(frozen=True)
class Finding:
    """One checked thing: what was checked, how it stands, and the fix when it is not ok."""

    check: str
    level: Level
    detail: str
    fix: str = ""


class Unreachable(Exception):
    """The target did not answer at all (no connection, DNS, timeout)."""


def request(http: httpx.Client, method: str, url: str, **kwargs: object) -> httpx.Response:
    """One request; a transport failure that is not about TLS is Unreachable."""
    try:
        return http.request(method, url, **kwargs)  # type: ignore[arg-type]
    except httpx.ConnectError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSL" in str(exc):
            raise TlsFailure(str(exc)) from exc
        raise Unreachable(f"cannot connect to {http.base_url}: {exc}") from exc
    except httpx.TransportError as exc:
        raise Unreachable(f"cannot reach {http.base_url}: {exc}") from exc


class TlsFailure(Exception):
    """The server answered, but its certificate did not verify."""


def run(
    base_url: str,
    auth: httpx.Auth | tuple[str, str],
    verify: bool | str,
    timeout: float,
    tls_setting: str,
    checks: Callable[[httpx.Client], list[Finding]],
) -> list[Finding]:
    """The checks with a client of this target; a certificate that does not verify is the one
    finding (named with tls_setting, the setting that fixes it)."""
    with httpx.Client(
        base_url=base_url,
        auth=auth,
        verify=tls(verify),
        timeout=timeout,
        headers={"Accept": "application/json"},
    ) as http:
        try:
            return checks(http)
        except TlsFailure as exc:
            return [tls_finding(exc, tls_setting)]


def body(resp: httpx.Response) -> dict[str, Any]:
    """A JSON object answer, or {} for anything else."""
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def tls_finding(exc: TlsFailure, setting: str) -> Finding:
    return Finding(
        "tls",
        Level.PROBLEM,
        f"the server's certificate does not verify: {str(exc)[:200]}",
        f"set {setting} to the CA bundle that signed it (never false)",
    )


def transport(base_url: str) -> Finding:
    """https verified, or plain http only to this machine (credentials would travel in clear)."""
    parts = urlsplit(base_url)
    if parts.scheme == "https":
        return Finding("tls", Level.OK, "https, certificate verified")
    host = parts.hostname or ""
    if host in ("localhost", "::1") or host.startswith("127."):
        return Finding("tls", Level.OK, "plain http to this machine (development only)")
    return Finding(
        "tls",
        Level.PROBLEM,
        f"plain http to {host}: the credentials and the incidents would travel in clear",
        "use the ITSM's https URL",
    )


def clock_skew(resp: httpx.Response, now: datetime | None = None) -> Finding:
    """The server's Date header against this machine's clock."""
    header = resp.headers.get("Date")
    if not header:
        return Finding("clock", Level.WARN, "the server sent no Date header: skew unknown")
    try:
        theirs = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return Finding("clock", Level.WARN, f"unreadable Date header {header!r}: skew unknown")
    skew = ((now or datetime.now(UTC)) - theirs).total_seconds()
    text = f"this machine's clock is {abs(skew):.0f}s {'ahead of' if skew > 0 else 'behind'} the server's"
    if abs(skew) >= SKEW_PROBLEM_SECONDS:
        return Finding(
            "clock", Level.PROBLEM, text, "synchronise both clocks with NTP (chrony, systemd-timesyncd)"
        )
    if abs(skew) >= SKEW_WARN_SECONDS:
        return Finding("clock", Level.WARN, text, "synchronise both clocks with NTP")
    return Finding("clock", Level.OK, f"clock skew {abs(skew):.0f}s (Date header, 1s resolution)")


def worst(findings: list[Finding]) -> Level:
    levels = {f.level for f in findings}
    return Level.PROBLEM if Level.PROBLEM in levels else Level.WARN if Level.WARN in levels else Level.OK
