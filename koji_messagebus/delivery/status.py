"""Per-process figures for `koji-messagebus status`: written by each hub process's sender thread,
read by the command.

Why files: the figures live in the hub's processes (mod_wsgi daemons), which serve no other
port; a small JSON file per process in a runtime directory ([status] dir, 0750, owned by the
httpd user) costs the hub nothing on the request path and needs no listener.  The sender thread
writes its file (atomically: a temporary file renamed over it) only when a figure changed, at
most every WRITE_EVERY seconds, and never wakes up for it when nothing happens.  A process that
exits cleanly removes its file; a process that died leaves it, and `status` shows it as gone (its
pid is not running, or runs another program) and removes it.
"""

from __future__ import annotations

import atexit
import json
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from koji_messagebus.log import log

WRITE_EVERY = 2.0  # seconds: the most often a process rewrites its file
RETRY_AFTER = 60.0  # seconds before trying again after a failed write (a missing or read-only dir)
WAIT_WINDOW = 60.0  # request waits of the last minute make p50/p99
WAIT_SAMPLES = 4096  # ... at most this many (the newest)
SUFFIX = ".json"
FORMAT = 1


def proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the pid it
    tells a live process from a new one that reuses a dead one's pid; None without /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


class Waits:
    """Request waits after COMMIT (seconds), appended from hub threads without a lock (deque.append
    is atomic); read by the sender thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._samples: deque[tuple[float, float]] = deque(maxlen=WAIT_SAMPLES)
        self.count = 0  # all requests since start: part of "the figures changed"

    def add(self, seconds: float) -> None:
        self._samples.append((self.clock(), seconds))
        self.count += 1

    def quantiles(self) -> tuple[float | None, float | None]:
        """(p50, p99) of the last WAIT_WINDOW seconds; None without requests."""
        since = self.clock() - WAIT_WINDOW
        recent = sorted(s for t, s in list(self._samples) if t >= since)
        if not recent:
            return None, None
        return _quantile(recent, 0.5), _quantile(recent, 0.99)


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def snapshot(sender: Any) -> dict[str, Any]:
    """What a process's file holds: the figures of its sender.SenderThread."""
    conn = sender.connection
    held, oldest = sender.held_summary()
    p50, p99 = sender.waits.quantiles()
    address = getattr(conn, "address", None)
    outcomes, last_error = sender.outcomes, sender.last_error
    return {
        "format": FORMAT, "pid": os.getpid(), "proc_start": proc_start(os.getpid()), "written": time.time(),
        "config": sender.config.path, "state": sender.state.value, "exchange": sender.config.exchange.name,
        "broker": str(conn.endpoint) if conn is not None else None,
        "address": address() if callable(address) else None,
        "published": outcomes["accepted"], "released": outcomes["released"],
        "rejected": outcomes["rejected"] + outcomes["modified"], "lost": sender.lost,
        "held": held, "held_oldest": oldest, "connects": sender.connects,
        "last_error": last_error[1] if last_error else None, "last_error_at": last_error[0] if last_error else None,
        "wait_p50": p50, "wait_p99": p99, "requests": sender.waits.count,
    }


class StatusFile:
    """One process's file; `tick()` is called by the sender thread after each step."""

    def __init__(self, directory: str, snapshot: Callable[[], dict[str, Any]],
                 clock: Callable[[], float] = time.monotonic):
        self.directory = directory
        self.snapshot = snapshot
        self.clock = clock
        self._key: Any = None
        self._dirty = False
        self._next = 0.0
        self._pid = 0
        self._said = False

    def path(self, pid: int | None = None) -> str:
        return os.path.join(self.directory, f"{pid or os.getpid()}{SUFFIX}")

    def tick(self, key: Any) -> None:
        """`key`: the figures that matter, cheap to compare; the file is written when it changed."""
        if key != self._key:
            self._key, self._dirty = key, True
        if self._dirty and self.clock() >= self._next:
            self._dirty = False
            self._next = self.clock() + WRITE_EVERY
            self._write()

    def wake_in(self) -> float | None:
        """Seconds until a pending write is due (the sender's select() timeout), None if none is."""
        return max(0.0, self._next - self.clock()) if self._dirty else None

    def _write(self) -> None:
        pid = os.getpid()
        try:
            data = self.snapshot()
            os.makedirs(self.directory, mode=0o750, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{pid}.", dir=self.directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(data, fh, sort_keys=True)
                os.chmod(tmp, 0o640)
                os.replace(tmp, self.path(pid))
            except BaseException:
                with _suppress():
                    os.unlink(tmp)
                raise
        except Exception as exc:  # noqa: BLE001 - the figures are a convenience: never hurt the sender
            self._next = self.clock() + RETRY_AFTER
            if not self._said:
                self._said = True
                log.warning("cannot write the status file in %s (%s); `koji-messagebus status` will not show "
                            "this process; [status] dir names the directory", self.directory, exc)
            return
        if self._pid != pid:
            self._pid = pid
            atexit.register(self.remove, pid)

    def remove(self, pid: int | None = None) -> None:
        """A clean exit: the file goes (only the process that wrote it removes it, not a forked child)."""
        pid = pid or self._pid
        if not pid or pid != os.getpid():
            return
        with _suppress():
            os.unlink(self.path(pid))


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)


# ---- the reader's side -----------------------------------------------------------------------------
@dataclass
class Process:
    """One hub process as its file tells; `gone` when the process is no longer running."""

    pid: int
    data: dict[str, Any] = field(default_factory=dict)
    gone: bool = False

    @property
    def connected(self) -> bool:
        return not self.gone and self.data.get("state") == "up"

    def held_age(self, now: float) -> float | None:
        oldest = self.data.get("held_oldest")
        return None if oldest is None or not self.data.get("held") else max(0.0, now - float(oldest))


def alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: running
    now = proc_start(pid)
    return started is None or now is None or now == started


def read_processes(directory: str, clean: bool = True) -> list[Process]:
    """Every process file in `directory`, oldest pid first; files of dead processes are removed
    (with `clean`) and returned as gone.  A missing directory means no process has written yet."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    found: list[Process] = []
    for name in names:
        if not name.endswith(SUFFIX) or name.startswith(".") or not name[:-len(SUFFIX)].isdigit():
            continue
        path = os.path.join(directory, name)
        pid = int(name[:-len(SUFFIX)])
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            continue  # removed meanwhile, or not ours
        if not isinstance(data, dict):
            continue
        proc = Process(pid, data, gone=not alive(pid, data.get("proc_start")))
        if proc.gone and clean:
            with _suppress():
                os.unlink(path)
        found.append(proc)
    return sorted(found, key=lambda p: p.pid)
