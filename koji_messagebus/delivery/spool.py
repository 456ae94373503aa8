"""The spool: a durable local hand-over of the messages a hub process still holds when it exits
without the outbox (the broker down or slow for the whole exit budget), sent by a later process.

Why: without the outbox, a hub process keeps unsent messages in memory; httpd recycles and stops
processes all the time, so an outage while children recycle would otherwise lose what they hold.
At a clean exit the process writes its held messages, already encoded, to one file in
`[broker] spool_dir` (a temporary file, fsync, atomic rename, fsync of the directory): a resend is
byte-identical and keeps its message-id.  A crash runs no exit hook: only the outbox survives that.

A later hub process sends spooled files on its own `Resender` thread, woken by the sender thread
each time it connects (its first connect, a recovery; never on a timer, never on the request path),
in batches of BATCH, the next only once the previous settled, so a request's own messages wait at
most one batch behind them.  Files are claimed by an atomic rename to a name holding the claimer's
pid (and its start time, so a reused pid is not taken for alive): two processes never send the
same file; a claim whose process is gone is taken over (by a rename too).  A file is deleted once
all its messages are settled; what a process claimed but did not send before exiting goes into its
own exit file, and only then is the claimed file deleted (a crash in between sends some twice,
never loses one).  `koji-messagebus spool flush` sends them from the command line.

File name: `<unix ms>-<pid>-<count>.spool` (the count and age are read from the name, for
`status`); claimed: `<name>.claimed-<pid>-<start>`.  Content: JSON, the payloads in base64.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from koji_messagebus.delivery.status import alive, proc_start
from koji_messagebus.format.wire import Outgoing
from koji_messagebus.log import log

if TYPE_CHECKING:
    from koji_messagebus.config.settings import Config
    from koji_messagebus.delivery.sender import SenderThread
    from koji_messagebus.delivery.ticket import Ticket

FORMAT = 1
SUFFIX = ".spool"
CLAIMED = ".claimed-"
DIR_MODE = 0o750
FILE_MODE = 0o640
BATCH = 100  # messages a Resender submits at once (a request's messages wait at most this many)
SETTLE_POLL = 0.01  # seconds between looks at a batch the broker is still settling (while resending only)


class SpoolError(Exception):
    """A spool file that cannot be written or read; the message says which and why."""


@dataclass(frozen=True)
class Entry:
    """One spool file, as its name tells (no read of its content)."""

    path: str
    count: int
    written: float  # wall time
    claimer: tuple[int, str | None] | None = None  # (pid, start) of the process that claimed it


@dataclass(eq=False)
class Claim:
    """A file this process claimed: its messages, how many were handed to the sender, the tickets."""

    path: str
    messages: list[Outgoing]
    submitted: int = 0
    tickets: list[Ticket] = field(default_factory=list)

    def rest(self) -> list[Outgoing]:
        return self.messages[self.submitted:]


def parse_name(directory: str, name: str) -> Entry | None:
    """The Entry of a spool file name; None for anything else (temporary files, strangers)."""
    base, claimer = name, None
    if CLAIMED in name:
        base, _, tail = name.partition(CLAIMED)
        pid, _, start = tail.partition("-")
        if not pid.isdigit():
            return None
        claimer = (int(pid), start or None)
    if not base.endswith(SUFFIX) or base.startswith("."):
        return None
    parts = base[:-len(SUFFIX)].split("-")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return Entry(os.path.join(directory, name), int(parts[2]), int(parts[0]) / 1000.0, claimer)


def encode_file(messages: Iterable[Outgoing], pid: int, written: float) -> bytes:
    items = [{"id": m.msg_id, "created": m.created, "type": m.type, "routing_key": m.routing_key,
              "payload": base64.b64encode(m.payload).decode("ascii")} for m in messages]
    return json.dumps({"format": FORMAT, "pid": pid, "written": written, "messages": items},
                      separators=(",", ":")).encode("utf-8")


def decode_file(data: bytes, path: str = "") -> list[Outgoing]:
    try:
        doc = json.loads(data.decode("utf-8"))
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, not {FORMAT}")
        return [Outgoing(str(m["id"]), float(m["created"]), str(m["type"]), str(m["routing_key"]),
                         base64.b64decode(m["payload"], validate=True)) for m in doc["messages"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SpoolError(f"{path or 'spool file'} is not a readable spool file: {exc}") from None


class Spool:
    """One spool directory: write, list, claim, read and delete spool files."""

    def __init__(self, directory: str, pid: Callable[[], int] = os.getpid):
        self.directory = directory
        self._pid = pid
        self._last_ms = 0  # this process's files keep their order: one millisecond apart at least
        self._naming = threading.Lock()

    def _me(self) -> str:
        pid = self._pid()
        return f"{pid}-{proc_start(pid) or ''}"

    def write(self, messages: list[Outgoing]) -> str:
        """Write one file durably (fsync, rename, fsync of the directory); its path.  OSError if not."""
        os.makedirs(self.directory, DIR_MODE, exist_ok=True)
        pid = self._pid()
        with self._naming:  # hub threads of one process spool at once (requests ending during the exit)
            ms = max(int(time.time() * 1000), self._last_ms + 1)  # two files in one millisecond (tests, flush)
            while True:
                name = f"{ms}-{pid}-{len(messages)}{SUFFIX}"
                path = os.path.join(self.directory, name)
                if not os.path.exists(path):
                    break
                ms += 1  # a pid reused within the same millisecond
            self._last_ms, written = ms, ms / 1000
        tmp = os.path.join(self.directory, f".{name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(encode_file(messages, pid, written))
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self._sync_dir()
        return path

    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[Entry]:
        """The spool files, oldest first (a missing directory: none)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        found = [e for e in (parse_name(self.directory, n) for n in names) if e is not None]
        return sorted(found, key=lambda e: (e.written, e.path))

    def summary(self) -> tuple[int, int, float | None]:
        """(files, messages, wall time of the oldest) for `status`."""
        entries = self.entries()
        return len(entries), sum(e.count for e in entries), min((e.written for e in entries), default=None)

    def claim(self) -> Claim | None:
        """Claim the oldest file nobody alive holds (atomic rename); None when there is none."""
        me = self._me()
        for entry in self.entries():
            if entry.claimer is not None and alive(*entry.claimer):
                continue
            base = os.path.basename(entry.path).partition(CLAIMED)[0]
            target = os.path.join(self.directory, f"{base}{CLAIMED}{me}")
            if entry.claimer is not None and entry.path == target:
                continue  # our own claim (a Resender keeps its claims in memory)
            try:
                os.rename(entry.path, target)
            except FileNotFoundError:
                continue  # another process took it first
            try:
                with open(target, "rb") as fh:
                    messages = decode_file(fh.read(), target)
            except (OSError, SpoolError) as exc:
                log.error("spool file %s cannot be read, left as it is: %s", target, exc)
                continue
            return Claim(target, messages)
        return None

    def done(self, claim: Claim) -> None:
        """Every message of the file is settled: delete it."""
        try:
            os.unlink(claim.path)
        except FileNotFoundError:
            pass


def describe_error(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class Resender:
    """Sends spooled files through a process's sender thread, woken by `kick()` (the sender's
    on_connect); takes part in the process's exit through `hand_over()`."""

    def __init__(self, spool: Spool, sender: SenderThread):
        self.spool = spool
        self.sender = sender
        self._kick = threading.Event()
        self._lock = threading.Lock()
        self._claims: list[Claim] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.sent = 0  # messages of spool files settled by this process (tests, logs)

    def kick(self) -> None:
        """Look at the spool now (called on the sender thread: returns at once)."""
        with self._lock:
            if self._stopping:
                return
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._claims = []
                self._thread = threading.Thread(target=self._run, name="messagebus-spool", daemon=True)
                self._thread.start()
        self._kick.set()

    def _run(self) -> None:
        while True:
            self._kick.wait()
            self._kick.clear()
            if self._stopping:
                return
            try:
                self._pass()
            except Exception:  # noqa: BLE001 - never end the thread; the files stay for the next look
                log.exception("sending spooled messages failed")

    def _pass(self) -> None:
        from koji_messagebus.delivery.ticket import State

        while not self._stopping and self.sender.state is State.UP:
            with self._lock:
                claim = next(iter(self._claims), None)
                if claim is None:
                    claim = self.spool.claim()
                    if claim is None:
                        return
                    self._claims.append(claim)
                    log.info("sending %d spooled message(s) from %s", len(claim.messages), claim.path)
            if not self._send(claim):
                return  # the broker went away: the claim stays ours; the next connect goes on
            with self._lock:
                self.spool.done(claim)
                self._claims.remove(claim)
                self.sent += len(claim.messages)

    def _send(self, claim: Claim) -> bool:
        """Submit the claim's messages a batch at a time; True once all are settled."""
        while True:
            if not self._settle(claim):
                return False
            with self._lock:
                if self._stopping:
                    return False
                batch = claim.rest()[:BATCH]
                if not batch:
                    return True
                claim.tickets.append(self.sender.submit(batch))
                claim.submitted += len(batch)

    def _settle(self, claim: Claim) -> bool:
        """Wait (at most the sender's timeout) until the claim's submitted messages are settled."""
        deadline = time.monotonic() + self.sender.timeout
        for ticket in claim.tickets:
            while len(ticket.result.accepted) + len(ticket.result.lost) < len(ticket.messages):
                if self._stopping or time.monotonic() >= deadline or self.sender.down:
                    return False
                time.sleep(SETTLE_POLL)
        claim.tickets.clear()
        return True

    def stop(self) -> None:
        """Exit: submit nothing more (what is submitted stays with the sender)."""
        with self._lock:
            self._stopping = True
        self._kick.set()

    def hand_over(self, held: list[Outgoing], budget: float) -> None:
        """Exit, after the sender stopped: write what it still held and what this process claimed but
        did not submit to one spool file, then delete the claimed files; the ERROR line when not."""
        with self._lock:
            self._stopping = True
            claims = list(self._claims) if self._pid == os.getpid() else []
            self._claims = []
        messages = held + [m for c in claims for m in c.rest()]
        if not hand_over(self.spool, messages, budget):
            return  # not written: the claimed files stay, a later process takes them over
        for claim in claims:
            self.spool.done(claim)


def hand_over(spool: Spool | None, messages: list[Outgoing], budget: float, late: bool = False) -> bool:
    """Write `messages` to the spool (True), or log them as lost, one ERROR with the reason.
    `late`: committed by a request that ended after the process's exit had closed its sender."""
    from koji_messagebus.format.wire import describe

    if not messages:
        return True
    why = ("their request ended after the process's exit had closed its sender" if late
           else f"the broker did not take them within timeout = {budget:g}s")
    if spool is None:
        reason = "no spool: [broker] spool_dir is empty"
    else:
        try:
            path = spool.write(messages)
        except OSError as exc:
            reason = f"cannot write to the spool {spool.directory}: {describe_error(exc)}"
        else:
            log.warning("%d message(s) not sent at process exit (%s): spooled to %s; the next hub process "
                        "sends them", len(messages), why, path)
            return True
    log.error("lost at process exit: %s: %s (%s; enable the outbox to keep them)", describe(messages), why, reason)
    return False


def for_config(config: Config, sender: SenderThread) -> Resender | None:
    """The process's Resender, registered on the sender's connects; None when spool_dir is empty."""
    directory = config.broker.spool_dir
    if not directory:
        return None
    resender = Resender(Spool(directory), sender)
    sender.on_connect.append(resender.kick)
    return resender


def flush(spool: Spool, send: Callable[[list[Outgoing]], Any],
          progress: Callable[[int], None] | None = None) -> tuple[int, int, int]:
    """`spool flush`: claim, send and delete every file nobody alive holds.  `send` returns a
    SendResult.  What a file leaves unsent is written to a new file before the claimed one is
    deleted.  Returns (files done, messages settled, messages left)."""
    files = settled = left = 0
    while True:
        claim = spool.claim()
        if claim is None:
            return files, settled, left
        result = send(claim.messages)
        done = len(result.accepted) + len(result.lost)
        settled += done
        if progress is not None:
            progress(done)
        if result.unsent:
            spool.write(list(result.unsent))
            spool.done(claim)
            left += len(result.unsent)
            return files, settled, left
        spool.done(claim)
        files += 1
