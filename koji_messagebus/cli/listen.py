"""`koji-messagebus listen`: attach to the exchange and print each message as it arrives."""

from __future__ import annotations

import argparse
import time
from typing import Any

from koji_messagebus.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_broker_option,
    config_or_demo,
    default_path,
    err,
    need_validator,
    out,
    positive_float,
    positive_int,
    with_exchange,
)
from koji_messagebus.config.settings import Config

HELP = "print messages as they arrive"
DESCRIPTION = """\
Attach to the exchange with a temporary queue and print each message as it arrives: one JSON
object per line (routing_key, type, id, created, durable, headers, body), or --pretty.

Topic exchange: --key takes binding patterns ('*' one word, '#' any number), e.g.
  --key 'koji.event.Tag.f44-updates-candidate.#' --key 'koji.event.BuildStateChange.state.hello'
Several --key each get their own binding; a message matching several is printed once.

--header NAME=GLOB matches the message's headers ON THE CLIENT SIDE, for both exchange types:
RabbitMQ 3.x cannot bind on AMQP 1.0 application properties (a headers exchange does not see
them), so every message of the binding is received and only the matching ones are printed.
Values compare as text (null, true/false for None and booleans); GLOB may use * and ?.

How it subscribes depends on the broker (its open frame says which; the first line names it):
RabbitMQ 4.x: an exclusive queue declared and bound through /management, read from /queues/NAME,
deleted when the listener leaves. Artemis: a multicast subscription per key on the Artemis
wildcard address (headers exchange: on the exchange's address). Broker-J: links from the exchange
with binding filters. RabbitMQ 3.x cannot declare a temporary queue over AMQP 1.0 (its plugin makes
the queue of the source /exchange/NAME/KEY neither exclusive nor auto-delete, so it would stay and
keep collecting messages). With pika installed, the listener declares an auto-delete queue over
AMQP 0-9-1, binds it with the keys and consumes it over AMQP 1.0 (/amq/queue/NAME); the broker
deletes it when the listener leaves. Without pika (or with --source) it uses /exchange/NAME/KEY;
then a queue policy removes the leftovers once unused:
  rabbitmqctl set_policy --apply-to queues koji-messagebus-listeners '^amq\\.gen-' '{"expires":600000}'

--validate checks each message against its type's JSON Schema (`koji-messagebus schema TYPE`;
needs the jsonschema package): a message that does not match gets "schema_problems", a list of
{"path": JSON path, "reason": ...} (with --pretty, a line per problem), and a count at the end.

--queue NAME names the queue (RabbitMQ) or subscription (Artemis, Broker-J: container id and link
name); with --durable it is a durable subscription: it stays, bound, when the listener leaves and
collects messages until the next `listen --queue NAME --durable` (remove it with the broker's
tools). RabbitMQ 3.x: declared over AMQP 0-9-1 (pika). Before subscribing, the exchange is
created where the plugin would create it (RabbitMQ 4.x, Broker-J); on RabbitMQ 3.x a missing
exchange is an error that prints the command that creates it.

Exit: 0 after --count messages, at --timeout, or on Ctrl-C; 1 if the broker fails, or if
--timeout ends before --count messages arrived."""


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("listen", parents=[parent], help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--key", action="append", metavar="PATTERN",
                   help="topic binding pattern (repeatable; default '#': everything)")
    p.add_argument("--header", action="append", metavar="NAME=GLOB",
                   help="print only messages whose header matches (repeatable: all must match; client-side)")
    p.add_argument("--count", type=positive_int, metavar="N", help="stop after N printed messages")
    p.add_argument("--timeout", type=positive_float, metavar="SECONDS", help="stop after this long")
    p.add_argument("--pretty", action="store_true", help="readable blocks instead of one JSON object per line")
    p.add_argument("--exchange", metavar="NAME", help="listen to this exchange instead of [exchange] name")
    p.add_argument("--source", metavar="TEMPLATE",
                   help="receiver source address with {name} and {key}, e.g. /exchange/{name}/{key} "
                   "(RabbitMQ 3.x); default: the broker's own way (see above)")
    p.add_argument("--validate", action="store_true",
                   help="check each message against its type's JSON Schema and mark those that do not match")
    p.add_argument("--queue", metavar="NAME", help="the queue (or subscription) name, instead of a temporary one")
    p.add_argument("--durable", action="store_true",
                   help="with --queue: keep the queue and its bindings after leaving (a durable subscription)")
    p.add_argument("--quiet", action="store_true", help="no note about RabbitMQ 3.x leaving a queue behind")
    add_broker_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from koji_messagebus.listener import HeaderMatch, open_listener, source_addresses

    try:
        matches = [HeaderMatch(spec) for spec in args.header or []]
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if args.validate:
        need_validator()
    if args.durable and not args.queue:
        raise CliError("--durable needs --queue NAME: a durable subscription is found again by its name", EXIT_USAGE)
    if args.queue and args.source:
        raise CliError("--queue and --source do not go together: --source reads the given addresses", EXIT_USAGE)
    with config_or_demo(args, "listen") as (config, demo):
        config = with_exchange(config, args.exchange)
        if demo and not args.broker:
            err(f"note: no config at {default_path()}: using the built-in demo config (local RabbitMQ, exchange "
                f"'{config.exchange.name}'); pass --config for another")
        if args.key and config.exchange.type != "topic":
            raise CliError(f"--key needs a topic exchange; '{config.exchange.name}' is configured as "
                           f"{config.exchange.type}: use --header", EXIT_USAGE)
        keys = (args.key or ["#"]) if config.exchange.type == "topic" else [""]
        if args.source:
            listener = open_listener(config.broker, config.exchange, config.topic, config.endpoints,
                                     source_addresses(config, keys, args.source))
        else:
            prepare(config)
            listener = open_listener(config.broker, config.exchange, config.topic, config.endpoints,  # amqp.receiver
                                     keys=keys, queue=args.queue, durable=args.durable)
    try:
        return _listen(args, config, listener, matches)
    finally:
        listener.close()


def prepare(config: Config) -> None:
    """Create the exchange where the plugin would (RabbitMQ 4.x, Broker-J), so that binding works
    before the hub's first message; elsewhere the subscription says what is missing."""
    from koji_messagebus.amqp.management import prepare_exchange

    prepare_exchange(config.broker, config.exchange, config.endpoints)


def _listen(args: argparse.Namespace, config: Config, listener: Any, matches: list[Any]) -> int:
    from koji_messagebus.listener import message_record, render
    from koji_messagebus.schema import document, problem_list, validate

    binding = ", ".join(args.key or ["#"]) if config.exchange.type == "topic" else "(all)"
    filters = f"; header match (client-side): {' '.join(map(str, matches))}" if matches else ""
    sub = listener.subscription
    via = sub.how if listener.keys is not None else ", ".join(map(str, listener.sources))
    shown = mismatched = 0

    def handle(msg: Any) -> bool:
        nonlocal shown, mismatched
        record = message_record(msg)
        if not all(m.matches(record["headers"]) for m in matches):
            return True
        if args.validate:
            problems = validate(document(record["routing_key"], record["headers"], record["body"]))
            if problems:
                record["schema_problems"] = problem_list(problems)
                mismatched += 1
        out(render(record, args.pretty))
        shown += 1
        return not (args.count and shown >= args.count)

    until = time.monotonic() + args.timeout if args.timeout else None
    try:  # from the line that says Ctrl-C on, Ctrl-C is the normal end
        err(f"listening on {listener.endpoint} ({listener.broker_info}) exchange '{config.exchange.name}' "
            f"({config.exchange.type}), binding {binding}{filters}, via {via}; Ctrl-C to stop")
        note = listener.leftover_queue_note() if (sub.leftover or listener.keys is None) else None
        if note and not args.quiet:
            err(f"note: {note}")
        listener.listen(handle, until)
    except KeyboardInterrupt:
        err(f"stopped after {shown} message(s)")
        return EXIT_OK
    finally:
        if args.validate:
            err(f"schema: {mismatched} of {shown} message(s) did not match their schema")
    if args.count and shown < args.count:
        err(f"timeout: {shown} of {args.count} message(s) within {args.timeout:g}s")
        return EXIT_FAIL
    return EXIT_OK
