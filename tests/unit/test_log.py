"""log.CauseLog: one line per cause per minute, with counts (a fake clock, a real logger)."""

from __future__ import annotations

import logging
import threading

import pytest

from koji_messagebus import log as mblog
from koji_messagebus.log import CauseLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.DEBUG, logger=mblog.LOGGER_NAME)

    def said() -> list[tuple[int, str]]:
        return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == mblog.LOGGER_NAME]
    return said


def test_first_occurrence_at_once_then_one_line_with_the_count(lines):
    clock = Clock()
    causes = CauseLog(clock=clock)
    for _ in range(412):
        causes.log("outbox-locked", logging.WARNING, "the outbox table %s is locked", "t",
                   counted="request(s) sent directly")
        clock.now += 0.1
    assert lines() == [(logging.WARNING, "messagebus: 1 request(s) sent directly: the outbox table t is locked")]
    clock.now = 1061.0  # the minute is over: the next occurrence says how many there were
    causes.log("outbox-locked", logging.WARNING, "the outbox table %s is locked", "t",
               counted="request(s) sent directly")
    assert lines()[1:] == [(logging.WARNING, "messagebus: 412 request(s) sent directly in the last 61 s: "
                                             "the outbox table t is locked")]


def test_without_counted_the_count_ends_the_line(lines):
    clock = Clock()
    causes = CauseLog(clock=clock)
    causes.log("db", logging.ERROR, "database gone: %s", "EOF")
    clock.now += 10
    causes.log("db", logging.ERROR, "database gone: %s", "refused")
    causes.log("db", logging.ERROR, "database gone: %s", "refused")
    clock.now += 60
    causes.flush()
    assert lines() == [(logging.ERROR, "messagebus: database gone: EOF"),
                       (logging.ERROR, "messagebus: database gone: refused (2 times in the last 70 s)")]


def test_flush_writes_only_what_is_due_and_force_writes_the_rest(lines):
    clock = Clock()
    causes = CauseLog(clock=clock)
    causes.log("a", logging.INFO, "a")
    causes.log("a", logging.INFO, "a")
    causes.flush()  # not due yet
    assert len(lines()) == 1
    causes.flush(force=True)  # process exit
    assert lines()[1] == (logging.INFO, "messagebus: a (1 time in the last 0 s)")
    causes.flush(force=True)  # nothing left
    assert len(lines()) == 2


def test_causes_are_counted_apart_and_a_quiet_cause_starts_over(lines):
    clock = Clock()
    causes = CauseLog(clock=clock)
    causes.log("a", logging.INFO, "a")
    causes.log("b", logging.INFO, "b")
    clock.now += 3600
    causes.log("a", logging.INFO, "a")  # nothing counted since its last line: said as a first occurrence
    assert [m for _, m in lines()] == ["messagebus: a", "messagebus: b", "messagebus: a"]


def test_count_stands_for_several_and_the_level_is_the_highest_counted(lines):
    clock = Clock()
    causes = CauseLog(clock=clock)
    causes.log("u", logging.INFO, "went nowhere", count=3, counted="message(s)")
    causes.log("u", logging.INFO, "went nowhere", count=2, counted="message(s)")
    causes.log("u", logging.WARNING, "went nowhere", count=1, counted="message(s)")
    clock.now += 60
    causes.flush()
    assert lines() == [(logging.INFO, "messagebus: 3 message(s): went nowhere"),
                       (logging.WARNING, "messagebus: 3 message(s) in the last 60 s: went nowhere")]


def test_memory_is_bounded_by_the_number_of_causes(lines):
    clock = Clock()
    causes = CauseLog(clock=clock, max_causes=2)
    for name in ("a", "b", "c", "c"):
        causes.log(name, logging.INFO, name)
    assert [m for _, m in lines()] == ["messagebus: a", "messagebus: b", "messagebus: c", "messagebus: c"]
    assert len(causes._causes) == 2
    clock.now += 60  # a and b are quiet and over their minute: forgotten to make room
    causes.log("d", logging.INFO, "d")
    causes.log("d", logging.INFO, "d")
    assert sorted(causes._causes) == ["d"] and len(lines()) == 5


def test_a_bad_format_still_says_the_text(lines):
    causes = CauseLog(clock=Clock())
    causes.log("x", logging.ERROR, "%d items", "many")
    assert lines() == [(logging.ERROR, "messagebus: %d items ('many',)")]


def test_threads_lose_no_count(lines):
    clock = Clock()
    causes = CauseLog(clock=clock)

    def hammer() -> None:
        for _ in range(1000):
            causes.log("t", logging.WARNING, "locked", counted="request(s)")

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    clock.now += 60
    causes.flush()
    assert [m for _, m in lines()] == ["messagebus: 1 request(s): locked",
                                       "messagebus: 7999 request(s) in the last 60 s: locked"]


def test_module_log_cause_uses_the_process_cause_log(lines, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(mblog, "CAUSES", CauseLog(clock=clock))
    mblog.log_cause("x", logging.WARNING, "it is %s", "locked")
    mblog.log_cause("x", logging.WARNING, "it is %s", "locked")
    clock.now += 60
    mblog.flush_causes()
    assert [m for _, m in lines()] == ["messagebus: it is locked", "messagebus: it is locked (1 time in the last 60 s)"]
