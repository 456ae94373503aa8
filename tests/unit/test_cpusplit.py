"""devkit/cpusplit.py: which group a process is counted in, and that a busy hub process is seen."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

from devkit.cpusplit import GROUPS, CpuSplit, _group


def test_processes_are_grouped_by_parent_and_name():
    me = os.getpid()
    assert _group(me, 1, "python3", me) == "harness"
    assert _group(4242, me, "python3", me) == "hub processes"
    assert _group(4243, 1, "beam.smp", me) == "rabbitmq"
    assert _group(4244, 1, "postgres", me) == "postgres"
    assert _group(4245, 1, "java", me) == "other"


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_busy_child_is_counted_as_a_hub_process():
    child = mp.get_context("fork").Process(target=_spin, args=(1.5,))
    child.start()
    try:
        split = CpuSplit(0.8).start()
        cores = split.join()
    finally:
        child.join()
    assert set(cores) == set(GROUPS)
    assert cores["hub processes"] > 0.0  # a spinning child uses CPU in any window it lives through
