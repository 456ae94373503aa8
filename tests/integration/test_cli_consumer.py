"""The command line as a consumer author uses it, against the run's broker: `listen --queue NAME
--durable` keeps what arrives while it is away, `send` publishes one event through the plugin,
`demo --exchange/--prefix` in a pipe publishes everything, `listen` creates the exchange where the
plugin would (or prints the command that does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from koji_messagebus.cli import examples
from tests.support import recipes

pytestmark = [pytest.mark.integration, pytest.mark.matrix]


def broker_url(t) -> str:
    return f"amqp://{t.user}:{t.password}@{t.host}:{t.port}"


def cli(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KOJI_MESSAGEBUS_CONFIG"}
    return subprocess.run([sys.executable, "-m", "koji_messagebus.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, input=stdin, cwd=recipes.ROOT)


def remove(broker, queue: str, exchange: str, key: str = "org.koji.Tag.#") -> None:
    if broker.flavour.startswith("rabbitmq"):
        import pika

        from tests.support.pika_consumer import pika_parameters

        with pika.BlockingConnection(pika_parameters()) as c:
            c.channel().queue_delete(queue)
            c.channel().exchange_delete(exchange)
    elif broker.flavour == "artemis":
        recipes.unsubscribe(broker, queue, key, link=f"{queue}-0")
    else:
        recipes.unsubscribe(broker, queue, exchange, key, link=f"{queue}-0")


def test_durable_listen_gets_what_send_published_while_it_was_away(broker, tmp_path):
    exchange, queue = f"kmb.cli.{uuid.uuid4().hex[:8]}", f"kmb-cli-{uuid.uuid4().hex[:8]}"
    url = broker_url(broker)
    if broker.flavour == "rabbitmq3":  # the one broker where nothing over AMQP 1.0 can create it
        assert cli("send", "Tag", "-", "--broker", url, "--exchange", exchange,
                   stdin=json.dumps(examples.tag(), default=str)).returncode == 0  # declares it over AMQP 0-9-1
    listen = ["listen", "--broker", url, "--exchange", exchange, "--key", "org.koji.Tag.#", "--queue", queue,
              "--durable"]
    try:
        first = cli(*listen, "--timeout", "1")
        assert first.returncode == 0, first.stderr
        assert "kept after the listener leaves" in first.stderr, first.stderr
        kwargs = tmp_path / "tag.json"
        kwargs.write_text(json.dumps(examples.tag(), default=str))
        sent = cli("send", "Tag", str(kwargs), "--broker", url, "--exchange", exchange, "--prefix", "org.koji")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "Tag sent through the plugin (postTag, preCommit, COMMIT, postCommit" in sent.stdout
        second = cli(*listen, "--count", "1", "--timeout", "20")
        assert second.returncode == 0, second.stderr
    finally:
        remove(broker, queue, exchange)
    got = json.loads(second.stdout.splitlines()[0])
    assert got["routing_key"] == "org.koji.Tag.f44-updates-candidate.hello.alice"
    assert got["body"]["build"]["nvr"] == "hello-2.12.1-3.fc44"


def test_demo_in_a_pipe_publishes_everything(broker):
    exchange, queue = f"kmb.cli.{uuid.uuid4().hex[:8]}", f"kmb-cli-{uuid.uuid4().hex[:8]}"
    url = broker_url(broker)
    env = {k: v for k, v in os.environ.items() if k != "KOJI_MESSAGEBUS_CONFIG"}
    demo = f"{sys.executable} -m koji_messagebus.cli demo --broker {url} --exchange {exchange} --prefix org.koji"
    listen = ["listen", "--broker", url, "--exchange", exchange, "--key", "org.koji.#", "--queue", queue,
              "--durable"]
    try:
        if broker.flavour == "rabbitmq3":
            subprocess.run(["bash", "-c", demo + " >/dev/null"], env=env, timeout=120, check=True)  # the exchange
        assert cli(*listen, "--timeout", "1").returncode == 0  # a subscription that counts what is published
        res = subprocess.run(["bash", "-c", demo + " | head -5; exit ${PIPESTATUS[0]}"], capture_output=True,
                             text=True, env=env, timeout=120)
        assert res.returncode == 0, res.stderr  # 0: the demo's own consumer received every message
        assert len(res.stdout.splitlines()) == 5
        assert "Traceback" not in res.stderr and "Broken pipe" not in res.stderr, res.stderr
        counted = cli(*listen, "--count", "9", "--timeout", "20")
        assert counted.returncode == 0, counted.stderr  # all 9 of the demo's events were published
    finally:
        remove(broker, queue, exchange, "org.koji.#")


def test_listen_creates_the_exchange_where_the_plugin_would(broker):
    exchange = f"kmb.cli.{uuid.uuid4().hex[:8]}"
    res = cli("listen", "--broker", broker_url(broker), "--exchange", exchange, "--timeout", "1")
    try:
        if broker.flavour == "rabbitmq3":  # cannot be created over AMQP 1.0: the exact command instead
            assert res.returncode == 1
            assert f"exchange '{exchange}' (address /exchange/{exchange}) does not exist" in res.stderr, res.stderr
            assert "rabbitmqctl eval 'rabbit_exchange:declare(" in res.stderr and exchange in res.stderr
        else:
            assert res.returncode == 0, res.stderr
    finally:
        if broker.flavour.startswith("rabbitmq"):
            import pika

            from tests.support.pika_consumer import pika_parameters

            with pika.BlockingConnection(pika_parameters()) as c:
                c.channel().exchange_delete(exchange)
