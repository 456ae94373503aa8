"""`koji-messagebus spool status|flush`: the messages hub processes spooled at exit ([broker] spool_dir)."""

from __future__ import annotations

import argparse
import time

from koji_messagebus.cli.common import EXIT_FAIL, EXIT_OK, CliError, err, get_config, human_age, out

HELP = "status or flush the spool of messages hub processes held at exit"
DESCRIPTION = ("Hub processes that exit while the broker does not take their messages (mostly without the outbox) "
               "write them to [broker] spool_dir; the next hub process that connects sends them. These commands "
               "show and send them from here (run as root or the httpd user).")


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("spool", parents=[parent], help=HELP, description=DESCRIPTION)
    ssub = p.add_subparsers(dest="spool_command", metavar="ACTION")
    ssub.required = True
    s = ssub.add_parser("status", parents=[parent], help="spooled files and messages, the age of the oldest",
                        description="Print how many files and messages the spool holds and how long ago the "
                        "oldest was written. Read-only.")
    s.add_argument("--dir", metavar="DIR", help="the spool directory (default: [broker] spool_dir)")
    s.set_defaults(func=run_status)
    s = ssub.add_parser("flush", parents=[parent], help="send the spooled messages now",
                        description="Send every spooled file that no running hub process has claimed, oldest "
                        "first, byte for byte with its message-id, deleting each once the broker settled all "
                        "its messages; stops at the first broker failure (exit 1; what is left is written "
                        "back to the spool).")
    s.add_argument("--dir", metavar="DIR", help="the spool directory (default: [broker] spool_dir)")
    s.set_defaults(func=run_flush)


def _spool(args: argparse.Namespace, config) -> object:
    from koji_messagebus.delivery.spool import Spool

    directory = args.dir or config.broker.spool_dir
    if not directory:
        raise CliError("no spool: [broker] spool_dir is empty (and no --dir)")
    return Spool(directory)


def run_status(args: argparse.Namespace) -> int:
    from koji_messagebus.delivery.spool import Spool

    spool = _spool(args, get_config(args, for_sending=False))
    assert isinstance(spool, Spool)
    try:
        files, messages, oldest = spool.summary()
    except OSError as exc:
        raise CliError(f"cannot read the spool {spool.directory}: {exc.strerror or exc}") from None
    age = "" if oldest is None else f", oldest written {human_age(max(0.0, time.time() - oldest))} ago"
    out(f"{spool.directory}: {messages} message(s) in {files} file(s){age}")
    return EXIT_OK


def run_flush(args: argparse.Namespace) -> int:
    from koji_messagebus.cli.command_sender import CommandSender
    from koji_messagebus.delivery import spool as mb_spool

    config = get_config(args)
    spool = _spool(args, config)
    assert isinstance(spool, mb_spool.Spool)
    sender = CommandSender(config)
    failure: list[str] = []

    def send(messages):
        result = sender.send(messages)
        if result.unsent:
            failure.append(str(result.error or "the broker did not settle in time"))
        return result

    try:
        files, settled, left = mb_spool.flush(spool, send)
    except OSError as exc:
        raise CliError(f"cannot use the spool {spool.directory}: {exc.strerror or exc}") from None
    finally:
        sender.close()
    summary = f"sent {settled} spooled message(s) from {files} file(s)"
    if failure:
        err(f"error: {failure[0]}")
        out(f"{summary}; {left} left in the spool")
        return EXIT_FAIL
    out(summary)
    return EXIT_OK
