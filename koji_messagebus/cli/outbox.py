"""`koji-messagebus outbox status|flush|purge|init`: the outbox table in the hub's database."""

from __future__ import annotations

import argparse
import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from koji_messagebus.amqp import BrokerError
from koji_messagebus.cli import outbox_admin
from koji_messagebus.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    err,
    get_config,
    human_age,
    out,
    parse_age,
)
from koji_messagebus.cli.progress import Progress
from koji_messagebus.config.hubconf import DatabaseSettings, HubConfigError, read_database_settings
from koji_messagebus.config.settings import Config
from koji_messagebus.errors import first_line

if TYPE_CHECKING:
    from koji_messagebus.cli.command_sender import CommandSender
    from koji_messagebus.delivery.result import SendResult
    from koji_messagebus.format.wire import Outgoing

LOCK_WAIT = 10.0
HELP = "status, flush, purge or create the outbox table"
DESCRIPTION = ("Manage the outbox table in the hub's database; the database settings are read from hub.conf "
               "([hub] DBName, DBUser, DBHost, DBPort, DBPass or DBConnectionString, plus hub.conf.d/*.conf), "
               "its path from [outbox] hub_config or --hub-config.")


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("outbox", parents=[parent], help=HELP, description=DESCRIPTION)
    osub = p.add_subparsers(dest="outbox_command", metavar="ACTION")
    osub.required = True
    hub_config = argparse.ArgumentParser(add_help=False)
    hub_config.add_argument("--hub-config", metavar="FILE",
                            help="the hub's hub.conf (default: [outbox] hub_config of the config)")
    parents = [parent, hub_config]
    o = osub.add_parser("status", parents=parents, help="rows waiting and the age of the oldest",
                        description="Print how many messages the outbox holds and how long ago the oldest was "
                        "stored. Read-only.")
    o.set_defaults(func=run_status)
    o = osub.add_parser("flush", parents=parents,
                        help="send what the outbox holds now, until it is empty or the broker fails",
                        description="Send the outbox's messages now, oldest first, in batches of [outbox] "
                        "batch_size, with a progress line; stops when empty (exit 0) or when the broker fails "
                        "(exit 1; the rest stays). Rows older than [outbox] max_age are dropped, as the plugin "
                        "does. Young rows of a running hub process (stored less than 2 x [broker] timeout "
                        "+ 35 s ago by a database connection that is still open) are left to it, which sends "
                        "them itself; rows of a process that died are sent at once. "
                        "koji-messagebus-flush.timer runs this periodically.")
    o.add_argument("--all", action="store_true",
                   help="send the young rows of running hub processes too (they may then arrive twice)")
    o.set_defaults(func=run_flush)
    o = osub.add_parser("purge", parents=parents, help="delete rows older than an age",
                        description="Delete the outbox rows stored longer ago than AGE, without sending them "
                        "(messages nobody will receive). --older-than 0 would delete every row, including "
                        "messages stored a moment ago: it needs --yes.")
    o.add_argument("--older-than", type=parse_age, required=True, metavar="AGE",
                   help="SECONDS, or a number with s, m, h, d or w: 3600, 90m, 12h, 5d")
    o.add_argument("--yes", action="store_true", help="confirm --older-than 0 (delete every row)")
    o.set_defaults(func=run_purge)
    o = osub.add_parser("init", parents=parents, help="create the outbox table (idempotent)",
                        description="Create the outbox table and its index in the hub's database if they are "
                        "missing (the SQL of `koji-messagebus outbox schema`), with the database settings of "
                        "hub.conf; when another role owns the table, grant the hub's user what `koji-messagebus "
                        "outbox schema --grant-to USER` prints.")
    o.set_defaults(func=run_init)
    o = osub.add_parser("schema", parents=[parent], help="print the outbox table's SQL (and the grants it needs)",
                        description="Print the SQL that creates the outbox table (what `outbox init` runs), for "
                        "psql or a migration tool: koji-messagebus outbox schema | psql koji. With --grant-to "
                        "USER also the GRANT statements that give the hub's database user exactly what the plugin "
                        "needs, for when another role owns the table.")
    o.add_argument("--grant-to", metavar="USER",
                   help="the hub's database user (hub.conf DBUser): add the GRANT statements for it")
    o.set_defaults(func=run_schema)


def missing_table(settings: DatabaseSettings) -> str:
    from koji_messagebus.transaction import outbox

    return f"table {outbox.TABLE} does not exist in {settings.describe()}: create it with `koji-messagebus outbox init`"


def connect(args: argparse.Namespace, config: Config | None) -> tuple[DatabaseSettings, Any]:
    """The hub database named by --hub-config or [outbox] hub_config, connected."""
    path = args.hub_config or (config.outbox.hub_config if config else None)
    if path is None:
        path = get_config(args).outbox.hub_config
    try:
        settings = read_database_settings(path)
        return settings, settings.connect()
    except HubConfigError as exc:
        raise CliError(str(exc)) from None


@contextlib.contextmanager
def database(args: argparse.Namespace, config: Config | None = None) -> Iterator[tuple[DatabaseSettings, Any]]:
    """The connection for one command: any database failure becomes one line, and the connection
    is closed whatever happens."""
    from koji_messagebus.transaction import outbox

    settings, cnx = connect(args, config)
    try:
        yield settings, cnx
    except CliError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line, as every error
        if outbox.is_undefined_table(exc):
            raise CliError(missing_table(settings)) from None
        first = first_line(exc)
        raise CliError(f"{settings.describe()}: {settings.redact(first)}") from None
    finally:
        cnx.close()


def run_status(args: argparse.Namespace) -> int:
    from koji_messagebus.transaction import outbox

    with database(args) as (settings, cnx):
        rows, age, kept = outbox_admin.status_kept(cnx)
    out(f"{outbox.TABLE} in {settings.describe()}: {rows} row(s)"
        + (f", the oldest stored {human_age(age)} ago" if rows else ", empty")
        + (f"; sent messages kept for replay ([outbox] keep) from {human_age(kept)} ago" if kept is not None else ""))
    return EXIT_OK


def run_init(args: argparse.Namespace) -> int:
    from koji_messagebus.transaction import outbox

    with database(args) as (settings, cnx):
        cnx.cursor().execute(outbox.SCHEMA)
        cnx.commit()
    out(f"{outbox.TABLE} is ready in {settings.describe()} (created if it was missing)")
    return EXIT_OK


def run_purge(args: argparse.Namespace) -> int:
    from koji_messagebus.transaction import outbox

    if args.older_than <= 0 and not args.yes:
        raise CliError("--older-than 0 deletes every row of the outbox, also messages not yet sent; add --yes if "
                       "that is what you want", EXIT_USAGE)
    with database(args) as (settings, cnx):
        removed = outbox_admin.purge(cnx, args.older_than)
    out(f"purged {removed} row(s) older than {human_age(args.older_than)} from {outbox.TABLE} in "
        f"{settings.describe()}")
    return EXIT_OK


def run_schema(args: argparse.Namespace) -> int:
    from koji_messagebus import resources
    from koji_messagebus.transaction import outbox

    out(resources.read(resources.SCHEMA).rstrip("\n"))
    if args.grant_to:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", args.grant_to):
            raise CliError(f"--grant-to {args.grant_to!r}: not a plain SQL name; write the GRANTs by hand",
                           EXIT_USAGE)
        out(f"-- exactly what the hub's database user {args.grant_to} needs when another role owns the table:")
        out(outbox.grants(args.grant_to).rstrip("\n"))
    return EXIT_OK


@dataclass
class Flushed:
    """What one flush did: rows done with (`sent`, the refused among them), dropped as older than
    max_age, the broker's failure, and whether another process held the drain lock too long."""

    sent: int = 0
    refused: int = 0
    expired: int = 0
    locked_out: int = 0  # looks that found the drain lock taken
    failure: BrokerError | None = None
    taken_over: bool = False


def flush(cnx: Any, config: Config, sender: CommandSender, min_age: float,
          progress: Callable[[int], None] = lambda sent: None) -> Flushed:
    """Drain the outbox through the one outbox step (delivery/outbox_step.py) and the sender thread,
    batch by batch, until it is empty, the broker fails or another process keeps the drain lock
    for LOCK_WAIT (it is draining)."""
    from koji_messagebus.delivery.outbox_step import OutboxStep

    step = OutboxStep(config.outbox, sender.sender, min_age)
    done = Flushed()

    def send(batch: list[Outgoing]) -> SendResult:
        result = sender.send(batch, step.send_locked)
        if result.error and result.unsent and done.failure is None:
            done.failure = result.error
        return result

    lock_wait_until = time.monotonic() + LOCK_WAIT
    while True:
        result = step.drain(cnx, send, log_expired=False)
        done.expired += result.expired
        if result.locked_out:
            done.locked_out += 1
            if time.monotonic() < lock_wait_until:
                time.sleep(0.2)  # a hub process holds the drain lock for one batch at a time
                continue
            done.taken_over = True  # another process kept draining for LOCK_WAIT: it is doing the job
            return done
        lock_wait_until = time.monotonic() + LOCK_WAIT
        done.sent += result.sent
        done.refused += result.lost
        progress(done.sent)
        if done.failure or not result.left:
            return done


def run_flush(args: argparse.Namespace) -> int:
    from koji_messagebus.cli.command_sender import CommandSender
    from koji_messagebus.delivery.drainer import min_age
    from koji_messagebus.transaction import outbox

    config = get_config(args)
    timeout = float(config.broker.timeout)
    young = 0.0 if args.all else min_age(timeout, timeout)  # as a hub's drainer: own_window = timeout
    with database(args, config) as (settings, cnx), CommandSender(config) as sender:
        total, _age = outbox_admin.status(cnx)
        progress = Progress(f"flushing {outbox.TABLE} ({settings.describe()})", total)
        done = flush(cnx, config, sender, young, progress.update)
        remaining = 0 if args.all or done.failure or done.taken_over else outbox_admin.status(cnx)[0]
    progress.done()
    left = total - done.sent - done.expired
    summary = f"sent {done.sent - done.refused} message(s)"
    if done.refused:
        summary += f", {done.refused} refused by the broker (dropped)"
    if done.expired:
        summary += f", {done.expired} older than max_age dropped"
    if done.taken_over:
        out(f"{summary}; stopped: another process (a hub process) held the outbox's drain lock for "
            f"{LOCK_WAIT:g}s and is draining it")
        return EXIT_OK  # the outbox is being drained: nothing failed (a timer's run stays green)
    if done.failure:
        err(f"error: {done.failure}")
        out(f"{summary}; stopped: the broker failed, {max(left, 0)} row(s) stay in the outbox")
        return EXIT_FAIL
    if remaining:
        out(f"{summary}; {remaining} young row(s) left to the running hub process(es) sending them "
            "(--all sends them too)")
        return EXIT_OK
    out(f"{summary}; the outbox is empty")
    return EXIT_OK
