"""Secret values that no log line may carry: every process's log processors replace them.

Defense in depth: secrets are never put into log events on purpose, but a library's error text
(an HTTP client quoting a URL, a driver echoing its configuration) could carry one. Each secret
the process holds (its settings' SecretStr values, each value a secret file is reread as, field
encryption keys) is registered here, and streams/core/telemetry.py's processors replace it with
"[redacted]" in every string field of every line, ours and the libraries'.
"""

from __future__ import annotations

import threading

MIN_LENGTH = 8  # shorter values are too likely to occur by chance in ordinary text
_SECRETS: set[str] = set()
_LOCK = threading.Lock()


def never_log(value: str | None) -> None:
    """Register a secret value (values shorter than MIN_LENGTH are ignored)."""
    if value and len(value) >= MIN_LENGTH:
        with _LOCK:
            _SECRETS.add(value)


def redact(text: str) -> str:
    """text with every registered secret replaced by [redacted]."""
    if not _SECRETS:
        return text
    for secret in tuple(_SECRETS):
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return text
