"""CI update validation: who may change what, required fields, allowed values, significance and
change type, table-driven on the shipped rule file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams.core.dlq import ErrorClass
from streams.core.models import ChangeAction, ChangeType, ConfigurationItem
from streams.core.rules import load_rules
from streams.stages.changes.validation import CIUpdateValidator, changed_fields

NOW = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
RULES = load_rules().changes
STAGE = CIUpdateValidator(RULES)

BASE: dict[str, Any] = {
    "ci_id": "web-1",
    "name": "web-1",
    "ci_class": "server",
    "hostname": "web-1.example",
    "service": "checkout",
    "environment": "production",
    "owner_group": "team-web",
    "source_system": "servicenow-cmdb",
    "attributes": {"version": "1.0", "os": "debian"},
    "updated_at": NOW - timedelta(hours=1),
}


def ci(**kw: Any) -> ConfigurationItem:
    return ConfigurationItem.model_validate({**BASE, "updated_at": NOW, **kw})


PREV = ConfigurationItem.model_validate(BASE)


@pytest.mark.parametrize(
    ("name", "prev", "new", "accepted", "error", "change_type", "reason_part"),
    [
        ("owner may change anything", PREV, ci(owner_group="team-pay"), True, None, ChangeType.NORMAL, ""),
        (
            "version bump is standard",
            PREV,
            ci(attributes={"version": "1.1", "os": "debian"}, source_system="discovery"),
            True,
            None,
            ChangeType.STANDARD,
            "",
        ),
        (
            "hostname + version is standard",
            PREV,
            ci(hostname="w1", attributes={"version": "2", "os": "debian"}, source_system="terraform"),
            True,
            None,
            ChangeType.STANDARD,
            "",
        ),
        (
            "service move is normal",
            PREV,
            ci(service="payments", source_system="terraform"),
            True,
            None,
            ChangeType.NORMAL,
            "",
        ),
        (
            "insignificant attribute: no change",
            PREV,
            ci(attributes={"version": "1.0", "os": "alpine"}, source_system="discovery"),
            True,
            None,
            None,
            "",
        ),
        ("identical update: no change", PREV, ci(), True, None, None, ""),
        (
            "discovery may not move services",
            PREV,
            ci(service="payments", source_system="discovery"),
            False,
            ErrorClass.AUTH,
            None,
            "may not change service",
        ),
        (
            "names the last writer",
            PREV,
            ci(owner_group="x", source_system="kubernetes"),
            False,
            ErrorClass.AUTH,
            None,
            "last written by servicenow-cmdb",
        ),
        (
            "unknown source",
            PREV,
            ci(source_system="excel"),
            False,
            ErrorClass.AUTH,
            None,
            "'excel' is not allowed",
        ),
        (
            "required field",
            None,
            ci(owner_group=None),
            False,
            ErrorClass.VALIDATION,
            None,
            "owner_group is empty",
        ),
        (
            "allowed values",
            None,
            ci(environment="prod"),
            False,
            ErrorClass.VALIDATION,
            None,
            "'prod' is not one of",
        ),
        (
            "older than the CMDB",
            ci(),
            ConfigurationItem.model_validate(BASE),
            False,
            ErrorClass.CONFLICT,
            None,
            "older",
        ),
        ("create without change by default", None, ci(), True, None, None, ""),
        (
            "deletion is significant, normal",
            PREV,
            ci(deleted=True, owner_group=None, source_system="discovery"),
            False,
            ErrorClass.AUTH,
            None,
            "owner_group",
        ),
        (
            "deletion by discovery",
            PREV,
            ci(deleted=True, source_system="discovery"),
            True,
            None,
            ChangeType.NORMAL,
            "",
        ),
    ],
)
def test_ci_update_rules(
    name: str,
    prev: ConfigurationItem | None,
    new: ConfigurationItem,
    accepted: bool,
    error: ErrorClass | None,
    change_type: ChangeType | None,
    reason_part: str,
) -> None:
    verdict = STAGE.check(prev, new, NOW)
    assert verdict.accepted is accepted, verdict.reason
    assert verdict.error_class is error
    assert reason_part in verdict.reason
    if change_type is None:
        assert verdict.change is None
    else:
        assert verdict.change is not None and verdict.change.change_type is change_type
        assert verdict.change.action is ChangeAction.CREATE and verdict.change.ci_ids == [new.ci_id]


def test_the_change_request_says_what_changed_from_what() -> None:
    verdict = STAGE.check(PREV, ci(service="payments", source_system="terraform"), NOW)
    assert verdict.change is not None
    assert "service: checkout -> payments" in verdict.change.description
    assert verdict.change.requested_by == "terraform" and verdict.change.service == "payments"
    # The same update always gives the same change request id (redelivery is idempotent).
    again = STAGE.check(PREV, ci(service="payments", source_system="terraform"), NOW + timedelta(seconds=5))
    assert again.change is not None and again.change.correlation_id == verdict.change.correlation_id


def test_a_create_from_a_source_without_create_grant_is_refused() -> None:
    rules = RULES.model_copy(
        update={"sources": {"discovery": RULES.sources["discovery"].model_copy(update={"create": False})}}
    )
    verdict = CIUpdateValidator(rules).check(None, ci(source_system="discovery"), NOW)
    assert (
        not verdict.accepted and verdict.error_class is ErrorClass.AUTH and "may not create" in verdict.reason
    )


def test_change_on_create_records_new_cis_as_standard_changes() -> None:
    rules = RULES.model_copy(update={"change_on_create": True})
    verdict = CIUpdateValidator(rules).check(None, ci(), NOW)
    assert verdict.change is not None and verdict.change.change_type is ChangeType.STANDARD


def test_changed_fields_see_attributes_one_by_one_and_lists_as_sets() -> None:
    a = ci(ip_addresses=["10.0.0.1", "10.0.0.2"])
    b = ci(ip_addresses=["10.0.0.2", "10.0.0.1"], attributes={"version": "1.0", "os": "debian", "tier": "1"})
    assert changed_fields(a, b) == ["attributes.tier"]


def test_grants_match_wildcards() -> None:
    grant = RULES.sources["discovery"]
    assert grant.may_change("attributes.anything") and grant.may_change("hostname")
    assert not grant.may_change("service") and not grant.may_change("owner_group")
