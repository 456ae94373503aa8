"""What the admin reads when a broker is frozen, speaks another protocol, or an operator closes the
plugin's connection: real peers (the run's broker behind the fault proxy, a plain TCP server, and
RabbitMQ 3.10's own forced close of this test's connection only)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time

import pytest

from devkit.config import make_config, write_config
from devkit.faultproxy import FaultProxy
from koji_messagebus.amqp import BrokerError, Kind
from koji_messagebus.amqp.connection import Connection
from koji_messagebus.config.settings import load_config

pytestmark = pytest.mark.integration


def open_error(cfg, seconds: float = 1.0) -> BrokerError:
    conn = Connection(cfg.broker, cfg.exchange, cfg.endpoints[0])
    try:
        with pytest.raises(BrokerError) as info:
            conn.open(time.monotonic() + seconds)
    finally:
        conn.close(0)
    return info.value


def test_a_broker_that_accepts_and_never_answers_is_frozen_not_another_protocol(tmp_path, broker):
    with FaultProxy((broker.host, broker.port)) as proxy:
        proxy.set_mode("silent")  # accepted by the kernel, never a byte back: SIGSTOP, a hung node
        err = open_error(make_config(tmp_path, port=proxy.port, connect_timeout=1.0))
    assert err.kind is Kind.TIMEOUT
    assert str(err) == (f"broker 127.0.0.1:{proxy.port} accepted the connection but did not answer within 1 s "
                        "(frozen or overloaded?)")


@pytest.mark.parametrize("answer, hint", [
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "(the peer sent something that is not AMQP: is this an AMQP 1.0 port?)"),
    (b"AMQP\x00\x00\x09\x01", "(the broker speaks AMQP 0-9-1 only here: on RabbitMQ 3.x enable the rabbitmq_amqp1_0 "
                              "plugin)"),
])
def test_a_port_that_answers_something_else_says_so_at_once(tmp_path, answer, hint):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        peer, _ = listener.accept()
        with peer:
            peer.sendall(answer)
            peer.recv(1024)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        err = open_error(make_config(tmp_path, port=port, connect_timeout=5.0), seconds=5.0)
    finally:
        listener.close()
        server.join(5)
    assert err.kind is Kind.CONNECTION_LOST and str(err).endswith(hint), str(err)


def test_rabbitmq3_close_connection_reason_is_shown_as_text(tmp_path, exchange_name, broker):
    """What `rabbitmqctl close_all_connections "..."` does, applied to this test's own connection only
    (the node is shared): RabbitMQ 3.10 ends the session with the reason as an Erlang byte list."""
    if broker.flavour != "rabbitmq3" or not shutil.which("rabbitmqctl"):
        pytest.skip("needs the local RabbitMQ 3.x node and rabbitmqctl")
    probe = subprocess.run(["rabbitmqctl", "-q", "eval", "ok."], capture_output=True, text=True, timeout=60)
    if probe.stdout.strip() != "ok":
        pytest.skip(f"rabbitmqctl cannot reach the node: {probe.stderr.strip()[:200]}")
    cfg = load_config(write_config(tmp_path / "c.conf", exchange_name))
    conn = Connection(cfg.broker, cfg.exchange, cfg.endpoints[0])
    conn.open(time.monotonic() + 5)
    try:
        port = conn._sock.getsockname()[1]  # type: ignore[union-attr]
        reason = "maintenance, back at 10:00 \u2014 sorry"
        erl = "<<" + ",".join(str(b) for b in reason.encode()) + ">>"
        mine = f"[C || C <- rabbit_connection_tracking:list(), element(10, C) =:= {port}]"
        out = subprocess.run(["rabbitmqctl", "-q", "eval",
                              f"Mine = {mine}, {{length(Mine), rabbit_connection_tracking:close_connections(Mine, "
                              f"{erl}, 0)}}."], capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "{1,ok}", out
        with pytest.raises(BrokerError) as info:
            conn.wait(lambda: False, time.monotonic() + 5, "idle")
    finally:
        conn.close(0)
    assert info.value.kind is Kind.CONNECTION_LOST
    assert str(info.value) == f"connection to {broker.endpoint} closed by the broker: CONNECTION_FORCED - {reason}"
