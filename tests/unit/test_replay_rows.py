"""Replay's pure parts: the time window (a duration ago or an ISO time) and topic patterns as a
topic exchange binds them; the command refuses without [outbox] keep."""

from __future__ import annotations

import datetime as dt

import pytest

from koji_messagebus.cli import main
from koji_messagebus.cli.replay_rows import parse_time, topic_matcher

NOW = dt.datetime(2026, 12, 4, 18, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("text, ago", [("2h", 7200), ("30m", 1800), ("90", 90), ("90s", 90), ("1d", 86400),
                                       ("1.5h", 5400)])
def test_a_duration_is_that_long_ago(text, ago):
    assert parse_time(text, NOW) == NOW - dt.timedelta(seconds=ago)


def test_an_iso_time_with_an_offset_or_z_or_none():
    assert parse_time("2026-12-04T17:00:00+00:00", NOW) == dt.datetime(2026, 12, 4, 17, tzinfo=dt.timezone.utc)
    assert parse_time("2026-12-04T17:00Z", NOW) == dt.datetime(2026, 12, 4, 17, tzinfo=dt.timezone.utc)
    local = parse_time("2026-12-04T17:00", NOW)
    assert local.tzinfo is not None and local.replace(tzinfo=None) == dt.datetime(2026, 12, 4, 17)


@pytest.mark.parametrize("text", ["yesterday", "2h ago", "-5m", "", "2026-13-01"])
def test_anything_else_says_what_is_accepted(text):
    with pytest.raises(ValueError, match="neither a duration ago"):
        parse_time(text, NOW)


@pytest.mark.parametrize("pattern, key, matches", [
    ("koji.event.Tag.#", "koji.event.Tag.f44.hello.alice", True),
    ("koji.event.Tag.#", "koji.event.Tag", True),
    ("koji.event.Tag.#", "koji.event.TagX.a", False),
    ("koji.event.Tag.#", "koji.event.Untag.f44", False),
    ("koji.event.*.f44", "koji.event.Tag.f44", True),
    ("koji.event.*.f44", "koji.event.Tag.x.f44", False),
    ("#", "a.b.c", True),
    ("#.alice", "koji.event.Tag.f44.alice", True),
    ("#.alice", "alice", True),
    ("#.alice", "koji.alicex", False),
    ("a.#.c", "a.c", True),
    ("a.#.c", "a.b.b.c", True),
    ("a.#.c", "ab.c", False),
    ("a.*.#", "a", False),
    ("a.*.#", "a.b", True),
])
def test_topic_patterns_match_as_a_topic_binding(pattern, key, matches):
    assert topic_matcher(pattern)(key) is matches


@pytest.mark.parametrize("pattern", ["", "a..b", ".a", "a."])
def test_a_malformed_pattern_is_refused(pattern):
    with pytest.raises(ValueError, match="not a topic pattern"):
        topic_matcher(pattern)


def test_replay_without_keep_says_what_to_set(tmp_path, capsys):
    conf = tmp_path / "messagebus.conf"
    conf.write_text("[broker]\nhost = localhost\nauth = ANONYMOUS\n[outbox]\nenabled = true\n")
    assert main(["--config", str(conf), "replay", "--since", "1h"]) == 1
    assert "set [outbox] enabled = true and keep = SECONDS" in capsys.readouterr().err


def test_replay_refuses_a_bad_time_or_pattern_before_touching_the_database(tmp_path, capsys):
    conf = tmp_path / "messagebus.conf"
    conf.write_text("[broker]\nhost = localhost\nauth = ANONYMOUS\n[outbox]\nenabled = true\nkeep = 3600\n"
                    f"hub_config = {tmp_path}/missing-hub.conf\n")
    assert main(["--config", str(conf), "replay", "--since", "yesterday"]) == 2
    assert "--since: 'yesterday' is neither a duration ago" in capsys.readouterr().err
    assert main(["--config", str(conf), "replay", "--since", "1h", "--match", "a..b"]) == 2
    assert "--match 'a..b': not a topic pattern" in capsys.readouterr().err
