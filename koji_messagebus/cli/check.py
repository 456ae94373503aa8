"""`koji-messagebus check`: validate the config, then connect and attach exactly as the plugin
does, sending nothing; with [outbox] enabled also reach the outbox table."""

from __future__ import annotations

import argparse
import time

from koji_messagebus.amqp import BrokerError
from koji_messagebus.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    config_path,
    describe_connection,
    err,
    human_age,
    out,
)
from koji_messagebus.cli.outbox import missing_table
from koji_messagebus.config.hubconf import HubConfigError, read_database_settings
from koji_messagebus.config.settings import Config, ConfigError, load_config
from koji_messagebus.errors import first_line

HELP = "validate the config, connect and attach as the plugin would"
DESCRIPTION = ("Validate the config (every problem at once), connect, authenticate and attach to the exchange "
               "exactly as the plugin does, sending nothing; report TLS and auth weaknesses; with [outbox] "
               "enabled also check the hub database and the outbox table. One line per finding: ok on stdout; "
               "errors, warnings and notes on stderr. Exit 0 when the setup works, 1 if the broker or database "
               "fails, 2 for an invalid config.")


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("check", parents=[parent], help=HELP, description=DESCRIPTION)
    p.add_argument("--hub-config", metavar="FILE", help="hub.conf for the outbox check (default: [outbox] hub_config)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = config_path(args)
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            err(f"error: {problem}")
        err(f"config {exc.path}: {len(exc.problems)} problem(s); nothing was tried")
        return EXIT_USAGE
    out(f"ok: config {path} is valid")
    for warning in config.warnings:
        err(f"warning: {warning}")
    if config.broker.test_mode:
        err(f"note: {path}: [broker] test_mode = true: the plugin logs messages instead of sending them; "
            "checking the broker anyway")
    from koji_messagebus.cli.command_sender import CommandSender

    start = time.monotonic()
    try:
        with CommandSender(config) as sender:  # the hub's sender thread, connected and attached; nothing sent
            conn = sender.connect()
            endpoint = str(conn.endpoint)
            route = conn.address()  # what `auto` chose for this broker
    except BrokerError as exc:
        err(f"error: {exc}")
        return EXIT_FAIL
    target = route or config.exchange.target_address() or "per-message addresses ({routing_key} in [exchange] address)"
    out(f"ok: broker {describe_connection(config, endpoint)} accepted the login and the sender attached to "
        f"exchange '{config.exchange.name}' (address {target}) in {(time.monotonic() - start) * 1000:.0f} ms; "
        "nothing was sent")
    code = EXIT_OK
    if config.outbox.enabled:
        code = check_outbox(config, getattr(args, "hub_config", None))
    return code


def check_outbox(config: Config, hub_config: str | None) -> int:
    from koji_messagebus.cli import outbox_admin
    from koji_messagebus.transaction import outbox

    path = hub_config or config.outbox.hub_config
    try:
        settings = read_database_settings(path)
        cnx = settings.connect()
    except HubConfigError as exc:
        err(f"error: outbox: {exc}")
        return EXIT_FAIL
    try:
        missing, user = outbox_admin.check_privileges(cnx), cnx.info.user
        rows, age = outbox_admin.status(cnx) if not missing else (0, None)
        keep_ok = not config.outbox.keep or outbox_admin.has_sent_column(cnx)
    except Exception as exc:  # noqa: BLE001 - reported as one line
        if outbox.is_undefined_table(exc):
            err(f"error: outbox: {missing_table(settings)}")
        else:
            err(f"error: outbox: {settings.describe()}: {settings.redact(first_line(exc))}")
        return EXIT_FAIL
    finally:
        cnx.close()
    if missing:  # as the hub's database user: what the plugin will really be refused
        for what in missing:
            err(f"error: outbox: user '{user}' lacks {what}")
        err(f"error: outbox: as the table's owner, run: {' '.join(outbox.grants(user).split())}")
        return EXIT_FAIL
    if not keep_ok:
        err(f"error: outbox: [outbox] keep = {config.outbox.keep:g} needs the sent_at column of "
            f"{outbox.TABLE}: run `koji-messagebus outbox init` (it adds the column to the existing table)")
        return EXIT_FAIL
    out(f"ok: outbox table {outbox.TABLE} in {settings.describe()}: {rows} row(s) waiting"
        + (f", the oldest stored {human_age(age)} ago" if rows else ""))
    return EXIT_OK
