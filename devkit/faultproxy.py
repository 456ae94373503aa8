"""A fault-injecting TCP proxy on loopback, between the plugin and the broker.

One thread runs a select() loop over the listening socket and every (client, upstream) pair.
Modes, for new and existing connections:

- ``pass``: forward both ways;
- ``pause``: stop forwarding (data stays in the proxy and the kernel buffers; new connections
  are accepted and held); ``resume()`` forwards what was held;
- ``silent``: new connections are accepted and never answered (what they send is discarded);
  existing ones keep flowing (``cut()`` them to force reconnections into the silence);
- ``refuse``: the listening socket is closed, so new connections are refused by the kernel;
- ``delay``: a slow broker: every chunk from the broker is held 1-2 s (``slow``, drawn per chunk)
  before it goes to the client, in order, nothing dropped; the client's bytes go on at once, so
  the broker takes messages at once and their settlements arrive late.

``cut()`` closes every connection now (RST by default); ``shut()`` closes them as a broker that
stops does: it reads nothing more from the clients, forwards what the broker still answers (the
settlements of what it had already taken) until it has been quiet a moment, then closes with a FIN,
so the broker never took a message whose settlement was lost; ``cut_after(n)`` forwards ``n`` more
bytes from clients to the broker, then cuts every connection once (a connection dying mid-batch);
``freeze()`` black-holes the existing connections only (a peer gone without a FIN, a dropped NAT
entry) while new ones pass.  ``delay`` (seconds, default 0) holds every chunk that long in each
direction before forwarding it: a broker on another host or site, on loopback.
"""

from __future__ import annotations

import random
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

MODES = ("pass", "pause", "silent", "refuse", "delay")
SHUT_QUIET = 0.5  # shut(): the broker silent this long (s) means it has answered all it took
SHUT_LIMIT = 3.0  # and a connection is closed this long after shut() at the latest
CHUNK = 65536


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket | None  # None: a silent connection
    to_up: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    eof: bool = False  # one side closed: flush what is buffered, then close both
    frozen: bool = False  # black-holed: nothing is forwarded, ever
    late_up: deque[tuple[float, bytes]] = field(default_factory=deque)  # (due, data) with a delay
    late_client: deque[tuple[float, bytes]] = field(default_factory=deque)
    closing: float = 0.0  # shut(): when; 0 = not closing
    heard: float = 0.0  # the broker's last bytes (monotonic), for shut()


class FaultProxy:
    """Listens on 127.0.0.1:<ephemeral port> and forwards to `upstream`."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5672), delay: float = 0.0,
                 slow: tuple[float, float] = (1.0, 2.0)):
        self.upstream = upstream
        self.delay = delay
        self.slow = slow  # mode "delay": each chunk from the broker held this long (s, uniform), in order
        self._rng = random.Random(1)
        self.mode = "pass"
        self.port = 0
        self.accepted = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.cuts = 0
        self._listener: socket.socket | None = None
        self._pairs: list[_Pair] = []
        self._cut_budget: int | None = None
        self._commands: list[tuple[Callable[[], None], threading.Event]] = []
        self._cmd_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)

    # ---- control (from the test's thread) ----------------------------------------------------
    def start(self) -> FaultProxy:
        self._listen()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._call(self._stop_now)
        self._thread.join(5)
        self._wake_r.close()
        self._wake_w.close()

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self._call(lambda: self._set_mode(mode))

    def resume(self) -> None:
        self.set_mode("pass")

    def cut(self, reset: bool = True) -> int:
        """Close every connection now; return how many."""
        box: list[int] = []
        self._call(lambda: box.append(self._cut_all(reset)))
        return box[0]

    def shut(self) -> int:
        """Close every connection as a stopping broker does (see the module docstring); return how many."""
        box: list[int] = []

        def run():
            now = time.monotonic()
            for pair in self._pairs:
                pair.closing = pair.closing or now
                pair.to_up.clear()  # read from the client, never given to the broker
                pair.late_up.clear()
            box.append(len(self._pairs))
            if self._pairs:
                self.cuts += 1
        self._call(run)
        return box[0]

    def freeze(self) -> int:
        """Stop forwarding on every existing connection for good (new ones are not affected)."""
        box: list[int] = []

        def run():
            for pair in self._pairs:
                pair.frozen = True
            box.append(len(self._pairs))
        self._call(run)
        return box[0]

    def cut_after(self, nbytes: int) -> None:
        """Forward `nbytes` more bytes towards the broker, then cut every connection (once)."""
        def arm():
            self._cut_budget = nbytes
        self._call(arm)

    @property
    def connections(self) -> int:
        box: list[int] = []
        self._call(lambda: box.append(len(self._pairs)))
        return box[0]

    def wait_connections(self, count: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connections >= count:
                return True
            time.sleep(0.01)
        return False

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _call(self, fn: Callable[[], None]) -> None:
        """Run `fn` in the proxy's thread and wait for it (no state is shared without this)."""
        done = threading.Event()
        with self._cmd_lock:
            self._commands.append((fn, done))
        self._wake_w.send(b"x")
        if not done.wait(5):
            raise RuntimeError("fault proxy thread is not responding")

    # ---- the proxy's thread ---------------------------------------------------------------------
    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._listener = sock

    def _set_mode(self, mode: str) -> None:
        if mode == "refuse" and self._listener is not None:
            self._listener.close()
            self._listener = None
        elif mode != "refuse" and self._listener is None:
            self._listen()
        self.mode = mode

    def _stop_now(self) -> None:
        self._stop = True
        self._cut_all(reset=True)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _cut_all(self, reset: bool) -> int:
        n = len(self._pairs)
        for pair in self._pairs:
            for sock in (pair.client, pair.upstream):
                if sock is None:
                    continue
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
        self._pairs = []
        self._cut_budget = None
        if n:
            self.cuts += 1
        return n

    def _close(self, pair: _Pair) -> None:
        for sock in (pair.client, pair.upstream):
            if sock is not None:
                sock.close()
        self._pairs.remove(pair)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, OSError):
            return
        self.accepted += 1
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream = None
        if self.mode != "silent":
            try:
                upstream = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                client.close()
                return
            upstream.setblocking(False)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pairs.append(_Pair(client, upstream))

    def _run(self) -> None:
        while not self._stop:
            self._step()

    def _step(self) -> None:
        forwarding = self.mode != "pause"
        wait = 0.2
        now = time.monotonic()
        for p in list(self._pairs):
            if forwarding and not p.frozen:
                _release(p.late_up, p.to_up, now)
                _release(p.late_client, p.to_client, now)
            for late in (p.late_up, p.late_client):
                if late:
                    wait = min(wait, max(0.0, late[0][0] - now))
            if p.closing:
                if now - p.closing >= SHUT_LIMIT or (now - max(p.heard, p.closing) >= SHUT_QUIET
                                                    and not p.to_client and not p.late_client):
                    self._close(p)
                else:
                    wait = min(wait, 0.05)
        rlist: list[socket.socket] = [self._wake_r]
        wlist: list[socket.socket] = []
        if self._listener is not None:
            rlist.append(self._listener)
        for p in self._pairs:
            if p.upstream is None:
                rlist.append(p.client)  # silent: read and discard
                continue
            if not forwarding or p.frozen:
                continue
            if not p.eof:
                if len(p.to_up) < CHUNK or p.closing:  # closing: read and discard (a close with
                    rlist.append(p.client)               # unread bytes would send an RST)
                if len(p.to_client) < CHUNK:
                    rlist.append(p.upstream)
            if p.to_up and not p.closing:
                wlist.append(p.upstream)
            if p.to_client:
                wlist.append(p.client)
        readable, writable, _ = select.select(rlist, wlist, [], wait)
        if self._wake_r in readable:
            self._wake_r.recv(4096)
            with self._cmd_lock:
                commands, self._commands = self._commands, []
            for fn, done in commands:
                try:
                    fn()
                finally:
                    done.set()
            return  # the sockets may have changed
        if self._listener is not None and self._listener in readable:
            self._accept()
        for p in list(self._pairs):
            if p not in self._pairs:
                continue  # cut while handling another pair
            self._serve(p, readable, writable)

    def _serve(self, p: _Pair, readable, writable) -> None:
        try:
            if p.client in readable:
                data = p.client.recv(CHUNK)
                if not data:
                    p.eof = True
                elif p.upstream is not None and not p.closing:
                    if self.delay:
                        p.late_up.append((time.monotonic() + self.delay, data))
                    else:
                        p.to_up += data
            if p.upstream is not None and p.upstream in readable:
                data = p.upstream.recv(CHUNK)
                if not data:
                    p.eof = True
                else:
                    p.heard = time.monotonic()
                    hold = self.delay + (self._rng.uniform(*self.slow) if self.mode == "delay" else 0.0)
                    if hold or p.late_client:  # behind what is held already: order is kept
                        due = max(p.heard + hold, p.late_client[-1][0] if p.late_client else 0.0)
                        p.late_client.append((due, data))
                    else:
                        p.to_client += data
                    self.bytes_down += len(data)
            if p.upstream is not None and p.upstream in writable and p.to_up:
                chunk = p.to_up
                budget = self._cut_budget
                if budget is not None:
                    chunk = chunk[:budget]
                sent = p.upstream.send(chunk) if chunk else 0
                del p.to_up[:sent]
                self.bytes_up += sent
                if budget is not None:
                    self._cut_budget = budget - sent
                    if self._cut_budget <= 0:
                        self._cut_all(reset=True)
                        return
            if p.client in writable and p.to_client:
                sent = p.client.send(p.to_client)
                del p.to_client[:sent]
        except OSError:
            self._close(p)
            return
        if p.eof and (p.upstream is None or not (p.to_up or p.to_client or p.late_up or p.late_client)):
            self._close(p)


def _release(late: deque[tuple[float, bytes]], out: bytearray, now: float) -> None:
    """Move the delayed chunks that are due to the output buffer."""
    while late and late[0][0] <= now:
        out += late.popleft()[1]
