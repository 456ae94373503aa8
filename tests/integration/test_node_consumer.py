"""A consumer in another language: Node's AMQP 1.0 client `rhea` reads what the plugin sent from the
real broker and `ajv` validates every message against the JSON Schemas shipped in the package
(tests/node/consumer.js).  Both come from the npm registry, installed by this test (pinned in
tests/node/package.json) into the state directory.  The contract is the schema files, not our code.

Every recorded hub call of every type goes through the plugin loaded as the hub loads it; one more
message, with a tag name that is not text, shows the Node side rejecting what it must."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid

import koji.plugin
import pika
import pytest

from koji_messagebus.messages import CALLBACK_TYPES
from koji_messagebus.schema import SCHEMA_DIR
from tests.broker import pika_parameters
from tests.brokers import target
from tests.fixtures import entries
from tests.hub import Hub, load_plugin, unload_plugin

pytestmark = [pytest.mark.integration, pytest.mark.matrix, pytest.mark.requires("pika")]

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


def queue_for(exchange: str) -> tuple[str, str]:
    """A queue bound to the exchange with '#' (declared over AMQP 0-9-1); its AMQP 1.0 address."""
    t = target()
    name = f"kmb-node-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika_parameters())
    try:
        ch = conn.channel()
        ch.exchange_declare(exchange, "topic", durable=True)
        ch.queue_declare(name, durable=t.flavour == "rabbitmq4", arguments={"x-expires": 600_000})
        ch.queue_bind(name, exchange, "#")
    finally:
        conn.close()
    return name, (f"/queues/{name}" if t.flavour == "rabbitmq4" else f"/amq/queue/{name}")


def test_node_rhea_consumer_validates_every_message_with_ajv(monkeypatch, conf_file, exchange_name):
    modules = node_modules()
    queue, address = queue_for(exchange_name)
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf_file())
    sent: list[str] = []
    load_plugin()
    hub = Hub()
    try:
        for cbtype, msg_type in CALLBACK_TYPES.items():
            for entry in entries(cbtype):
                hub.request(lambda _cur, cb=cbtype, kw=entry["kwargs"]: koji.plugin.run_callbacks(cb, **kw))
                sent.append(msg_type)
        broken = {**entries("postTag")[0]["kwargs"]}
        broken["tag"] = {**broken["tag"], "name": 44}
        hub.request(lambda _cur: koji.plugin.run_callbacks("postTag", **broken))
    finally:
        hub.close()
        unload_plugin()
    t = target()
    url = f"amqp://{t.user}:{t.password}@{t.host}:{t.port}"
    res = subprocess.run(["node", os.path.join(NODE_DIR, "consumer.js"), url, address, str(len(sent) + 1),
                          SCHEMA_DIR, "60"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "NODE_PATH": modules})
    conn = pika.BlockingConnection(pika_parameters())
    try:
        conn.channel().queue_delete(queue)
    finally:
        conn.close()
    assert res.returncode == 0, res.stderr
    got = [json.loads(line) for line in res.stdout.splitlines()]
    assert [g["type"] for g in got] == [*sent, "Tag"]
    invalid = [g for g in got[:-1] if not g["valid"]]
    assert invalid == [], f"{len(invalid)} message(s) fail the schema in Node/ajv: {invalid[:3]}"
    assert got[-1]["valid"] is False
    assert {"path": "/headers/tag", "message": "must be string"} in got[-1]["errors"]
    assert all(g["routing_key"].startswith("koji.event.") for g in got)
