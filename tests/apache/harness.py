"""Drive the private httpd of scripts/services/apache.sh from a test: its files, start and stop,
its processes, a bounded XML-RPC client loop, and the ledger of what the hub committed.

The ledger: the hub's own table `apache_ledger` holds one row per committed `tagBuild(seq)` (written
in the hub's transaction, so a row exists exactly when the call committed); the client records
what it asked and what it was told; the consumer's arrivals are counted per seq (the build id of
the postTag message).  lost = committed seqs that never arrived; duplicates = arrivals beyond the
first; phantoms = arrivals of seqs that were rolled back (failTag in a multicall).
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import threading
import time
import xmlrpc.client
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

from koji_messagebus.transaction import outbox
from tests.support.hub import DSN, HUB_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("KMB_STATE_DIR", "/var/tmp/koji-messagebus"))
PORTS = {"prefork": 8761, "daemon": 8762}
SCHEMA = f"kmb_apache_{os.getpid()}"
FAILED_BASE = 1_000_000  # seqs of failTag: rolled back, must never arrive


class Instance:
    """One shape's private httpd (scripts/services/apache.sh <shape>)."""

    def __init__(self, shape: str):
        self.shape = shape
        self.name = f"apache-{shape}"
        self.dir = STATE / self.name
        self.port = PORTS[shape]
        self.url = f"http://127.0.0.1:{self.port}/kojihub"

    def write_app_files(self, hub_conf: str, messagebus_conf: str) -> None:
        """The hub's hub.conf and the plugin's config, readable by the httpd user only."""
        app = self.dir / "app"
        app.mkdir(parents=True, exist_ok=True)
        user = pwd.getpwnam("www-data")
        for name, text in (("hub.conf", hub_conf), ("messagebus.conf", messagebus_conf)):
            path = app / name
            path.write_text(text)
            os.chown(path, user.pw_uid, user.pw_gid)
            path.chmod(0o600)

    def fresh_spool(self) -> str:
        """An empty spool directory ([broker] spool_dir) the httpd user owns, 0750 as packaged."""
        spool = self.dir / "spool"
        subprocess.run(["rm", "-rf", str(spool)], check=True)
        spool.mkdir(parents=True)
        user = pwd.getpwnam("www-data")
        os.chown(spool, user.pw_uid, user.pw_gid)
        spool.chmod(0o750)
        return str(spool)

    def remove_app_files(self) -> None:
        """Back to apache.sh's defaults at the next start (a test's config names its own proxy)."""
        for name in ("hub.conf", "messagebus.conf"):
            (self.dir / "app" / name).unlink(missing_ok=True)

    def _script(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        """A fresh instance: stop a running one, truncate the error log, start (bounded)."""
        self.stop()
        log = self.dir / "error.log"
        if log.exists():
            log.write_text("")
        done = self._script("scripts/services/apache.sh", self.shape)
        if done.returncode:
            raise RuntimeError(f"apache.sh {self.shape} failed:\n{done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        self._script("scripts/services/stop.sh", self.name)

    def apachectl(self, command: str) -> None:
        subprocess.run([str(self.dir / "apachectl"), command], check=True, timeout=30,
                       capture_output=True)

    def parent_pid(self) -> int | None:
        try:
            return int((self.dir / "httpd.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def processes(self) -> set[int]:
        """The httpd parent and every process below it (children, mod_wsgi daemons)."""
        parent = self.parent_pid()
        if parent is None:
            return set()
        tree: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
        out, todo = set(), [parent]
        while todo:
            pid = todo.pop()
            if pid in out or not os.path.exists(f"/proc/{pid}"):
                continue
            out.add(pid)
            todo.extend(tree.get(pid, []))
        return out

    def graceful_stop(self, bound: float = 60.0) -> tuple[float, int]:
        """`apachectl graceful-stop`; returns (seconds until the last process of the instance is
        gone, how many processes there were).  Waits at most `bound` seconds."""
        procs = self.processes()
        start = time.monotonic()
        self.apachectl("graceful-stop")
        while time.monotonic() - start < bound:
            alive = {p for p in procs if _alive(p)}
            if not alive:
                break
            time.sleep(0.05)
        return time.monotonic() - start, len(procs)

    def error_log(self) -> str:
        try:
            return (self.dir / "error.log").read_text(errors="replace")
        except OSError:
            return ""


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


#: the plugin's one ERROR line when the broker goes down: the report of an outage, not a failure
BROKER_DOWN = "koji.plugin.messagebus: messagebus: broker unavailable: "


#: the plugin's ERROR line for messages held in memory (outbox off) that a process could not
#: send before it exited: "lost at process exit: N message(s) (...)"
LOST_AT_EXIT = re.compile(r"koji\.plugin\.messagebus: messagebus: lost at process exit: (\d+) message")


#: the plugin's WARNING when a process exits holding messages it hands to the spool
SPOOLED_AT_EXIT = re.compile(r"koji\.plugin\.messagebus: messagebus: (\d+) message\(s\) not sent at process exit "
                             r"\([^)]*\): spooled to ")


def spooled(log: str) -> int:
    """How many messages processes wrote to the spool at exit."""
    return sum(int(m.group(1)) for m in SPOOLED_AT_EXIT.finditer(log))


def reported_lost(log: str) -> int:
    """How many messages the plugin reported lost at process exit."""
    return sum(int(m.group(1)) for m in LOST_AT_EXIT.finditer(log))


def plugin_errors(log: str, outage: bool = False, lost_reports: bool = False) -> list[str]:
    """Lines of Apache's error log that say the plugin (or the hub app) failed: ERROR or
    CRITICAL records of the koji loggers, Python tracebacks, mod_wsgi's failures to load.  With
    `outage` the plugin's report that the broker is unavailable is expected and not counted; with
    `lost_reports` neither are its reports of messages lost at exit (counted by reported_lost)."""
    bad = []
    for line in log.splitlines():
        if (outage and BROKER_DOWN in line) or (lost_reports and LOST_AT_EXIT.search(line)):
            continue
        if ("[ERROR]" in line or "[CRITICAL]" in line or "Traceback" in line
                or "Failed to exec Python script" in line or "Exception occurred processing WSGI script" in line):
            bad.append(line)
    return bad


# ---- the database: the hub's tables in a schema of this process ------------------------------
def hub_dsn() -> str:
    return f"{DSN} options='-c search_path={SCHEMA}'"


def reset_schema() -> None:
    """A clean schema: kojihub's events, the outbox table, the ledger."""
    from tests.apache.hubapp import LEDGER_SCHEMA

    cnx = psycopg2.connect(DSN)
    cnx.autocommit = True
    with cnx.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        cur.execute(f"CREATE SCHEMA {SCHEMA}")
        cur.execute(f"SET search_path = {SCHEMA}")
        cur.execute(HUB_SCHEMA)
        cur.execute(outbox.SCHEMA)
        cur.execute(LEDGER_SCHEMA)
    cnx.close()


def drop_schema() -> None:
    cnx = psycopg2.connect(DSN)
    cnx.autocommit = True
    with cnx.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    cnx.close()


def query(sql: str) -> list[tuple]:
    cnx = psycopg2.connect(hub_dsn())
    try:
        with cnx.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        cnx.close()


# ---- the client loop ------------------------------------------------------------------------
@dataclass
class Ledger:
    """What the client asked and was told; the committed set comes from the hub's table."""

    asked: list[int] = field(default_factory=list)
    ok: list[int] = field(default_factory=list)
    failed_asked: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def committed(self) -> dict[int, int]:
        """seq -> PID of the process that committed it."""
        return dict(query("SELECT seq, pid FROM apache_ledger"))


def client_loop(url: str, calls: int, threads: int, on_progress: Callable[[int], None] | None = None,
                multicall_every: int = 10, pause: float = 0.0, first_seq: int = 1) -> Ledger:
    """`calls` hub requests (seq from `first_seq`) from `threads` client threads: tagBuild(seq), and every
    `multicall_every`-th one a multiCall of tagBuild(seq) and failTag (rolled back).  Each request is
    a new connection (httpd has KeepAlive Off), so children recycle by MaxConnectionsPerChild.
    `on_progress(n)` runs in the calling thread as requests complete (for faults at set points);
    each client thread waits `pause` seconds between its requests (so that a fault lasts a while)."""
    ledger = Ledger()
    counter = iter(range(first_seq, first_seq + calls))
    done = [0]

    def work() -> None:
        proxy = xmlrpc.client.ServerProxy(url, allow_none=True)
        while True:
            with ledger.lock:
                seq = next(counter, None)
            if seq is None:
                return
            try:
                if seq % multicall_every == 0:
                    with ledger.lock:
                        ledger.asked.append(seq)
                        ledger.failed_asked.append(FAILED_BASE + seq)
                    result = proxy.multiCall([{"methodName": "tagBuild", "params": [seq]},
                                              {"methodName": "failTag", "params": [FAILED_BASE + seq]}])
                    good = result[0] == [seq] and "faultCode" in result[1]
                else:
                    with ledger.lock:
                        ledger.asked.append(seq)
                    good = proxy.tagBuild(seq) == seq
                with ledger.lock:
                    if good:
                        ledger.ok.append(seq)
                    else:
                        ledger.errors.append(f"{seq}: unexpected result")
            except Exception as exc:  # noqa: BLE001 - recorded: the ledger decides what committed
                with ledger.lock:
                    ledger.errors.append(f"{seq}: {type(exc).__name__}: {exc}")
            finally:
                with ledger.lock:
                    done[0] += 1
            time.sleep(pause)

    workers = [threading.Thread(target=work, name=f"client-{i}", daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 300  # bounded: the loop itself never takes this long
    last = -1
    while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
        with ledger.lock:
            n = done[0]
        if on_progress and n != last:
            on_progress(n)
            last = n
        time.sleep(0.02)
    for w in workers:
        w.join(1)
    if on_progress:
        on_progress(calls)
    return ledger


def arrivals(messages) -> Counter:
    """seq -> how many times it arrived (the postTag message's build id)."""
    seen: Counter = Counter()
    for msg in messages:
        body = msg.body if isinstance(msg.body, dict) else {}
        build = body.get("build") or {}
        if isinstance(build, dict) and "id" in build:
            seen[int(build["id"])] += 1
    return seen
