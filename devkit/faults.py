"""The fault-under-load harness: N hub processes (devkit/load.py) sending through the fault
proxy while a fault is injected, every message counted against the hubs' own ledger.  bench/faults.py
measures with it; tests/integration/test_sender_faults.py runs its short version.  FAULTS lists the
faults; Outcome holds one run's figures and judges them against issue 18's targets."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devkit.cpusplit import GROUPS, CpuSplit
from devkit.faultproxy import FaultProxy
from devkit.load import Arrivals, Collected, Load, Setup, collect_load, start_load, stats_ms
from devkit.rejectqueue import RejectQueue
from koji_messagebus.delivery.window import MAX_IN_FLIGHT
from koji_messagebus.transaction import outbox

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/usr/bin"))


@dataclass(frozen=True)
class Fault:
    name: str
    action: str  # refuse, reset, pause, delay, rejectq, none (these last a while), cut, pgrestart, hubkill (at once)
    seconds: float | None  # how long it lasts: None = Run.fault_seconds; 0 = an instant
    doc: str


#: every fault, by name; the first six are the short faults, the next four the "broker's return" ones, and
#: `none` the floor they are read against: the same load and windows with nothing injected
FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("stop", "refuse", None, "the broker stops: it settles what it had taken, closes every connection "
          "(FIN) and refuses new ones (the proxy's shut() and mode refuse), then starts again"),
    Fault("kill9", "reset", None, "the broker dies: connections reset, new ones refused, then it starts again"),
    Fault("sigstop", "pause", None, "the broker is frozen (SIGSTOP: nothing answers, new connections hang), "
          "then resumes (for max(fault_seconds, sigstop_seconds))"),
    Fault("cut", "cut", 0, "every connection is reset once, the broker stays up"),
    Fault("pgrestart", "pgrestart", 0, "the private PostgreSQL cluster restarts (pg_ctl restart -m fast)"),
    Fault("hubkill", "hubkill", 0, "one hub process is killed with SIGKILL mid-run (its unsent rows are the "
          "drain's)"),
    Fault("outage30", "refuse", 30.0, "a long refused outage: stop, for 30 s"),
    Fault("silent30", "pause", 30.0, "a long silent broker: sigstop, for 30 s"),
    Fault("slow", "delay", None, "a slow broker: every byte it sends (settlements) held 1-2 s by the proxy, in "
          "order, nothing dropped; messages reach it at once"),
    Fault("rejectq", "rejectq", None, "a full `x-overflow: reject-publish` queue (devkit/rejectqueue.py) bound "
          "for koji.event.Tag.# on the run's exchange, removed at the end of the fault"),
    Fault("none", "none", None, "no fault: the same load and the same windows (\"during\", \"after the return\"), "
          "nothing injected; the floor each fault's figures are read against"),
)}
SHORT = ("stop", "kill9", "sigstop", "cut", "pgrestart", "hubkill")
RETURN = ("none", "outage30", "silent30", "slow", "rejectq")
#: MAX_IN_FLIGHT (delivery/window.py), the window's cap, bounds the duplicates of one connection loss
AFTER_WINDOW = 10.0  # the requests judged "after the return": started within this many seconds of the heal


@dataclass
class Run:
    """How a fault run is made (bench/faults.py's options)."""

    procs: int = 4
    threads: int = 4
    think: float = 0.2  # seconds between a thread's requests (x0.5-1.5)
    before: float = 4.0  # seconds of load before the fault
    fault_seconds: float = 5.0
    sigstop_seconds: float = 10.0
    after: float = 8.0  # seconds of load after the heal
    timeout: float = 2.0
    connect_timeout: float = 5.0
    retry_interval: float = 30.0
    heartbeat: int = 10
    max_pending: int = 100000
    drain_wait: float = 40.0  # after the load: how long the consumer waits for the rest
    linger: float = 30.0  # how long a hub process waits, after its requests, for its sender and outbox to empty

    def length(self, fault: Fault) -> float:
        if fault.seconds is not None:
            return fault.seconds
        if fault.action == "pause":
            return max(self.fault_seconds, self.sigstop_seconds)
        return self.fault_seconds


# ---- the proxy, in a process of its own, driven by commands ------------------------------------------
def _proxy_main(conn: Any) -> None:
    with FaultProxy(("127.0.0.1", 5672)) as proxy:
        conn.send(proxy.port)
        while True:
            cmd, arg = conn.recv()
            if cmd == "quit":
                conn.send(None)
                return
            if cmd == "mode":
                proxy.set_mode(arg)
            elif cmd == "cut":
                proxy.cut(reset=arg)
            elif cmd == "shut":
                proxy.shut()
            conn.send(None)


class Proxy:
    def __init__(self) -> None:
        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_proxy_main, args=(child,), daemon=True)
        self._proc.start()
        self.port: int = self._conn.recv()

    def do(self, cmd: str, arg: Any = None) -> None:
        self._conn.send((cmd, arg))
        self._conn.recv()

    def close(self) -> None:
        try:
            self.do("quit")
        finally:
            self._proc.join(5)


# ---- a private PostgreSQL cluster ----------------------------------------------------------------------
class PrivatePostgres:
    """initdb in a temp dir, run as user postgres on its own port (never the shared cluster)."""

    def __init__(self, port: int = 5499):
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="kmb-pg-")
        shutil.chown(self.dir, "postgres")
        self._as_postgres([str(PG_BIN / "initdb"), "-D", f"{self.dir}/data", "-A", "trust", "-U", "postgres"])
        self.start()

    def _as_postgres(self, argv: list[str]) -> None:
        cmd = " ".join(argv)
        subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", cmd], check=True, capture_output=True, timeout=120)

    def _ctl(self, *args: str) -> None:
        self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "-t",
                           "60", *args])

    def start(self) -> None:
        self._ctl("-o", f"'-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1'", "start")

    def restart(self) -> None:
        self._ctl("-m", "fast", "-o", f"'-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1'", "restart")

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def stop(self) -> None:
        try:
            self._ctl("-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def _mib(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


@dataclass
class Outcome:
    """One run's figures.  Times in seconds from the heal (the broker back, the queue gone); latency in ms."""

    fault: str
    outbox: bool
    committed: int
    delivered: int
    lost: int  # committed, not arrived by the end of the run (outbox_left of them still in the outbox)
    duplicates: int
    during: tuple[float, float, float]  # the plugin's time per request during the fault: median, p99, max
    normal_after: float | None
    backlog_after: float | None
    requests: int
    after: tuple[float, float, float] = (0.0, 0.0, 0.0)  # the same, requests started in the AFTER_WINDOW
    after_requests: int = 0
    losses: int = 0  # connections the hub processes' senders lost (connects - 1, summed)
    rss_growth: float | None = None  # MiB: the worst process's RSS at its end minus just before the fault
    rss_peak: float | None = None  # MiB: the worst process's highest RSS after the fault minus just before
    settled_down: bool = True  # every process ended with nothing held and the outbox empty
    outbox_left: int = 0
    given_up: int = 0  # messages the senders logged as lost (they may still have arrived: see `lost`)
    timeout: float = 0.0
    window: int = MAX_IN_FLIGHT
    misses: list[str] = field(default_factory=list)
    #: cores used on average in the AFTER_WINDOW, per group of processes (devkit/cpusplit.py)
    cpu: dict[str, float] = field(default_factory=dict)

    def cpu_line(self) -> str:
        """`fault outbox: hub processes 0.90, ...; total 1.95 of 2`: is the machine full after the return?"""
        parts = ", ".join(f"{g} {self.cpu.get(g, 0.0):.2f}" for g in GROUPS)
        return (f"{self.fault} {'on' if self.outbox else 'off'}: {parts}; total {sum(self.cpu.values()):.2f} "
                f"of {os.cpu_count()}")

    def row(self) -> str:
        na = f"{self.normal_after:.2f}" if self.normal_after is not None else "never"
        ba = f"{self.backlog_after:.2f}" if self.backlog_after is not None else "never"
        d = self.during
        return (f"| {self.fault} | {'on' if self.outbox else 'off'} | {self.committed} | {self.delivered} | "
                f"{self.lost} | {self.duplicates} | {d[0]:.1f} / {d[1]:.1f} / {d[2]:.1f} | {na} | {ba} | "
                f"{self.requests} |")

    @property
    def refused(self) -> bool:
        """A refused outage (or no fault): the broker took nothing it did not settle, so any copy is
        self-inflicted."""
        return FAULTS[self.fault].action in ("refuse", "none")

    @property
    def duplicate_bound(self) -> int:
        return 0 if self.refused else self.window * self.losses

    def judge(self) -> list[str]:
        """The targets missed (issue 18): the names of the columns of target_row()."""
        missed = []
        if self.lost:
            missed.append("lost")
        if self.duplicates > self.duplicate_bound:
            missed.append("duplicates")
        if self.after[1] > 50:
            missed.append("p99")
        if self.after[2] > self.timeout * 1000:
            missed.append("max")
        if self.backlog_after is None or self.backlog_after > 10:
            missed.append("backlog")
        if self.rss_growth is None or self.rss_growth > 10 or not self.settled_down:
            missed.append("RSS")
        self.misses = missed
        return missed

    TARGET_HEADER = (
        "| fault | outbox | committed | lost (target 0) | duplicates | connection losses | duplicates target | "
        "requests in the 10 s after the return: count, p99 / max ms (target <= 50 / <= timeout) | heal to whole "
        "backlog delivered, s (target <= 10) | RSS: growth at the end / peak, worst process, MiB (target <= 10) | "
        "missed |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")

    def target_row(self) -> str:
        self.judge()
        bound = "0" if self.refused else f"<= {self.window} x {self.losses} = {self.duplicate_bound}"
        lost = f"{self.lost} ({self.outbox_left} in the outbox)" if self.outbox_left else str(self.lost)
        if self.given_up:
            lost += f"; {self.given_up} logged as lost"
        ba = f"{self.backlog_after:.2f}" if self.backlog_after is not None else "never"
        rss = f"{_mib(self.rss_growth)} / {_mib(self.rss_peak)}" + ("" if self.settled_down else " (not emptied)")
        return (f"| {self.fault} | {'on' if self.outbox else 'off'} | {self.committed} | {lost} | "
                f"{self.duplicates} | {self.losses} | {bound} | {self.after_requests}: {self.after[1]:.1f} / "
                f"{self.after[2]:.1f} | {ba} | {rss} | {', '.join(self.misses) or 'none'} |")


def _rss(got: Collected, fault_at: float) -> tuple[float | None, float | None]:
    """(growth at the end, peak growth) of the worst process, against its last sample before the fault."""
    growth: list[float] = []
    peak: list[float] = []
    for rep in got.reports:
        before = [mib for t, mib in rep.rss if t <= fault_at]
        later = [mib for t, mib in rep.rss if t > fault_at]
        if not before or not later:
            continue
        growth.append(later[-1] - before[-1])
        peak.append(max(later) - before[-1])
    return (max(growth) if growth else None, max(peak) if peak else None)


def _inject(fault: Fault, length: float, proxy: Proxy, setup: Setup, pg: PrivatePostgres | None,
            procs: list[mp.Process]) -> None:
    """Do the fault; for one that lasts, wait `length` and heal it."""
    action = fault.action
    if action == "refuse":
        proxy.do("mode", "refuse")
        proxy.do("shut")
    elif action == "reset":
        proxy.do("mode", "refuse")
        proxy.do("cut", True)
    elif action in ("pause", "delay"):
        proxy.do("mode", action)
    elif action == "cut":
        proxy.do("cut", True)
    elif action == "pgrestart":
        assert pg is not None
        pg.restart()
    elif action == "hubkill":
        os.kill(procs[0].pid, signal.SIGKILL)
    if action == "rejectq":
        with RejectQueue(setup.exchange):
            time.sleep(length)
    elif action in ("refuse", "reset", "pause", "delay", "none"):
        time.sleep(length)
        proxy.do("mode", "pass")


def run_fault(name: str, outbox_on: bool, run: Run, pg: PrivatePostgres | None) -> Outcome:
    fault = FAULTS[name]
    setup = Setup.create(base=pg.dsn) if pg else Setup.create()
    proxy = Proxy()
    arrivals = Arrivals(setup.queue)
    try:
        conf = setup.config(proxy.port, outbox_on, timeout=run.timeout, connect_timeout=run.connect_timeout,
                            retry_interval=run.retry_interval, heartbeat=run.heartbeat,
                            max_pending=run.max_pending)
        length = run.length(fault)
        total = run.before + length + run.after
        load = Load(run.procs, run.threads, 0, run.think, seconds=total, linger=run.linger, conf=conf,
                    dsn=setup.dsn)
        procs, results = start_load(load)
        time.sleep(run.before)
        fault_at = time.time()
        _inject(fault, length, proxy, setup, pg, procs)
        heal = time.time()
        cpu = CpuSplit(min(AFTER_WINDOW, run.after)).start()  # the same window as `after` below
        got = collect_load(load, procs, results, total + run.linger + 30)
        reqs = got.reqs
        committed = {i for row in setup.sql("SELECT msg_ids FROM ledger") for i in row[0]}
        arrivals.wait_for(committed, run.drain_wait)
        arrivals.drain(run.drain_wait)  # every copy counted, even when the consumer is behind a storm
        times = dict(arrivals.times)
        delivered = committed & set(times)
        dups = sum(len(v) - 1 for k, v in times.items() if k in committed)
        # how late a duplicate came: its arrival after the first copy's (what a consumer's dedup must span)
        lags = [max(v) - min(v) for k, v in times.items() if k in committed and len(v) > 1]
        print(f"# {name} outbox {'on' if outbox_on else 'off'}: {len(lags)} duplicated ids, latest duplicate "
              f"{max(lags) if lags else 0:.3f} s after its first copy", flush=True)
        window_end = heal if length else fault_at + 5
        during = [r.plugin for r in reqs if fault_at <= r.start <= window_end]
        after = [r.plugin for r in reqs if heal <= r.start <= heal + min(AFTER_WINDOW, run.after)]
        after_ids = [i for r in reqs if r.start >= heal for i in r.ids]
        firsts = [min(times[i]) for i in after_ids if i in times]
        normal_after = (min(firsts) - heal) if firsts else None
        backlog_ids = [i for r in reqs if r.start <= heal for i in r.ids]
        last = [min(times[i]) for i in backlog_ids if i in times]
        backlog_after = (max(last) - heal) if last and len(last) == len(backlog_ids) else None
        growth, peak = _rss(got, fault_at)
        left = setup.sql(f"SELECT count(*) FROM {outbox.TABLE}")[0][0] if outbox_on else 0
        return Outcome(name, outbox_on, len(committed), len(delivered), len(committed - delivered), dups,
                       stats_ms(during), normal_after, backlog_after, len(reqs), after=stats_ms(after),
                       after_requests=len(after), losses=sum(max(0, rep.connects - 1) for rep in got.reports),
                       rss_growth=growth, rss_peak=peak, settled_down=all(rep.idle for rep in got.reports),
                       outbox_left=left, timeout=run.timeout, given_up=sum(rep.given_up for rep in got.reports),
                       cpu=cpu.join())
    finally:
        arrivals.stop()
        proxy.close()
        setup.drop()
