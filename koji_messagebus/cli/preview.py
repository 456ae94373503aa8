"""`koji-messagebus preview`: the message the plugin would send for an event, from the callback's
keyword arguments or a built-in example.  Pure: no broker."""

from __future__ import annotations

import argparse
import configparser
import json
import sys
import time
from typing import Any

from koji_messagebus.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    config_if_any,
    message_type_arg,
    need_validator,
    out,
)
from koji_messagebus.format.messages import MESSAGE_TYPES, format_event

HELP = "print the message the plugin would send for an event"
DESCRIPTION = ("Print the routing key, headers and body the plugin would send for an event, from the callback's "
               "keyword arguments as JSON (a file, or - for stdin) or from a built-in realistic example. Pure: no "
               "broker. The prefix and address come from the config if one is given or exists.")


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("preview", parents=[parent], help=HELP, description=DESCRIPTION)
    p.add_argument("event", type=message_type_arg, metavar="EVENT",
                   help=f"event type: {', '.join(MESSAGE_TYPES)} (or the callback name, e.g. postTag)")
    p.add_argument("kwargs", nargs="?", metavar="KWARGS_JSON",
                   help="file with the callback's keyword arguments as a JSON object, or - for stdin")
    p.add_argument("--prefix", help="routing key prefix (default: [topic] prefix, or koji.event)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the readable form")
    p.add_argument("--validate", action="store_true",
                   help="check the message against its type's JSON Schema (needs jsonschema); exit 1 if it does not "
                   "match")
    p.set_defaults(func=run)


def read_kwargs(source: str) -> dict[str, Any]:
    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            with open(source, encoding="utf-8") as fh:
                text = fh.read()
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror}", EXIT_USAGE) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CliError(f"{'stdin' if source == '-' else source}: not JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(data, dict):
        raise CliError(f"{'stdin' if source == '-' else source}: expected a JSON object of the callback's keyword "
                       f"arguments, got {type(data).__name__}", EXIT_USAGE)
    return data


def run(args: argparse.Namespace) -> int:
    from koji.util import encode_datetime_recurse

    from koji_messagebus.amqp.address import addresses_by_broker
    from koji_messagebus.cli import examples
    from koji_messagebus.config.settings import parse_config
    from koji_messagebus.format.wire import decode, encode
    from koji_messagebus.listener import jsonable

    if args.validate:
        need_validator()
    config = config_if_any(args)
    prefix = args.prefix if args.prefix is not None else (config.topic.prefix if config else "koji.event")
    if args.kwargs:
        kwargs, origin = read_kwargs(args.kwargs), ("stdin" if args.kwargs == "-" else args.kwargs)
    else:
        kwargs, origin = examples.example(args.event), "the built-in example"
    kwargs = encode_datetime_recurse(kwargs)  # what a @convert_datetime callback receives
    event = format_event(args.event, kwargs, prefix)
    to = config.exchange.message_to(event.routing_key) if config else None
    ttl = config.message.ttl if config else None
    sent = encode(event, to=to, msg_id="(a new UUID per message)", created=time.time(), ttl=ttl)
    received = decode(sent.payload)  # what a consumer gets: the encoding round-tripped
    headers, body = jsonable(received["headers"]), jsonable(received["body"])
    effective = config or parse_config(configparser.RawConfigParser(), "(defaults)", for_sending=False)
    address = to or effective.exchange.target_address() or effective.exchange.address  # "auto": per broker
    per_broker = addresses_by_broker(effective.exchange, event.routing_key)
    notes = event.conversions.lossy + event.conversions.lossless
    problems = validated(args.validate, event.routing_key, headers, body)
    code = EXIT_FAIL if problems else EXIT_OK
    if args.json:
        record = {"type": event.type, "routing_key": event.routing_key, "address": address,
                  "addresses": per_broker, "headers": headers, "body": body, "conversions": notes,
                  "ttl_ms": None if ttl is None else int(round(ttl * 1000)), "size": len(sent.payload)}
        if problems is not None:
            record["schema_problems"] = problems
        out(json.dumps(record, sort_keys=True, ensure_ascii=False))
        return code
    out(f"# {event.type} from {origin} (prefix '{prefix}'; nothing is sent)")
    out(f"routing key / subject: {event.routing_key}")
    out(f"address:               {address}" + (" (chosen by the broker's open frame):" if address == "auto" else
                                                    "; on each broker:"))
    for label, where in per_broker.items():
        out(f"  {label + ':':<21}{where}")
    out("durable:               true; message-id: a new UUID; creation-time: the time of the event")
    out("ttl:                   " + (f"{ttl:g} s (header ttl = {int(round(ttl * 1000))} ms; [message] ttl)"
                                     if ttl is not None else "none (the message never expires; [message] ttl)"))
    out(f"size:                  {len(sent.payload)} bytes encoded")
    out("headers (application-properties):")
    out(json.dumps(headers, indent=2, ensure_ascii=False))
    out("body (AMQP map):")
    out(json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False))
    for note in notes:
        out(f"converted: {note}")
    if problems is not None:
        out(f"schema: {'DOES NOT MATCH' if problems else 'matches'} `koji-messagebus schema {event.type}`")
        for p in problems:
            out(f"  {p['path']}: {p['reason']}")
    return code


def validated(wanted: bool, routing_key: str, headers: Any, body: Any) -> list[dict[str, str]] | None:
    """None unless --validate; else how the message misses its schema ([] when it matches)."""
    if not wanted:
        return None
    from koji_messagebus.schema import document, problem_list, validate
    return problem_list(validate(document(routing_key, headers, body)))

