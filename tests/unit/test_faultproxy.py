"""The fault proxy itself, against a loopback echo server (no broker needed)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from devkit.faultproxy import FaultProxy


@pytest.fixture
def echo():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    stop = threading.Event()

    def serve(conn):
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                    if not data:
                        return
                    conn.sendall(data)
                except OSError:
                    return

    def accept():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()
    stop.set()
    t.join()
    srv.close()


@pytest.fixture
def proxy(echo):
    with FaultProxy(echo) as p:
        yield p


def connect(proxy, timeout=2.0):
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def roundtrip(sock, data=b"hello"):
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        got += chunk
    return got


def test_pass(proxy):
    with connect(proxy) as s:
        assert roundtrip(s, b"x" * 200_000) == b"x" * 200_000
    assert proxy.bytes_up >= 200_000


def test_cut_closes_existing_connections(proxy):
    with connect(proxy) as s:
        roundtrip(s)
        assert proxy.cut() == 1
        with pytest.raises(OSError):
            roundtrip(s)
            roundtrip(s)
    with connect(proxy) as s2:
        assert roundtrip(s2) == b"hello"


def test_refuse_then_pass_on_the_same_port(proxy):
    port = proxy.port
    proxy.set_mode("refuse")
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)
    proxy.set_mode("pass")
    assert proxy.port == port
    with connect(proxy) as s:
        assert roundtrip(s) == b"hello"


def test_silent_accepts_and_never_answers(proxy):
    proxy.set_mode("silent")
    with connect(proxy, timeout=0.3) as s:
        s.sendall(b"anyone?")
        with pytest.raises(socket.timeout):
            s.recv(10)


def test_pause_holds_data_until_resume(proxy):
    with connect(proxy, timeout=0.3) as s:
        roundtrip(s)
        proxy.set_mode("pause")
        s.sendall(b"held")
        with pytest.raises(socket.timeout):
            s.recv(10)
        proxy.resume()
        s.settimeout(2)
        assert s.recv(10) == b"held"


def test_cut_after_bytes(proxy):
    with connect(proxy) as s:
        roundtrip(s)
        before = proxy.bytes_up
        proxy.cut_after(1000)
        with pytest.raises(OSError):
            for _ in range(100):
                roundtrip(s, b"y" * 100)
                time.sleep(0.001)
    assert proxy.bytes_up - before == 1000
    assert proxy.connections == 0


def test_freeze_blackholes_existing_connections_only(proxy):
    with connect(proxy, timeout=0.3) as old:
        roundtrip(old)
        assert proxy.freeze() == 1
        old.sendall(b"lost")
        with pytest.raises(socket.timeout):
            old.recv(10)
        with connect(proxy) as new:
            assert roundtrip(new) == b"hello"


def test_delay_holds_the_brokers_bytes_in_order_and_drops_nothing(echo):
    with FaultProxy(echo, slow=(0.3, 0.5)) as proxy, connect(proxy, timeout=0.2) as s:
        roundtrip(s)
        proxy.set_mode("delay")
        sent = b"".join(b"%05d" % i for i in range(2000))
        for i in range(0, len(sent), 1000):  # several chunks, each held 0.3-0.5 s
            s.sendall(sent[i:i + 1000])
        with pytest.raises(socket.timeout):
            s.recv(10)
        s.settimeout(5)
        got = b""
        while len(got) < len(sent):
            got += s.recv(65536)
        assert got == sent
        proxy.resume()
        assert roundtrip(s) == b"hello"


@pytest.fixture
def late_answer():
    """A server that answers each chunk 0.2 s late (a broker settling what it took)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    received: list[bytes] = []

    def serve():
        conn, _ = srv.accept()
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                received.append(data)
                time.sleep(0.2)
                try:
                    conn.sendall(b"ok:" + data)
                except OSError:
                    return

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname(), received
    srv.close()


def test_shut_forwards_the_answers_to_what_was_taken_then_closes(late_answer):
    address, received = late_answer
    with FaultProxy(address) as proxy, connect(proxy, timeout=5) as s:
        s.sendall(b"taken")
        deadline = time.monotonic() + 5
        while proxy.bytes_up < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        proxy.set_mode("refuse")
        assert proxy.shut() == 1
        s.sendall(b"never")  # after the shut: must not reach the server
        got = b""
        while True:
            chunk = s.recv(100)
            if not chunk:
                break
            got += chunk
        assert got == b"ok:taken"
        assert received == [b"taken"]
        assert proxy.connections == 0
