"""Where the machine's CPU went during a window of a benchmark: cores used, on average, by each
group of processes (read from /proc), so that a figure missed under load can be told apart from a
machine with no core left.  Groups: the hub processes (children of the harness), the harness itself
(its consumer and fault proxy), RabbitMQ (the Erlang VM), PostgreSQL, and the rest."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

TICKS = os.sysconf("SC_CLK_TCK")
GROUPS = ("hub processes", "harness", "rabbitmq", "postgres", "other")


def _group(pid: int, ppid: int, comm: str, harness: int) -> str:
    if pid == harness:
        return "harness"
    if ppid == harness:
        return "hub processes"
    if comm.startswith(("beam", "erl_child", "epmd")):
        return "rabbitmq"
    if comm.startswith("postgres"):
        return "postgres"
    return "other"


def snapshot(harness: int) -> tuple[float, dict[int, tuple[str, int]]]:
    """(monotonic seconds, {pid: (group, CPU ticks so far)}) of every process now running."""
    ticks: dict[int, tuple[str, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                data = f.read()
        except OSError:
            continue  # ended meanwhile
        comm = data[data.index("(") + 1:data.rindex(")")]
        fields = data[data.rindex(")") + 2:].split()
        pid = int(name)
        ticks[pid] = (_group(pid, int(fields[1]), comm, harness), int(fields[11]) + int(fields[12]))
    return time.monotonic(), ticks


class CpuSplit:
    """Measures the `seconds` after start() on a thread of its own; `cores` is set when done.  A
    process that ends inside the window is not counted (the hub processes live through it)."""

    def __init__(self, seconds: float, harness: int | None = None):
        self.seconds = seconds
        self.harness = harness or os.getpid()
        self.cores: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="cpusplit", daemon=True)

    def start(self) -> CpuSplit:
        self._thread.start()
        return self

    def join(self) -> dict[str, float]:
        self._thread.join()
        return self.cores

    def _run(self) -> None:
        t0, before = snapshot(self.harness)
        time.sleep(self.seconds)
        t1, after = snapshot(self.harness)
        used: Counter[str] = Counter()
        for pid, (group, ticks) in after.items():  # a process started inside the window: all of its time
            used[group] += ticks - before.get(pid, (group, 0))[1]
        self.cores = {g: used[g] / TICKS / (t1 - t0) for g in GROUPS}
