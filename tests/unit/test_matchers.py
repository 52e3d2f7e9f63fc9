"""Label matchers as Alertmanager reads and applies them (pkg/labels: parse.go, matcher.go)."""

from __future__ import annotations

import pytest

from streams.core.matchers import Matcher, MatchType, matches_all, parse_matcher, parse_matchers

LABELS = {"alertname": "DiskFull", "severity": "critical", "instance": "db-1:9100", "env": "prod"}


@pytest.mark.parametrize(
    ("text", "name", "type_", "value"),
    [
        ('alertname="DiskFull"', "alertname", MatchType.EQUAL, "DiskFull"),
        ("alertname=DiskFull", "alertname", MatchType.EQUAL, "DiskFull"),  # unquoted
        ('  severity =~ "crit.*"  ', "severity", MatchType.REGEX, "crit.*"),
        ('env!="dev"', "env", MatchType.NOT_EQUAL, "dev"),
        ('instance!~"web-.*"', "instance", MatchType.NOT_REGEX, "web-.*"),
        ('a="x\\"y"', "a", MatchType.EQUAL, 'x"y'),  # escaped quote
        ('a="x\\\\y"', "a", MatchType.EQUAL, "x\\y"),  # escaped backslash
        ('a="x\\ny"', "a", MatchType.EQUAL, "x\ny"),  # \n
        ('a="x\\ty"', "a", MatchType.EQUAL, "x\\ty"),  # a spurious escape stays literal
        ('a="x\\"', "a", MatchType.EQUAL, 'x"'),  # \" at the end: an escaped quote, no closing one
        ("a=", "a", MatchType.EQUAL, ""),
        ('a=""', "a", MatchType.EQUAL, ""),
        ("a:b_c=1", "a:b_c", MatchType.EQUAL, "1"),
    ],
)
def test_parse_one(text: str, name: str, type_: MatchType, value: str) -> None:
    if text == 'a="x\\"':
        with pytest.raises(ValueError, match="unescaped double quote"):
            parse_matcher(text)
        return
    m = parse_matcher(text)
    assert (m.name, m.type, m.value) == (name, type_, value)


@pytest.mark.parametrize(
    "text",
    ["", "alertname", "1a=b", 'a="b', 'a=b"c', 'a="b"c"', "a==b=", 'a=~"(unclosed"', 'a=~"(x)\\\\1"'],
)
def test_parse_refuses(text: str) -> None:
    if text == "a==b=":
        # '=' then the value '=b=' (Alertmanager reads it the same way).
        assert parse_matcher(text).value == "=b="
        return
    with pytest.raises(ValueError):
        parse_matcher(text)


def test_parse_a_list_with_braces_and_commas_inside_quotes() -> None:
    got = parse_matchers('{alertname="DiskFull", summary=~"a, b.*",env!=dev}')
    assert [str(m) for m in got] == ['alertname="DiskFull"', 'summary=~"a, b.*"', 'env!="dev"']
    assert parse_matchers("") == [] and parse_matchers("{}") == []


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ('alertname="DiskFull"', True),
        ('alertname="diskfull"', False),  # case matters
        ('severity=~"crit.*"', True),
        ('severity=~"crit"', False),  # anchored: no partial match
        ('severity=~"warning|critical"', True),
        ('instance=~"db-[0-9]+:9100"', True),
        ('instance!~"web-.*"', True),
        ('env!="prod"', False),
        ('team=""', True),  # an absent label is the empty string
        ('team!=""', False),
        ('team=~".*"', True),
        ('team=~".+"', False),
        ('team!~".+"', True),
        ('alertname=~"(?i)diskfull"', True),  # RE2 flags
    ],
)
def test_matching(text: str, matches: bool) -> None:
    assert parse_matcher(text).matches(LABELS) is matches


def test_all_must_match_and_none_match_everything() -> None:
    assert matches_all(parse_matchers('alertname="DiskFull",env="prod"'), LABELS)
    assert not matches_all(parse_matchers('alertname="DiskFull",env="dev"'), LABELS)
    assert matches_all([], LABELS)


def test_rendering_quotes_and_escapes_and_parses_back() -> None:
    m = Matcher("a", MatchType.NOT_REGEX, 'x"\\\ny')
    assert str(m) == 'a!~"x\\"\\\\\\ny"'
    assert parse_matcher(str(m)) == m
