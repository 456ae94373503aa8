"""Each value type the plugin sends, read back with each client of the type table in
docs/consumers.md: proton (its own decoder), pika with koji_messagebus.consumer, Node's rhea and Go's
github.com/Azure/go-amqp.  One message through the real broker into one queue per client; what
each client reports must be the table's row, and the table in the docs must be this one."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import proton
import pytest

from devkit.config import write_config
from koji_messagebus.amqp import AmqpConnection
from koji_messagebus.cli import examples
from koji_messagebus.config.settings import load_config
from koji_messagebus.format.messages import format_event
from koji_messagebus.format.wire import encode
from tests.support import recipes

pytestmark = [pytest.mark.integration, pytest.mark.matrix, pytest.mark.requires("pika")]

CLIENTS = os.path.join(recipes.ROOT, "tests", "clients")
DOC = os.path.join(recipes.ROOT, "docs", "consumers.md")

# what the plugin is handed (hub kwargs) -> name in the table
VALUES = {
    "null": None,
    "true": True,
    "int_small": 7,
    "int_2_31": 2**31,
    "int_2_53_plus_1": 2**53 + 1,
    "int_2_60": 2**60,
    "int_beyond_64_bits": 2**64,
    "float": 1.5,
    "str": "héllo",
    "bytes_utf8": b"abc",
    "bytes_binary": b"\x00\xff",
    "list": [1, "a"],
    "empty_list": [],
    "map": {"a": 1},
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "datetime": datetime.datetime(2026, 3, 2, 10, 0, tzinfo=datetime.timezone.utc),
    "set": {2, 1},
}
HEADERS = {"h_str": "f44-build", "h_int": 3, "h_null": None}


def message():
    kwargs = {**examples.tag(), **VALUES}
    event = format_event("Tag", kwargs, "koji.event", convert=False)  # the hub's path: converted while encoding
    event.headers.update(HEADERS)
    return encode(event)


def pika_types(channel, queue: str) -> dict[str, list[str]]:
    from koji_messagebus.consumer import from_pika

    deadline = time.monotonic() + 10
    while True:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    msg = from_pika(method, props, body)
    out = {f"body.{k}": v for k, v in msg.body.items()}
    out.update({f"header.{k}": v for k, v in msg.headers.items()})
    out.update({"message-id": msg.id, "creation-time": msg.created})
    return {k: [type(v).__name__, repr(v)] for k, v in out.items()}


PROTON = """
import json, sys
from proton.utils import BlockingConnection
c = BlockingConnection(sys.argv[1], user=sys.argv[2], password=sys.argv[3], allowed_mechs="PLAIN",
                       allow_insecure_mechs=True)
r = c.create_receiver(sys.argv[4])
m = r.receive(timeout=20)
r.accept()
out = {f"body.{k}": v for k, v in m.body.items()}
out.update({f"header.{k}": v for k, v in m.properties.items()})
out.update({"message-id": m.id, "creation-time": m.creation_time})
print(json.dumps({k: [type(v).__name__, repr(v)] for k, v in out.items()}))
c.close()
"""


def go_binary(tmp_path) -> str:
    if not shutil.which("go"):
        pytest.skip("go is needed for the go-amqp column")
    out = str(tmp_path / "gotypes")
    env = dict(os.environ, GOFLAGS="-mod=mod")
    subprocess.run(["go", "build", "-o", out, "."], cwd=os.path.join(CLIENTS, "gotypes"), env=env, check=True,
                   timeout=600, capture_output=True)
    return out


def run_json(cmd: list[str], env: dict[str, str]) -> dict[str, list[str]]:
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


# field -> (proton, pika + koji_messagebus.consumer, rhea, go-amqp) type names
EXPECTED = {
    "body.null": ("NoneType", "NoneType", "null", "<nil>"),
    "body.true": ("bool", "bool", "boolean", "bool"),
    "body.int_small": ("int", "int", "number", "int64"),
    "body.int_2_31": ("int", "int", "number", "int64"),
    "body.int_2_53_plus_1": ("int", "int", "number", "int64"),
    "body.int_2_60": ("int", "int", "Buffer(8)", "int64"),
    "body.int_beyond_64_bits": ("str", "str", "string", "string"),
    "body.float": ("float", "float", "number", "float64"),
    "body.str": ("str", "str", "string", "string"),
    "body.bytes_utf8": ("memoryview", "bytes", "Buffer(3)", "[]uint8"),
    "body.bytes_binary": ("memoryview", "bytes", "Buffer(2)", "[]uint8"),
    "body.list": ("list", "list", "Array", "[]interface {}"),
    "body.empty_list": ("list", "list", "Array", "[]interface {}"),
    "body.map": ("dict", "dict", "Object", "map[string]interface {}"),
    "body.uuid": ("UUID", "UUID", "Buffer(16)", "encoding.UUID"),
    "body.datetime": ("str", "str", "string", "string"),
    "body.set": ("list", "list", "Array", "[]interface {}"),
    "header.h_str": ("str", "str", "string", "string"),
    "header.h_int": ("int", "int", "number", "int64"),
    "header.h_null": ("NoneType", "NoneType", "null", "<nil>"),
    "message-id": ("str", "str", "string", "string"),
    "creation-time": ("float", "float", "Date", "time.Time"),
}


def table_rows() -> list[str]:
    """The type table of docs/consumers.md, row by row."""
    return [f"| `{k}` | {' | '.join(f'`{t}`' for t in v)} |" for k, v in EXPECTED.items()]


def test_the_docs_show_this_type_table():
    doc = open(DOC, encoding="utf-8").read()
    missing = [row for row in table_rows() if row not in doc]
    assert not missing, "docs/consumers.md lacks these type-table rows:\n" + "\n".join(missing)


def test_each_client_reads_each_type_as_the_table_says(broker, exchange_name, tmp_path):
    import pika

    from tests.support.pika_consumer import pika_parameters

    node_path = recipes.rhea_dir(str(tmp_path / "node"))
    go = go_binary(tmp_path)
    cfg = load_config(write_config(tmp_path / "c.conf", exchange_name, exchange={"durable": "false"}))
    queues = {name: f"kmb-types-{name}-{uuid.uuid4().hex[:6]}" for name in ("proton", "pika", "rhea", "go")}
    address = "/amq/queue/{}" if broker.flavour == "rabbitmq3" else "/queues/{}"
    conn = pika.BlockingConnection(pika_parameters())
    channel = conn.channel()
    try:
        channel.exchange_declare(exchange_name, "topic", durable=False)
        for q in queues.values():
            channel.queue_declare(q, durable=True)
            channel.queue_bind(q, exchange_name, "#")
        sender = AmqpConnection(cfg.broker, cfg.exchange, cfg.endpoints[0])
        sender.open(time.monotonic() + 10)
        try:
            out = sender.send([message()], time.monotonic() + 10)
            assert out.error is None and out.lost == [], (out.error, out.lost)
        finally:
            sender.close()
        env = recipes.recipe_env(broker, exchange_name, "")
        got = {
            "proton": run_json([sys.executable, "-c", PROTON, broker.url, broker.user, broker.password,
                                address.format(queues["proton"])], env),
            "pika": pika_types(channel, queues["pika"]),
            "rhea": run_json(["node", os.path.join(CLIENTS, "rhea_types.js")],
                             {**env, "NODE_PATH": node_path, "KOJI_BUS_SOURCE": address.format(queues["rhea"])}),
            "go": run_json([go], {**env, "KOJI_BUS_SOURCE": address.format(queues["go"])}),
        }
    finally:
        for q in queues.values():
            channel.queue_delete(q)
        channel.exchange_delete(exchange_name)
        conn.close()
    print(json.dumps(got, indent=1, sort_keys=True))
    seen = {field: tuple(got[c].get(field, ["(missing)"])[0] for c in ("proton", "pika", "rhea", "go"))
            for field in EXPECTED}
    expected = dict(EXPECTED)
    if proton.VERSION < (0, 40):  # proton 0.37 (EPEL 9) decodes a binary as bytes, 0.40 as a memoryview
        expected.update({f: ("bytes",) + row[1:] for f, row in EXPECTED.items() if row[0] == "memoryview"})
    wrong = {f: (seen[f], expected[f]) for f in expected if seen[f] != expected[f]}
    assert not wrong, json.dumps(wrong, indent=1)
    # the values too, where the type alone does not say it
    assert got["rhea"]["body.int_2_53_plus_1"][1] == str(2**53)  # rounded: a JavaScript number
    assert got["rhea"]["body.int_2_60"][1] == (2**60).to_bytes(8, "big").hex()
    assert got["pika"]["body.datetime"][1] == repr("2026-03-02 10:00:00+00:00")
    assert got["go"]["body.int_beyond_64_bits"][1] == str(2**64)
