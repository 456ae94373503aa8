"""The durable-subscription recipes of docs/recipes/ (included by docs/consumers.md) against their
broker: subscribe, crash, miss messages while down, start again and get them, each once, including
one message of 100,000 values (proton's own decoder would keep 65,535 of them).
Run once per broker of the matrix (KMB_BROKER*); a recipe for another broker is skipped with the reason."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from devkit.config import write_config
from koji_messagebus.amqp import AmqpConnection
from koji_messagebus.cli import examples
from koji_messagebus.config.settings import load_config
from koji_messagebus.format.messages import format_event
from koji_messagebus.format.wire import encode
from tests.support import recipes

pytestmark = [pytest.mark.integration, pytest.mark.matrix]

BIG = 100000
NVR = "hello-2.12.1-3.fc44"
# recipe, brokers it is for, extra environment per broker
RECIPES = [
    ("pika_durable.py", ("rabbitmq3", "rabbitmq4"), {}),
    ("proton_rabbitmq_durable.py", ("rabbitmq3", "rabbitmq4"),
     {"rabbitmq3": {"KOJI_BUS_SOURCE": "/amq/queue/{queue}"}}),
    ("proton_artemis_durable.py", ("artemis",), {}),
    ("proton_brokerj_durable.py", ("brokerj",), {}),
    ("rhea_rabbitmq4_durable.js", ("rabbitmq4",), {}),
]


def events():
    """A tag into f44-updates-candidate, a tag elsewhere (not for the recipe) and a big tag."""
    tag = examples.tag()
    other = {**tag, "tag": {**tag["tag"], "name": "f44-other"}}
    big = {**tag, "extra": list(range(BIG))}
    return [encode(format_event("Tag", kw, "koji.event")) for kw in (tag, other, big)]


def prepare(broker, exchange: str, tmp_path):
    """The exchange, created as the plugin does (or over AMQP 0-9-1 on RabbitMQ 3.x), and a sender."""
    cfg = load_config(write_config(tmp_path / "c.conf", exchange, exchange={"durable": "false"}))
    if broker.flavour == "rabbitmq3":
        import pika

        from tests.support.pika_consumer import pika_parameters

        with pika.BlockingConnection(pika_parameters()) as c:
            c.channel().exchange_declare(exchange, "topic", durable=False)
    sender = AmqpConnection(cfg.broker, cfg.exchange, cfg.endpoints[0])
    sender.open(time.monotonic() + 10)
    return sender


def cleanup(broker, recipe: str, queue: str, exchange: str) -> None:
    if broker.flavour.startswith("rabbitmq"):
        import pika

        from tests.support.pika_consumer import pika_parameters

        with pika.BlockingConnection(pika_parameters()) as c:
            c.channel().queue_delete(queue)
            c.channel().exchange_delete(exchange)
    elif broker.flavour == "artemis":
        recipes.unsubscribe(broker, queue, "koji.event.Tag.f44-updates-candidate.#")
    else:
        recipes.unsubscribe(broker, queue, exchange, "koji.event.Tag.f44-updates-candidate.*.*")


@pytest.mark.parametrize("recipe, flavours, extra", RECIPES, ids=[r[0] for r in RECIPES])
def test_recipe_keeps_what_arrives_while_it_is_down(broker, exchange_name, tmp_path, recipe, flavours, extra):
    if broker.flavour not in flavours:
        pytest.skip(f"{broker.flavour}: {recipe} is for {', '.join(flavours)}")
    env_extra = dict(extra.get(broker.flavour, {}))
    if recipe.endswith(".js"):
        env_extra["NODE_PATH"] = recipes.rhea_dir(str(tmp_path / "node"))
    queue = f"kmb-recipe-{uuid.uuid4().hex[:8]}"
    sender = prepare(broker, exchange_name, tmp_path)
    try:
        first = recipes.start(recipe, recipes.recipe_env(broker, exchange_name, queue, **env_extra))
        first.wait_subscribed()
        first.kill()  # a crash: the subscription stays
        out = sender.send(events(), time.monotonic() + 30)
        assert out.error is None and out.lost == [], (out.error, out.lost)
        second = recipes.start(recipe, recipes.recipe_env(broker, exchange_name, queue, count=2, **env_extra))
        assert second.finish() == 0, "".join(second.err)
        time.sleep(0.1)  # the reader thread's last lines
    finally:
        sender.close()
        cleanup(broker, recipe, queue, exchange_name)
    got = [json.loads(line) for line in second.out]
    assert [m["routing_key"] for m in got] == ["koji.event.Tag.f44-updates-candidate.hello.alice"] * 2, second.out
    assert got[0]["body"]["build"]["nvr"] == NVR and got[0]["headers"]["tag"] == "f44-updates-candidate"
    assert got[1]["body"]["extra"] == list(range(BIG)), f"{len(got[1]['body']['extra'])} of {BIG} values"
    assert got[0]["id"] != got[1]["id"]
