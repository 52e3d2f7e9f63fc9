"""A command's id is uuid5(COMMAND_NAMESPACE, identity), made without a UUID object."""

from __future__ import annotations

import uuid

import pytest

from streams.stages.alerts.lifecycle import COMMAND_NAMESPACE, command_id


@pytest.mark.parametrize(
    "identity",
    [
        "",
        "INC-abc|OPEN|fp-0001|1|2026-12-03T12:00:00+00:00",
        "INC-x|caused-by|INC-y|UPDATE",
        "ünïcode|🚨|" + "x" * 500,
    ],
)
def test_command_id_is_the_rfc_4122_uuid5(identity: str) -> None:
    made = command_id(identity)
    assert made == str(uuid.uuid5(COMMAND_NAMESPACE, identity))
    parsed = uuid.UUID(made)
    assert parsed.version == 5 and parsed.variant == uuid.RFC_4122


def test_distinct_identities_get_distinct_ids() -> None:
    ids = {command_id(f"INC-{i}|OPEN|fp|1|t") for i in range(2000)}
    assert len(ids) == 2000
