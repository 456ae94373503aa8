"""`koji-messagebus demo`: a build's hub events through the plugin, loaded as the hub loads it,
into the broker, and what a consumer attached beforehand received."""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

from koji_messagebus.cli.common import (
    BUILTIN,
    DEMO_EXCHANGE,
    EXIT_FAIL,
    EXIT_OK,
    CliError,
    add_broker_option,
    add_plugin_options,
    config_or_demo,
    describe_connection,
    plugin_config,
)
from koji_messagebus.cli.common import out_to_pipe as out  # `demo | head -5` still publishes everything
from koji_messagebus.config.hubconf import HubConfigError, read_database_settings
from koji_messagebus.config.redact import redact_url
from koji_messagebus.config.settings import ENV_VAR, Config, ConfigError
from koji_messagebus.format.messages import CALLBACK_TYPES

DEMO_ARRIVAL_WAIT = 3.0
HELP = "run a build's hub events through the plugin into the broker"
DESCRIPTION = ("Load the plugin as the hub does (koji's PluginTracker), fire a build's events from task to tag to "
               "repo as hub requests (callbacks, preCommit, COMMIT, postCommit) into the broker, and print what a "
               "consumer attached beforehand received. Without --config or "
               f"${ENV_VAR}: the built-in config for the local RabbitMQ (guest/guest, exchange {DEMO_EXCHANGE}). "
               "The exchange is declared first: over AMQP 1.0 where the broker allows it (RabbitMQ 4.x, Broker-J; "
               "Artemis needs none), over AMQP 0-9-1 (pika or rabbitmqadmin) on RabbitMQ 3.x, which cannot over "
               "AMQP 1.0.")


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[parent], help=HELP, description=DESCRIPTION)
    p.add_argument("--pretty", action="store_true", help="print each received message in full")
    p.add_argument("--json", action="store_true", help="print each received message as one JSON line")
    p.add_argument("--no-declare", action="store_true", help="do not declare the exchange first")
    add_plugin_options(p)
    add_broker_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with config_or_demo(args, "demo") as (config, builtin):
        source = BUILTIN if builtin else config.path
        with plugin_config(config, args.exchange, args.prefix) as config:  # the plugin reads it as in the hub
            return _demo(args, config, source)


def ensure_exchange(config: Config) -> str:
    """Declare the exchange where it can be (over AMQP 1.0 on RabbitMQ 4.x and Broker-J, over AMQP
    0-9-1 on RabbitMQ 3.x); returns the line that says what happened."""
    from koji_messagebus.amqp.address import flavour
    from koji_messagebus.amqp.management import prepare_exchange

    info, state = prepare_exchange(config.broker, config.exchange, config.endpoints)
    if state:
        return f"exchange '{config.exchange.name}' on {info}: {state} (over AMQP 1.0)"
    if flavour(info) == "rabbitmq3":
        return declare(config)
    return f"{info} creates addresses on demand: nothing to declare"


def declare(config: Config) -> str:
    from koji_messagebus.rabbitmq import DeclareError, declare_exchange

    try:
        return declare_exchange(config)
    except DeclareError as exc:
        raise CliError(str(exc)) from None


def needs_database(config: Config) -> bool:
    """Whether the demo uses the hub's database: only when the config enables the outbox."""
    return bool(config.outbox.enabled) and not config.broker.test_mode


def database_needed(argv: list[str]) -> bool:
    """For scripts/demo.sh: whether `koji-messagebus demo ARGV` will use PostgreSQL, so that the
    script sets it up only then.  A config it cannot use counts as no: the demo says what is wrong."""
    from koji_messagebus.cli import build_parser

    try:
        args = build_parser().parse_args(["demo", *argv])
        with config_or_demo(args, "demo") as (config, _builtin):
            return needs_database(config)
    except (CliError, SystemExit, ConfigError):
        return False


def hub_connection(config: Config) -> Any:
    """The hub's database connection when the plugin will use the outbox; None otherwise."""
    if not needs_database(config):
        return None
    try:
        return read_database_settings(config.outbox.hub_config).connect()
    except HubConfigError as exc:
        raise CliError(f"[outbox] enabled = true needs the hub database: {exc}") from None


def _demo(args: argparse.Namespace, config: Config, source: str) -> int:
    from koji_messagebus.cli import examples
    from koji_messagebus.listener import open_listener
    from koji_messagebus.testing import HubSimulator

    story = examples.build_story()
    total = sum(len(events) for _, _, events in story)
    out(f"koji-messagebus demo: a build from task to tag to repo — {len(story)} hub requests, {total} events")
    out(f"  config: {source}; broker {describe_connection(config, str(config.endpoints[0]))}, exchange "
        f"'{config.exchange.name}' ({config.exchange.type})")
    if not args.no_declare:
        out(f"  {ensure_exchange(config)}")
    keys = ["#"] if config.exchange.type == "topic" else [""]
    # the broker's own way (amqp.receiver)
    listener = open_listener(config.broker, config.exchange, config.topic, config.endpoints, keys=keys)
    try:
        out(f"  a consumer is listening over AMQP 1.0 on {listener.subscription.how} ({listener.broker_info})")
        cnx = hub_connection(config)
        hub = HubSimulator(cnx, echo_log=bool(getattr(args, "debug", False)))
        try:
            out(f"  plugin loaded as the hub loads it: {hub.describe()}")
            received = _demo_requests(args, config, story, hub, listener)
        finally:
            hub.close()
            if cnx is not None:
                cnx.close()
        note = listener.leftover_queue_note() if listener.subscription.leftover else None
    finally:
        listener.close()
    if config.broker.test_mode:
        out(f"test_mode = true in {source}: the plugin logged each message instead of sending it; nothing to "
            "receive")
        return EXIT_OK
    out(f"done: the consumer received {received} of {total} message(s)")
    if note:
        out(f"note: {note}")
    if received == total:
        given = "" if source == BUILTIN else f" --config {config.path}"
        broker = f" --broker {redact_url(args.broker)}" if args.broker else ""
        broker += f" --exchange {config.exchange.name}" if args.exchange else ""
        out(f"next: `koji-messagebus{given} listen{broker} --pretty` in another terminal while you run the demo again; "
            "`koji-messagebus preview Tag` shows any event without a broker")
        return EXIT_OK
    return EXIT_FAIL


def _headers_line(headers: dict[str, Any]) -> str:
    return " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in headers.items() if k != "type")


def _demo_requests(args: argparse.Namespace, config: Config, story: list[Any], hub: Any, listener: Any) -> int:
    from koji_messagebus.listener import message_record, render

    received = fired = 0
    test_mode = config.broker.test_mode
    for i, (method, what, events) in enumerate(story, 1):
        out(f"[{i}/{len(story)}] {method}: {what}")
        seconds, logged = hub.request(method, events)
        for level, line in logged:
            out(f"      plugin {logging.getLevelName(level).lower()}: {line}")
        kinds = ", ".join(CALLBACK_TYPES[cb] for cb, _ in events)
        out(f"      hub: {kinds} -> preCommit, COMMIT, postCommit ({seconds * 1000:.1f} ms in postCommit)")
        fired += len(events)
        if test_mode or any(level >= logging.ERROR for level, _ in logged):
            continue  # nothing was sent (the plugin said why)
        expected = fired

        def handle(msg: Any, expected: int = expected) -> bool:
            nonlocal received
            record = message_record(msg)
            received += 1
            if args.pretty:
                out(render(record, True))
            elif args.json:
                out(render(record, False))
            else:
                out(f"      consumer got {record['type']:<17} {record['routing_key']}  "
                    f"{_headers_line(record['headers'])}")
            return received < expected

        listener.listen(handle, time.monotonic() + DEMO_ARRIVAL_WAIT)
        if received < expected:
            out(f"      consumer: {expected - received} message(s) did not arrive within {DEMO_ARRIVAL_WAIT:g}s")
    return received
