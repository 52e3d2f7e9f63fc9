"""The sink's commit point: the first command of a partition that is not finished (handled, every
output acknowledged); nothing after an unfinished command is committed."""

from __future__ import annotations

from connectors.sinks.runner import Progress


def test_commits_cover_finished_commands_in_a_row_only() -> None:
    p = Progress()
    for offset in (10, 11, 12):
        p.begin(0, offset)
        p.expect(0, offset)  # its result
        p.handled(0, offset)
    p.begin(1, 5)
    p.expect(1, 5)
    p.expect(1, 5)  # a dead letter and its result
    p.handled(1, 5)
    assert p.committable() == {}  # nothing acknowledged yet
    p.acknowledged(0, 11)
    assert p.committable() == {}  # 10 is not: 11 waits behind it
    p.acknowledged(0, 10)
    assert p.committable() == {0: 12}  # 10 and 11 done
    p.acknowledged(1, 5)
    assert p.committable() == {}  # one of its two outputs left
    p.acknowledged(1, 5)
    p.acknowledged(0, 12)
    assert p.committable() == {0: 13, 1: 6}
    assert p.pending() == 0


def test_a_command_being_handled_holds_the_commit_point() -> None:
    p = Progress()
    p.begin(0, 1)
    p.expect(0, 1)
    p.acknowledged(0, 1)  # e.g. the Jira sink's create intent, acknowledged mid-command
    assert p.committable() == {}
    p.handled(0, 1)
    assert p.committable() == {0: 2}


def test_revoked_partitions_are_forgotten() -> None:
    p = Progress()
    p.begin(3, 7)
    p.forget({3})
    p.acknowledged(3, 7)  # a late acknowledgement of a forgotten partition is ignored
    assert p.committable() == {} and p.pending() == 0
