"""Pure: the JSON body of a command and its signature."""

from __future__ import annotations

import hashlib
import hmac
import json

from streams.core.models import ChangeCommand, IncidentCommand

SIGNATURE_HEADER = "X-ITSM-Signature"
TIMESTAMP_HEADER = "X-ITSM-Timestamp"


def body(cmd: IncidentCommand | ChangeCommand) -> bytes:
    """{"kind": "incident" | "change", "command": {...}} with stable key order."""
    kind = "incident" if isinstance(cmd, IncidentCommand) else "change"
    return json.dumps(
        {"kind": kind, "command": cmd.model_dump(mode="json")}, sort_keys=True, separators=(",", ":")
    ).encode()


def signature(secret: bytes, timestamp: str, payload: bytes) -> str:
    """sha256=<hex HMAC-SHA256 of '<timestamp>.<body>'>, the value of X-ITSM-Signature."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + payload, hashlib.sha256).hexdigest()
