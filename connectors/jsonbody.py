"""Strict JSON request bodies for every HTTP route: what RFC 8259 allows, within limits, or a
BodyError naming the problem (a 400, never a 500 and never a silent guess)."""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64  # far beyond any webhook's shape; json's recursion would fail near 1,000
MAX_INT_DIGITS = 20  # an int64 has 19; Python refuses more than 4,300
BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
# Strict UTF-8 cannot carry a surrogate, so one can only come from a \uD800-\uDFFF escape.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class BodyError(ValueError):
    """The body is not JSON this service accepts; the message says why."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # RFC 8259 4: names SHOULD be unique; "last wins" would silently drop a value.
            raise BodyError(f"duplicate key {key[:100]!r} in an object")
        out[key] = value
    return out


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BodyError(f"number with {len(text)} digits is out of range")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BodyError(f"number {text[:40]} is out of range")
    return value


def _constant(name: str) -> Any:
    raise BodyError(f"{name} is not a JSON number")


def _depth_ok(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return True


def parse_json(body: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of a UTF-8 body (RFC 8259 8.1: no byte order mark), or BodyError."""
    if body.startswith(BOMS):
        raise BodyError("body starts with a byte order mark; send UTF-8 without one")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_constant,
        )
    except RecursionError:
        raise BodyError(f"JSON nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise BodyError(f"body is not valid JSON: {exc}") from None
    # Cheap bounds first (profiled: the walk and the re-encoding cost more than the parse): a
    # text with fewer brackets than the limit cannot nest deeper, and one without a surrogate
    # escape cannot hold a lone surrogate.
    if text.count("{") + text.count("[") > max_depth and not _depth_ok(value, max_depth):
        raise BodyError(f"JSON nested deeper than {max_depth} levels")
    if SURROGATE_ESCAPE.search(text) is None:
        return value
    try:
        # A lone surrogate (\ud800) is valid JSON text but no Unicode scalar: Avro, Kafka and
        # every ITSM would refuse it later, so it is refused here, at the door.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BodyError(
            "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text"
        ) from None
    return value
