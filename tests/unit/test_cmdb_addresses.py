"""CI lookup by address: IPv4 and IPv6 compare in their canonical form (ipaddress), ports and
zone ids dropped, IPv4-mapped IPv6 as IPv4."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.core.models import ConfigurationItem
from streams.stages.cmdb import CMDBIndex, normalize_host, normalize_ip


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("10.0.0.5", "10.0.0.5"),
        ("10.0.0.5:9100", "10.0.0.5"),
        (" 10.0.0.5 ", "10.0.0.5"),
        ("2001:DB8:0:0:0:0:0:5", "2001:db8::5"),
        ("2001:0db8::0005", "2001:db8::5"),
        ("[2001:db8::5]:9100", "2001:db8::5"),
        ("fe80::1%eth0", "fe80::1"),
        ("::ffff:10.0.0.5", "10.0.0.5"),
        ("10.0.0.256", "10.0.0.256"),  # no address: compared as written
        ("db-1", "db-1"),
    ],
)
def test_addresses_are_canonical(given: str, canonical: str) -> None:
    assert normalize_ip(given) == canonical


def test_hostnames_drop_domain_and_port_but_addresses_stay_whole() -> None:
    assert normalize_host("Web-1.Example.com:9100") == "web-1"
    assert normalize_host("10.0.0.5:9100") == "10.0.0.5"
    assert normalize_host("[2001:DB8::5]:9100") == "2001:db8::5"
    # Names made only of hex digits are still names, and a zone id still leaves the address.
    assert normalize_host("deadbeef:9100") == "deadbeef"
    assert normalize_host("cafe.example.com") == "cafe"
    assert normalize_host("fe80::1%eth0") == "fe80::1"
    assert normalize_host("::ffff:10.0.0.5") == "10.0.0.5"


def test_a_ci_is_found_by_any_spelling_of_its_ipv6_address() -> None:
    index = CMDBIndex()
    index.upsert(
        ConfigurationItem(
            ci_id="ci-db-6",
            name="db-6",
            ci_class="server",
            ip_addresses=["2001:0DB8:0000:0000:0000:0000:0000:0006"],
            source_system="test",
            updated_at=datetime(2026, 11, 30, tzinfo=UTC),
        )
    )
    for spelling in ("2001:db8::6", "[2001:db8::6]:9100", "2001:DB8:0:0::6"):
        found = index.lookup("ip", spelling)
        assert found is not None and found.ci_id == "ci-db-6"
    assert index.lookup("ip", "2001:db8::7") is None
