"""A 3-node RabbitMQ 4 cluster (scripts/services/cluster.sh): the plugin, loaded as the hub loads
it, is given all three nodes in `[broker] urls`; the consumer side is a quorum queue.  Stopping the
node the plugin is connected to, and later a second one, loses no message and stalls no request
beyond the configured timeout."""

from __future__ import annotations

import copy
import os
import subprocess
import time
import uuid

import pika
import pytest

from devkit.brokers import need
from devkit.recorded import entries
from tests.support.hub import Hub, fire, load_plugin, unload_plugin

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "services", "cluster.sh")
PORTS = [int(p) for p in os.environ.get("KMB_CLUSTER_PORTS", "5675 5676 5677").split()]
TREE = os.environ.get("KMB_TRIXIE_DIR", os.path.join(os.environ.get("KMB_STATE_DIR", "/var/tmp/koji-messagebus"),
                                                      "trixie"))
TIMEOUT = 5.0  # [broker] timeout for the plugin: the bound on any request


def cluster(*args: str) -> None:
    subprocess.run(["bash", SCRIPT, *args], check=True, timeout=240, stdout=subprocess.DEVNULL)


def port_open(port: int) -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def amqp10_node() -> int:
    """The node (1..3) the plugin's AMQP 1.0 connection is on (pika's are 0-9-1)."""
    for n, port in enumerate(PORTS, 1):
        if not port_open(port):
            continue
        out = subprocess.run(["chroot", TREE, "env", "HOME=/var/lib/rabbitmq", "/usr/sbin/rabbitmqctl",
                              "-n", f"rabbitc{n}@localhost", "-q", "list_connections", "pid", "protocol"],
                             capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            if "{1, 0}" in line or "{1,0}" in line:
                return int(line.split("@", 1)[0].lstrip("<").removeprefix("rabbitc"))  # <rabbitcN@localhost.…>
        break  # the list is cluster-wide: one live node answered for all
    raise AssertionError(f"the plugin has no AMQP 1.0 connection to the cluster: {out!r}")


def pika_on_live_node() -> pika.BlockingConnection:
    for port in PORTS:
        if port_open(port):
            return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    raise AssertionError("no cluster node is up")


@pytest.fixture
def three_nodes():
    need("quorum-queues")
    if not all(port_open(p) for p in PORTS):
        pytest.skip(f"the 3-node cluster is not running on {PORTS}: scripts/services/cluster.sh start "
                    "(scripts/test.sh starts it)")
    yield
    for n, port in enumerate(PORTS, 1):
        if not port_open(port):
            cluster("start-node", str(n))


def test_stopping_nodes_loses_nothing_and_stalls_nothing(three_nodes, monkeypatch, tmp_path, exchange_name):
    from devkit.brokers import target
    from devkit.config import write_config

    queue = f"kmb-cluster-{uuid.uuid4().hex[:8]}"
    conn = pika_on_live_node()
    ch = conn.channel()
    ch.exchange_declare(exchange_name, "topic", durable=True)
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_bind(queue, exchange_name, "#")
    conn.close()

    urls = " ".join(f"amqp://127.0.0.1:{p}" for p in PORTS)
    # the documented 4.x template (KMB_BROKER_ADDRESS overrides): failover is tested here, not `auto`
    exchange = {"address": target().address or "/exchanges/{name}/{routing_key}"}
    path = write_config(tmp_path / "messagebus.conf", exchange_name, exchange=exchange,
                        broker={"host": None, "port": None, "urls": urls, "timeout": TIMEOUT,
                                "connect_timeout": "2", "retry_interval": "1"})
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", path)
    load_plugin()
    hub = Hub()
    base = entries("postTag")[0]["kwargs"]
    sent: list[str] = []
    slowest = 0.0

    def requests(count: int) -> None:
        nonlocal slowest
        for _ in range(count):
            kw = copy.deepcopy(base)
            kw["tag"]["name"] = f"cl{len(sent)}"
            sent.append(kw["tag"]["name"])
            start = time.monotonic()
            hub.request(fire("postTag", kw))
            slowest = max(slowest, time.monotonic() - start)

    try:
        requests(5)
        first = amqp10_node()
        cluster("stop-node", str(first))
        requests(10)
        cluster("start-node", str(first))
        requests(3)
        second = amqp10_node()
        assert second != first or not port_open(PORTS[first - 1])  # it moved when its node went away
        cluster("stop-node", str(second))
        requests(10)
        cluster("start-node", str(second))
        requests(2)
    finally:
        hub.close()
        unload_plugin()  # polite close: waits (bounded) for what is still unsettled

    # every message is in the quorum queue (a resend after a lost settlement may duplicate one)
    got: list[str] = []
    deadline = time.monotonic() + 30
    conn = pika_on_live_node()
    try:
        ch = conn.channel()
        while time.monotonic() < deadline and set(got) < set(sent):
            method, _props, _body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                conn.sleep(0.1)
                continue
            got.append(method.routing_key.split(".")[3])
        ch.queue_delete(queue)
        ch.exchange_delete(exchange_name)
    finally:
        conn.close()
    assert sorted(set(got)) == sorted(sent), f"lost: {sorted(set(sent) - set(got))}"
    assert slowest < TIMEOUT + 1.5, f"a request took {slowest:.2f} s (timeout {TIMEOUT} s)"
    print(f"cluster: {len(sent)} requests, {len(got)} deliveries ({len(got) - len(set(got))} duplicates), "
          f"slowest request {slowest:.2f} s, stopped rabbitc{first} then rabbitc{second}")
