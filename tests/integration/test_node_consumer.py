"""A consumer in another language: Node's AMQP 1.0 client `rhea` reads what the plugin sent from the
real broker and `ajv` validates every message against the JSON Schemas shipped in the package
(tests/node/consumer.js).  Both come from the npm registry, installed by this test (pinned in
tests/node/package.json) into the state directory.  The contract is the schema files, not our code.
RabbitMQ 3.x and 4.x: a queue bound with pika, read over AMQP 1.0; Artemis: a multicast subscription
on the wildcard address; Broker-J is left out (its topic binding filter is a described type that
rhea has no helper for).

Every recorded hub call of every type goes through the plugin loaded as the hub loads it; one more
message, with a tag name that is not text, shows the Node side rejecting what it must."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import uuid

import koji.plugin
import pika
import pytest

from devkit.brokers import target
from devkit.recorded import entries
from koji_messagebus.format.messages import CALLBACK_TYPES
from koji_messagebus.schema import SCHEMA_DIR
from tests.support.hub import Hub, load_plugin, unload_plugin
from tests.support.pika_consumer import pika_parameters

pytestmark = [pytest.mark.integration, pytest.mark.matrix]

NODE_DIR = os.path.join(os.path.dirname(__file__), "..", "node")
STATE = os.environ.get("KMB_STATE_DIR", "/var/tmp/koji-messagebus")


def node_modules() -> str:
    """npm install of tests/node/package.json into the state directory (once per its content)."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.fail("node and npm are needed (scripts/setup.sh installs the nodejs and npm packages)")
    with open(os.path.join(NODE_DIR, "package.json"), "rb") as fh:
        manifest = fh.read()
    where = os.path.join(STATE, f"node-consumer-{hashlib.sha256(manifest).hexdigest()[:12]}")
    if not os.path.isdir(os.path.join(where, "node_modules", "rhea")):
        os.makedirs(where, exist_ok=True)
        with open(os.path.join(where, "package.json"), "wb") as fh:
            fh.write(manifest)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=where,
                       check=True, timeout=300, capture_output=True)
    return os.path.join(where, "node_modules")


def source_for(exchange: str) -> tuple[str, list[str], str | None]:
    """(AMQP 1.0 source, extra consumer.js arguments, queue to delete afterwards) on the run's broker."""
    t = target()
    if t.flavour == "artemis":
        return "koji.event.#", ["topic"], None
    if t.flavour not in ("rabbitmq3", "rabbitmq4"):
        pytest.skip(f"{t.flavour}: the Node consumer subscribes on RabbitMQ and Artemis only")
    name = f"kmb-node-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika_parameters())
    try:
        ch = conn.channel()
        ch.exchange_declare(exchange, "topic", durable=True)
        ch.queue_declare(name, durable=t.flavour == "rabbitmq4", arguments={"x-expires": 600_000})
        ch.queue_bind(name, exchange, "#")
    finally:
        conn.close()
    return (f"/queues/{name}" if t.flavour == "rabbitmq4" else f"/amq/queue/{name}"), [], name


class NodeConsumer:
    """tests/node/consumer.js in a subprocess, ready once its receiver is attached."""

    def __init__(self, source: str, extra: list[str], count: int, modules: str):
        t = target()
        url = f"amqp://{t.user}:{t.password}@{t.host}:{t.port}"
        self.proc = subprocess.Popen(["node", os.path.join(NODE_DIR, "consumer.js"), url, source, str(count),
                                      SCHEMA_DIR, "60", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "NODE_PATH": modules})
        self.err: list[str] = []
        attached = threading.Event()

        def read_err() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.err.append(line)
                if line.startswith("attached"):
                    attached.set()
            attached.set()

        self.reader = threading.Thread(target=read_err, daemon=True)
        self.reader.start()
        if not attached.wait(30) or self.proc.poll() is not None:
            self.proc.kill()
            pytest.fail(f"the Node consumer did not attach: {''.join(self.err)}")

    def finish(self) -> tuple[int, list[dict]]:
        out, _ = self.proc.communicate(timeout=90)
        self.reader.join(5)
        return self.proc.returncode, [json.loads(line) for line in out.splitlines()]


#: RabbitMQ 3.10's AMQP 1.0 plugin now and then ends a receiver's connection with a crash of its own
#: (`{connection_closing,{internal_error,541,<<"...:noproc">>}}`, seen once in ~8 CI runs): the broker's
#: fault, not the contract's; the consumer runs once more then, and says so
BROKER_CRASH = "internal_error,541"


def consume_everything(conf_file, exchange_name, calls, broken):
    """One run: the Node consumer attached, every recorded call and the broken one sent through the
    plugin; (its exit code, what it printed, its stderr)."""
    modules = node_modules()
    source, extra, queue = source_for(exchange_name)
    node = NodeConsumer(source, extra, len(calls) + 1, modules)
    load_plugin()
    hub = Hub()
    try:
        for cbtype, kwargs in [*calls, ("postTag", broken)]:
            hub.request(lambda _cur, cb=cbtype, kw=kwargs: koji.plugin.run_callbacks(cb, **kw))
        rc, got = node.finish()
    finally:
        hub.close()
        unload_plugin()
        if node.proc.poll() is None:
            node.proc.kill()
        if queue:
            conn = pika.BlockingConnection(pika_parameters())
            try:
                conn.channel().queue_delete(queue)
            finally:
                conn.close()
    return rc, got, "".join(node.err)


def test_node_rhea_consumer_validates_every_message_with_ajv(monkeypatch, conf_file, exchange_name):
    calls = [(cb, entry["kwargs"]) for cb in CALLBACK_TYPES for entry in entries(cb)]
    broken = {**entries("postTag")[0]["kwargs"]}
    broken["tag"] = {**broken["tag"], "name": 44}
    # the recorded RPMSigns are unsigned imports: unsigned_rpm_sign on, so every recorded call is sent
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf_file(topic={"unsigned_rpm_sign": True}))
    rc, got, err = consume_everything(conf_file, exchange_name, calls, broken)
    if rc != 0 and BROKER_CRASH in err:
        print(f"the broker ended the consumer's connection ({err.strip()}); running it once more")
        rc, got, err = consume_everything(conf_file, exchange_name, calls, broken)
    assert rc == 0, err
    assert [g["type"] for g in got] == [CALLBACK_TYPES[cb] for cb, _ in calls] + ["Tag"]
    invalid = [g for g in got[:-1] if not g["valid"]]
    assert invalid == [], f"{len(invalid)} message(s) fail the schema in Node/ajv: {invalid[:3]}"
    assert got[-1]["valid"] is False
    assert {"path": "/headers/tag", "message": "must be string"} in got[-1]["errors"]
    assert all(g["routing_key"].startswith("koji.event.") for g in got)
