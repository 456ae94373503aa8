"""Every consumer snippet of docs/cookbook.md runs against its broker and prints what its recipe selects.
Run once per broker of the matrix (KMB_BROKER*); a snippet for another broker is skipped with the reason."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from devkit.brokers import BrokerTarget
from devkit.config import write_config
from koji_messagebus.amqp import AmqpConnection
from koji_messagebus.cli import examples
from koji_messagebus.config.settings import load_config
from koji_messagebus.format.messages import format_event
from koji_messagebus.format.wire import encode

pytestmark = [pytest.mark.integration, pytest.mark.matrix]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COOKBOOK = open(os.path.join(ROOT, "docs", "cookbook.md"), encoding="utf-8").read()
TAG_LINE = "koji.event.Tag.f44-updates-candidate.hello.alice alice hello-2.12.1-3.fc44"
BUILD_LINE = "koji.event.BuildStateChange.state.hello hello-2.12.1-3.fc44"

# (heading, brokers it is for, what it prints)
SNIPPETS = [
    ("## With pika (AMQP 0-9-1)", ("rabbitmq3", "rabbitmq4"), BUILD_LINE),
    ("## With proton (AMQP 1.0)", ("rabbitmq3",), TAG_LINE),
    ("### On RabbitMQ 4.x", ("rabbitmq4",), TAG_LINE),
    ("### On ActiveMQ Artemis", ("artemis",), TAG_LINE),
    ("### On Qpid Broker-J", ("brokerj",), TAG_LINE),
]


def snippet(heading: str) -> str:
    section = COOKBOOK.split(f"\n{heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def for_broker(code: str, t: BrokerTarget, exchange: str) -> str:
    """The snippet with the run's broker, credentials and exchange in its settings lines."""
    lines = {
        'BROKER, PORT, EXCHANGE = "127.0.0.1", 5672, "koji.events"':
            f"BROKER, PORT, EXCHANGE = {t.host!r}, {t.port}, {exchange!r}",
        'BROKER, PORT = "127.0.0.1", 5672': f"BROKER, PORT = {t.host!r}, {t.port}",
        'USER, PASSWORD = "guest", "guest"': f"USER, PASSWORD = {t.user!r}, {t.password!r}",
    }
    out = []
    for line in code.splitlines():
        out.append(lines.get(line, line))
    assert any(line.startswith("USER, PASSWORD = ") for line in out), "settings lines changed: update this test"
    return "\n".join(out) + "\n"


def events():
    """What the recipes see: a completed and a started build of hello, a tag into f44-updates-candidate,
    and a tag elsewhere (neither of the latter two kinds may print)."""
    other_tag = examples.tag()
    other_tag = {**other_tag, "tag": {**other_tag["tag"], "name": "f44-other"}}
    return [encode(format_event(t, kw, "koji.event")) for t, kw in (
        ("BuildStateChange", examples.build_state(0, 1)), ("BuildStateChange", examples.build_state(None, 0)),
        ("Tag", examples.tag()), ("Tag", other_tag))]


@pytest.mark.parametrize("heading, flavours, expected", SNIPPETS, ids=[s[0].strip("# ") for s in SNIPPETS])
def test_cookbook_consumer_runs_on_its_broker(broker, exchange_name, tmp_path, heading, flavours, expected):
    if broker.flavour not in flavours:
        pytest.skip(f"{broker.flavour}: the snippet under '{heading.strip('# ')}' is for {', '.join(flavours)}")
    cfg = load_config(write_config(tmp_path / "c.conf", exchange_name, exchange={"durable": "false"}))
    if broker.flavour == "rabbitmq3":  # the plugin cannot create it there
        import pika

        from tests.support.pika_consumer import pika_parameters

        with pika.BlockingConnection(pika_parameters()) as c:
            c.channel().exchange_declare(exchange_name, "topic", durable=False)
    sender = AmqpConnection(cfg.broker, cfg.exchange, cfg.endpoints[0])
    sender.open(time.monotonic() + 10)  # creates the exchange where the broker allows
    script = tmp_path / "consumer.py"
    script.write_text(for_broker(snippet(heading), broker, exchange_name))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        while not lines and time.monotonic() < deadline and proc.poll() is None:
            out = sender.send(events(), time.monotonic() + 10)  # again until the consumer is subscribed
            assert out.error is None and out.lost == [], (out.error, out.lost)
            time.sleep(0.5)
        time.sleep(0.3)
    finally:
        sender.close()
        proc.terminate()
        err = proc.stderr.read()
        proc.wait(timeout=10)
    assert lines, err
    assert {line.rstrip("\n") for line in lines} == {expected}, json.dumps(lines)
