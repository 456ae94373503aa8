"""The fault-under-load harness: N hub processes (devkit/load.py) sending through the fault
proxy while a fault is injected, every message counted against the hubs' own ledger.  bench/faults.py
measures with it; tests/integration/test_sender_faults.py runs its short version.  The faults are
listed in bench/faults.py's docstring."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devkit.faultproxy import FaultProxy
from devkit.load import Arrivals, Load, Req, Setup, collect_load, start_load, stats_ms

FAULTS = ("stop", "kill9", "sigstop", "cut", "pgrestart", "hubkill")
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/usr/bin"))


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


@dataclass
class Outcome:
    fault: str
    outbox: bool
    committed: int
    delivered: int
    lost: int
    duplicates: int
    during: tuple[float, float, float]
    normal_after: float | None
    backlog_after: float | None
    requests: int

    def row(self) -> str:
        na = f"{self.normal_after:.2f}" if self.normal_after is not None else "never"
        ba = f"{self.backlog_after:.2f}" if self.backlog_after is not None else "never"
        d = self.during
        return (f"| {self.fault} | {'on' if self.outbox else 'off'} | {self.committed} | {self.delivered} | "
                f"{self.lost} | {self.duplicates} | {d[0]:.1f} / {d[1]:.1f} / {d[2]:.1f} | {na} | {ba} | "
                f"{self.requests} |")


def run_fault(fault: str, outbox_on: bool, args: argparse.Namespace, pg: PrivatePostgres | None) -> Outcome:
    setup = Setup.create(base=pg.dsn) if pg else Setup.create()
    proxy = Proxy()
    arrivals = Arrivals(setup.queue)
    try:
        conf = setup.config(proxy.port, outbox_on, timeout=args.timeout, connect_timeout=args.connect_timeout,
                            retry_interval=args.retry_interval, heartbeat=args.heartbeat,
                            max_pending=args.max_pending)
        before, length = args.before, args.fault_seconds
        if fault == "sigstop":
            length = max(length, args.sigstop_seconds)
        total = before + length + args.after
        load = Load(args.procs, args.threads, 0, args.think, seconds=total, design=args.design, conf=conf,
                    dsn=setup.dsn)
        procs, results = start_load(load)
        time.sleep(before)
        fault_at = time.time()
        if fault == "stop":
            proxy.do("mode", "refuse")
            proxy.do("cut", False)
        elif fault == "kill9":
            proxy.do("mode", "refuse")
            proxy.do("cut", True)
        elif fault == "sigstop":
            proxy.do("mode", "pause")
        elif fault == "cut":
            proxy.do("cut", True)
        elif fault == "pgrestart":
            assert pg is not None
            pg.restart()
        elif fault == "hubkill":
            os.kill(procs[0].pid, signal.SIGKILL)
        if fault in ("stop", "kill9", "sigstop"):
            time.sleep(length)
            proxy.do("mode", "pass")
        heal = time.time()
        reqs: list[Req] = collect_load(load, procs, results, total + 60)
        committed = {i for row in setup.sql("SELECT msg_ids FROM ledger") for i in row[0]}
        arrivals.wait_for(committed, args.drain_wait)
        times = dict(arrivals.times)
        delivered = committed & set(times)
        dups = sum(len(v) - 1 for k, v in times.items() if k in committed)
        # how late a duplicate came: its arrival after the first copy's (what a consumer's dedup must span)
        lags = [max(v) - min(v) for k, v in times.items() if k in committed and len(v) > 1]
        print(f"# {fault} outbox {'on' if outbox_on else 'off'}: {len(lags)} duplicated ids, latest duplicate "
              f"{max(lags) if lags else 0:.3f} s after its first copy", flush=True)
        window_end = heal if fault in ("stop", "kill9", "sigstop") else fault_at + 5
        during = [r.plugin for r in reqs if fault_at <= r.start <= window_end]
        after_ids = [i for r in reqs if r.start >= heal for i in r.ids]
        firsts = [min(times[i]) for i in after_ids if i in times]
        normal_after = (min(firsts) - heal) if firsts else None
        backlog_ids = [i for r in reqs if r.start <= heal for i in r.ids]
        last = [min(times[i]) for i in backlog_ids if i in times]
        backlog_after = (max(last) - heal) if last and len(last) == len(backlog_ids) else None
        return Outcome(fault, outbox_on, len(committed), len(delivered), len(committed - delivered), dups,
                       stats_ms(during), normal_after, backlog_after, len(reqs))
    finally:
        arrivals.stop()
        proxy.close()
        setup.drop()
