"""`koji-messagebus schema`: the JSON Schemas of the messages, as shipped in the package."""

from __future__ import annotations

import argparse
import json

from koji_messagebus.cli.common import EXIT_OK, EXIT_USAGE, CliError, message_type_arg, out
from koji_messagebus.format.messages import MESSAGE_TYPES

HELP = "print the JSON Schema of a message type (or list the types)"
DESCRIPTION = """\
Print the JSON Schema (draft 2020-12) that a message of TYPE matches, as one JSON document
{"routing_key": ..., "headers": {...}, "body": {...}}. Without TYPE, list the types with their
schema versions and ids; --all prints one JSON object mapping every type to its schema.
`listen --validate` and `preview --validate` check messages against these schemas (they need the
optional jsonschema package: pip install 'koji-messagebus[schema]')."""


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("schema", parents=[parent], help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("type", nargs="?", type=message_type_arg, metavar="TYPE",
                   help=f"message type: {', '.join(MESSAGE_TYPES)} (or the callback name, e.g. postTag)")
    p.add_argument("--all", action="store_true", help="every type's schema in one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from koji_messagebus import schema as contract

    if args.all and args.type:
        raise CliError("give TYPE or --all, not both", EXIT_USAGE)
    if args.all:
        out(json.dumps(contract.schemas(), indent=2, ensure_ascii=False))
    elif args.type:
        out(json.dumps(contract.schema(args.type), indent=2, ensure_ascii=False))
    else:
        for msg_type, doc in contract.schemas().items():
            out(f"{msg_type:<18} version {contract.version(doc):<3} {doc['$id']}")
    return EXIT_OK
