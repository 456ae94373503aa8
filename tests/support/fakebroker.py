"""A scripted broker for unit tests of the sender thread and its quarantine's probe: what cannot be had
from a real broker on demand (a connection refused for exactly three tries, a message that kills
exactly its own session, a settlement held until the test releases it).

`FakeBroker` decides; `FakePipe` (sender's Pipe) and `FakeConnection` (quarantine.BrokerConnection)
talk to it.  A pipe's `fileno()` is one end of a socketpair the broker writes to when it has
something for the pipe, so the sender thread's select() wakes as it would on a real socket.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from koji_messagebus.amqp import BatchOutcome, BrokerError, Kind, Settlement
from koji_messagebus.config.sections import Endpoint as BrokerEndpoint
from koji_messagebus.config.settings import Config
from koji_messagebus.format.wire import Outgoing


def msgs(*ids: str, type: str = "Tag", created: float = 0.0) -> list[Outgoing]:
    return [Outgoing(i, created, type, f"koji.event.{type}.{i}", i.encode()) for i in ids]


@dataclass
class FakeBroker:
    """`down`: connects fail (a count: fail that many times, True: always); `hold`: settlements wait
    for release(); `delay`: each settlement comes this many seconds after its send (a slow broker);
    `credit`: the link credit a pipe reports; `poison`: payloads that kill the connection they are
    sent on (alone or not); `reject`: payloads answered `rejected`."""

    down: int | bool = 0
    hold: bool = False
    delay: float = 0.0
    credit: int = 1_000_000
    poison: set[bytes] = field(default_factory=set)
    reject: set[bytes] = field(default_factory=set)
    down_kind: Kind = Kind.UNREACHABLE
    connects: int = 0
    attempts: int = 0
    received: list[bytes] = field(default_factory=list)  # payloads accepted, in order
    pipes: list[FakePipe] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def connect(self, endpoint: BrokerEndpoint) -> None:
        with self.lock:
            self.attempts += 1
            if self.down is True or (self.down and self.attempts <= self.down):
                raise BrokerError(self.down_kind, f"broker {endpoint.host}:{endpoint.port} unreachable (fake)")
            self.connects += 1

    def outcome(self, payload: bytes) -> str | None:
        """accepted / rejected, or None: the connection dies."""
        if payload in self.poison:
            return None
        if payload in self.reject:
            return "rejected"
        self.received.append(payload)
        return "accepted"

    def release(self) -> None:
        """Settle what is held (hold stays as it is)."""
        for pipe in list(self.pipes):
            pipe.release()

    def pipe(self, config: Config, endpoint: BrokerEndpoint) -> FakePipe:
        p = FakePipe(self, endpoint)
        self.pipes.append(p)
        return p

    def connection(self, config: Config, endpoint: BrokerEndpoint) -> FakeConnection:
        return FakeConnection(self, endpoint)


class FakePipe:
    def __init__(self, broker: FakeBroker, endpoint: BrokerEndpoint):
        self.broker = broker
        self.endpoint = endpoint
        self.on_settled: Callable[[str, Settlement], None] | None = None
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._tags = 0
        self._started: list[tuple[str, bytes, float]] = []
        #: how many messages each poll found started and not yet settled (what the sender had in flight)
        self.batches: list[int] = []
        self._released = False
        self._error: BrokerError | None = None
        self._lock = threading.Lock()

    def open(self, deadline: float) -> None:
        self.broker.connect(self.endpoint)

    def start(self, payload: bytes) -> str:
        with self._lock:
            self._tags += 1
            tag = str(self._tags)
            self._started.append((tag, payload, time.monotonic()))
        if self.broker.delay:  # the answer comes later: a real socket is not readable before it
            timer = threading.Timer(self.broker.delay, self._signal)
            timer.daemon = True
            timer.start()
        else:
            self._signal()
        return tag

    def credit(self) -> int:
        with self._lock:
            return self.broker.credit - len(self._started)

    def _signal(self) -> None:
        """Make fileno() readable (once is enough: a full buffer is readable already)."""
        try:
            self._w.send(b"x")
        except OSError:
            pass

    def release(self) -> None:
        with self._lock:
            self._released = True
        self._signal()

    def poll(self) -> None:
        try:
            self._r.recv(4096)
        except (BlockingIOError, OSError):
            pass
        if self._error:
            raise self._error
        with self._lock:
            if self._started:
                self.batches.append(len(self._started))
            if self.broker.hold and not self._released:
                return
            self._released = False
            due = time.monotonic() - self.broker.delay
            n = next((i for i, s in enumerate(self._started) if s[2] > due), len(self._started))
            started, self._started = self._started[:n], self._started[n:]
        for tag, payload, _ in started:
            outcome = self.broker.outcome(payload)
            if outcome is None:
                self._error = BrokerError(Kind.REFUSED, "the broker ended the session (fake poison)")
                raise self._error
            if self.on_settled is not None:
                self.on_settled(tag, Settlement(outcome))

    def fileno(self) -> int:
        return self._r.fileno()

    def wants_write(self) -> bool:
        return False

    def healthy(self) -> bool:
        return self._error is None

    def close(self, wait: float = 1.0) -> None:
        self._error = self._error or BrokerError(Kind.CONNECTION_LOST, "closed")
        for s in (self._r, self._w):
            try:
                s.close()
            except OSError:
                pass

    @property
    def error(self) -> BrokerError | None:
        return self._error


class FakeConnection:
    """quarantine.BrokerConnection: a synchronous send (the probe's)."""

    def __init__(self, broker: FakeBroker, endpoint: BrokerEndpoint):
        self.broker = broker
        self.endpoint = endpoint
        self._error: BrokerError | None = None
        self.sends = 0

    def open(self, deadline: float) -> None:
        self.broker.connect(self.endpoint)

    def send(self, batch: list[Outgoing], deadline: float) -> BatchOutcome:
        self.sends += 1
        out = BatchOutcome()
        for i, msg in enumerate(batch):
            outcome = self.broker.outcome(msg.payload)
            if outcome is None:
                self._error = BrokerError(Kind.CONNECTION_LOST, "connection lost (fake poison)")
                out.unsettled = batch[i:]
                out.error = self._error
                return out
            if outcome == "accepted":
                out.accepted.append(msg)
            else:
                out.lost.append((msg, outcome))
        return out

    def healthy(self) -> bool:
        return self._error is None

    def close(self, wait: float = 1.0) -> None:
        self._error = self._error or BrokerError(Kind.CONNECTION_LOST, "closed")

    @property
    def error(self) -> BrokerError | None:
        return self._error
