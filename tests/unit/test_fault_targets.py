"""devkit/faults.py's judging of a fault run against issue 18's targets (pure: no run)."""

from __future__ import annotations

import dataclasses

from devkit.faults import FAULTS, Outcome, Run

GOOD = Outcome("outage30", True, committed=1000, delivered=1000, lost=0, duplicates=0, during=(1.0, 5.0, 9.0),
               normal_after=0.5, backlog_after=2.0, requests=200, after=(2.0, 40.0, 900.0), after_requests=100,
               losses=4, rss_growth=3.0, rss_peak=12.0, settled_down=True, outbox_left=0, timeout=10.0, window=50)


def test_a_run_within_every_target_misses_none():
    assert GOOD.judge() == []
    assert GOOD.target_row().endswith("| none |")


def test_any_duplicate_after_a_refused_outage_is_a_miss_but_not_after_other_faults_within_the_window():
    assert dataclasses.replace(GOOD, duplicates=1).judge() == ["duplicates"]
    silent = dataclasses.replace(GOOD, fault="silent30", duplicates=200)
    assert silent.duplicate_bound == 200 and silent.judge() == []
    assert dataclasses.replace(silent, duplicates=201).judge() == ["duplicates"]


def test_each_target():
    assert dataclasses.replace(GOOD, lost=1).judge() == ["lost"]
    assert dataclasses.replace(GOOD, after=(2.0, 51.0, 100.0)).judge() == ["p99"]
    assert dataclasses.replace(GOOD, after=(2.0, 10.0, 10001.0)).judge() == ["max"]
    assert dataclasses.replace(GOOD, backlog_after=10.5).judge() == ["backlog"]
    assert dataclasses.replace(GOOD, backlog_after=None).judge() == ["backlog"]  # never delivered whole
    assert dataclasses.replace(GOOD, rss_growth=10.5).judge() == ["RSS"]
    assert dataclasses.replace(GOOD, settled_down=False).judge() == ["RSS"]  # measured before it was gone


def test_lengths():
    run = Run(fault_seconds=3.0, sigstop_seconds=7.0)
    assert run.length(FAULTS["outage30"]) == run.length(FAULTS["silent30"]) == 30.0
    assert run.length(FAULTS["stop"]) == run.length(FAULTS["slow"]) == run.length(FAULTS["rejectq"]) == 3.0
    assert run.length(FAULTS["sigstop"]) == 7.0
    assert run.length(FAULTS["cut"]) == 0


def test_the_no_fault_reference_runs_the_same_windows_and_allows_no_duplicate():
    run = Run(fault_seconds=3.0)
    assert run.length(FAULTS["none"]) == 3.0  # "during" and "after the return" as long as a fault's
    none = dataclasses.replace(GOOD, fault="none", losses=0)
    assert none.duplicate_bound == 0 and none.judge() == []
    assert dataclasses.replace(none, duplicates=1).judge() == ["duplicates"]
