"""Hypothesis strategies shared by the fuzz tests: hostile JSON, mutated valid payloads, raw bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

DATA = Path(__file__).resolve().parents[1] / "data"

# Values at the edges: calendar ends, huge and odd numbers, lone surrogates, control characters.
EDGE_TEXT = st.sampled_from(
    [
        "",
        " ",
        "0001-01-01T00:30:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "2026-13-45T99:99:99Z",
        "2026-11-30T10:00:00",
        "²",
        "1" * 40,
        "\ud800",
        "\udfff",
        "\x00",
        "firing",
        "resolved",
        "x" * 70_000,
        "Bearer ä",
    ]
)
EDGE_NUMBERS = st.sampled_from([0, -1, 10**30, 2**63, -(2**63) - 1, 1e308, -1e-308, 253402300800000])
TEXT = st.one_of(st.text(max_size=40), EDGE_TEXT)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), EDGE_NUMBERS, TEXT)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=20,
)


def samples(source: str) -> list[Any]:
    """The valid example payloads of one webhook source (tests/data/<source>/*.json)."""
    return [json.loads(p.read_text()) for p in sorted((DATA / source).glob("*.json"))]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


@st.composite
def mutated(draw: st.DrawFn, source: str) -> Any:
    """A valid payload of source with one to three of its values replaced by hostile ones."""
    value = draw(st.sampled_from(samples(source)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(value)))
        value = _replace(value, path, draw(JSON))
    return value


def encode(value: Any) -> bytes:
    """JSON text of value (lone surrogates kept as escapes, as a hostile sender would send them)."""
    return json.dumps(value).encode()


RAW_BODIES = st.one_of(
    st.binary(max_size=200),
    st.just(b"\xef\xbb\xbf{}"),
    st.just("{}".encode("utf-16")),
    st.just(b"[" * 5000 + b"]" * 5000),
    st.just(b'{"a": ' + b"9" * 5000 + b"}"),
    st.just(b'{"a": 1, "a": 2}'),
    st.just(b'{"a": NaN}'),
    st.just(b'{"a": 1e999}'),
    st.just(b'"\\ud800"'),
)
