"""`koji-messagebus`: check a setup, preview and watch messages, manage the outbox, run the demo.

Exit codes: 0 success, 1 the broker or the database failed, 2 bad usage or an invalid config,
130 interrupted (except `listen`, for which Ctrl-C is the normal end).  Errors are one line;
`--debug` shows tracebacks and the plugin's debug log.

One module per command, each with `register(subparsers, parent)` declaring its options and the
handler it runs; `common` holds what they share.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from types import FrameType

from koji_messagebus import __version__
from koji_messagebus.amqp import BrokerError
from koji_messagebus.cli import (
    check,
    demo,
    install,
    listen,
    outbox,
    preview,
    replay,
    sample_config,
    schema,
    send,
    spool,
    status,
)
from koji_messagebus.cli.common import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, CliError, err, parent_parser
from koji_messagebus.errors import first_line

COMMANDS = (check, preview, listen, send, outbox, spool, status, replay, install, sample_config, demo, schema)


def build_parser() -> argparse.ArgumentParser:
    parent = parent_parser()
    parser = argparse.ArgumentParser(
        prog="koji-messagebus", parents=[parent],
        description="Check, preview, watch and demonstrate the Koji messagebus hub plugin.",
        epilog="Start with `koji-messagebus demo` (local RabbitMQ) or `koji-messagebus check` (your setup).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.register(sub, parent)
    return parser


@contextlib.contextmanager
def cli_environment(debug: bool, listen: bool) -> Iterator[None]:
    """Log to stderr (WARNING, or DEBUG with --debug) and, for `listen`, treat SIGTERM like
    Ctrl-C; both undone afterwards, so that main() can also run inside another program."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    pika_log = logging.getLogger("pika")  # its failures are reported by us, in one line
    old_pika = pika_log.level
    pika_log.setLevel(logging.WARNING if debug else logging.CRITICAL)
    old_term = None
    if listen and hasattr(signal, "SIGTERM"):
        with contextlib.suppress(ValueError):  # only the main thread may set handlers
            old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        pika_log.setLevel(old_pika)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    with cli_environment(debug, args.command == "listen"):
        try:
            return int(args.func(args))
        except CliError as exc:
            if debug:
                traceback.print_exc()
            for line in exc.lines or [f"error: {exc}"]:
                err(line)
            return exc.code  # the same exit code with --debug
        except BrokerError as exc:
            if debug:
                traceback.print_exc()
            err(f"error: {exc}")
            return EXIT_FAIL
        except KeyboardInterrupt:
            err("interrupted")
            return EXIT_OK if args.command == "listen" else EXIT_INTERRUPTED
        except BrokenPipeError:  # `koji-messagebus listen | head`
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        except Exception as exc:  # one line unless --debug
            if debug:
                raise
            err(f"error: {type(exc).__name__}: {first_line(exc)} (run with --debug for the traceback)")
            return EXIT_FAIL


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
