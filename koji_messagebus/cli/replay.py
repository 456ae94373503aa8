"""`koji-messagebus replay`: send again the messages the outbox kept after sending them
([outbox] keep), oldest first, the same bytes with the same message-id, through the same
broker and address rules as the hub."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections import Counter

from koji_messagebus.amqp import BrokerError, Kind
from koji_messagebus.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, CliError, err, get_config, message_type_arg, out
from koji_messagebus.cli.progress import Progress

HELP = "send again the messages kept in the outbox ([outbox] keep) in a time window"
DESCRIPTION = ("Republish the sent messages the outbox keeps ([outbox] keep = SECONDS) that were stored in a time "
               "window, oldest first: the same bytes with the same message-id (consumers that dedupe by "
               "message-id are safe), through the same broker and address rules as the hub. For a consumer "
               "whose queue was lost: recreate the queue and its bindings, then replay with --match set to its "
               "binding.")


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("replay", parents=[parent], help=HELP, description=DESCRIPTION)
    p.add_argument("--since", required=True, metavar="TIME",
                   help="start of the window: a duration ago (2h, 30m, 90s, 1d) or an ISO time")
    p.add_argument("--until", metavar="TIME", help="end of the window (default: now); as --since")
    p.add_argument("--match", metavar="PATTERN",
                   help="routing-key pattern as a topic binding: * one word, # zero or more (koji.event.Tag.#)")
    p.add_argument("--type", type=message_type_arg, metavar="TYPE", help="only this message type (Tag, ...)")
    p.add_argument("--dry-run", action="store_true", help="print what would be sent; send nothing")
    p.add_argument("--yes", action="store_true", help="send without asking")
    p.add_argument("--hub-config", metavar="FILE",
                   help="the hub's hub.conf (default: [outbox] hub_config of the config)")
    p.set_defaults(func=run)


def _time(text: str | None, what: str) -> dt.datetime | None:
    from koji_messagebus.cli.replay_rows import parse_time

    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise CliError(f"{what}: {exc}", EXIT_USAGE) from None


def run(args: argparse.Namespace) -> int:
    from koji_messagebus.cli import replay_rows as replay
    from koji_messagebus.cli.command_sender import CommandSender
    from koji_messagebus.cli.outbox import database

    config = get_config(args)
    if not config.outbox.enabled or not config.outbox.keep:
        raise CliError(f"nothing is kept to replay: set [outbox] enabled = true and keep = SECONDS (e.g. keep = "
                       f"86400 for a day) in {config.path}, run `koji-messagebus outbox init` once, and reload "
                       "the hub; messages sent before that are gone", EXIT_FAIL)
    since, until = _time(args.since, "--since"), _time(args.until, "--until")
    assert since is not None
    try:
        matches = replay.topic_matcher(args.match) if args.match else (lambda key: True)
    except ValueError as exc:
        raise CliError(f"--match {exc}", EXIT_USAGE) from None
    with database(args, config) as (settings, cnx):
        kept = [k for k in replay.select_kept(cnx, since, until)
                if (args.type is None or k.msg_type == args.type) and matches(k.routing_key)]
        cnx.rollback()
        window = f"stored from {since.isoformat(timespec='seconds')}" + (
            f" until {until.isoformat(timespec='seconds')}" if until else " until now")
        types = ", ".join(f"{t} x{n}" for t, n in Counter(k.msg_type for k in kept).items()) or "none"
        if args.dry_run:
            for k in kept:
                out(f"{k.id}\t{k.stored.isoformat(timespec='seconds')}\t{k.msg_type}\t{k.routing_key}")
            out(f"would replay {len(kept)} message(s) ({types}) {window}; nothing sent (--dry-run)")
            return EXIT_OK
        if not kept:
            out(f"no kept message {window} matches; nothing sent")
            return EXIT_OK
        if not args.yes:
            if not sys.stdin.isatty():
                raise CliError(f"{len(kept)} message(s) ({types}) {window} would be sent again; add --yes to send "
                               "them (or --dry-run to list them)", EXIT_USAGE)
            answer = input(f"send {len(kept)} message(s) ({types}) {window} again? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                out("nothing sent")
                return EXIT_OK
        sender = CommandSender(config)
        sent = refused = 0
        progress = Progress(f"replaying to {config.exchange.name}", len(kept))
        failure: BrokerError | None = None
        try:
            for batch in replay.payloads(cnx, [k.id for k in kept], config.outbox.batch_size):
                result = sender.send(batch)
                sent += len(result.accepted)
                refused += len(result.lost)
                progress.update(sent + refused)
                if result.unsent:
                    failure = result.error or BrokerError(Kind.TIMEOUT, "the broker did not settle in time")
                    break
        finally:
            sender.close()
            progress.done()
    summary = f"replayed {sent} message(s) ({types}) {window}"
    if refused:
        summary += f"; {refused} refused by the broker"
    if failure is not None:
        err(f"error: {failure}")
        out(f"{summary}; stopped: the broker failed, {len(kept) - sent - refused} not sent")
        return EXIT_FAIL
    out(summary)
    return EXIT_OK
