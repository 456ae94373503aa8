"""`koji-messagebus send`: publish one event through the plugin's own path (loaded as the hub
loads it, one hub request: callback, preCommit, COMMIT, postCommit), from a JSON file."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from koji_messagebus.cli.common import (
    BUILTIN,
    EXIT_FAIL,
    EXIT_OK,
    add_broker_option,
    add_plugin_options,
    config_or_demo,
    describe_connection,
    message_type_arg,
    out,
    plugin_config,
)
from koji_messagebus.config.settings import ENV_VAR
from koji_messagebus.format.messages import CALLBACK_TYPES, MESSAGE_TYPES

HELP = "publish one event from a JSON file through the plugin"
DESCRIPTION = ("Publish one event as the hub would: the plugin is loaded as the hub loads it (koji's PluginTracker) "
               "and one hub request runs its callback with the keyword arguments from FILE.json (a JSON object, or - "
               "for stdin; `koji-messagebus preview EVENT` shows a realistic example, and `preview EVENT FILE.json` "
               "what would be sent), then preCommit, COMMIT and postCommit. The exchange is created first where it "
               "can be (as `demo` does). Without --config or "
               f"${ENV_VAR}: the built-in demo config (local RabbitMQ, exchange koji.demo) unless the hub's config "
               "exists. Exit 1 if the plugin logged an error (it is printed).")


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("send", parents=[parent], help=HELP, description=DESCRIPTION)
    p.add_argument("event", type=message_type_arg, metavar="EVENT",
                   help=f"event type: {', '.join(MESSAGE_TYPES)} (or the callback name, e.g. postTag)")
    p.add_argument("kwargs", metavar="FILE.json", help="the callback's keyword arguments as a JSON object, or -")
    p.add_argument("--no-declare", action="store_true", help="do not declare the exchange first")
    add_plugin_options(p)
    add_broker_option(p)
    p.set_defaults(func=run)


def callback_for(event: str) -> str:
    return next(cb for cb, kind in CALLBACK_TYPES.items() if kind == event)


def run(args: argparse.Namespace) -> int:
    from koji_messagebus.cli.demo import ensure_exchange, hub_connection
    from koji_messagebus.cli.preview import read_kwargs
    from koji_messagebus.testing import HubSimulator

    kwargs: dict[str, Any] = read_kwargs(args.kwargs)
    with config_or_demo(args, "send") as (config, builtin), \
            plugin_config(config, args.exchange, args.prefix) as config:
        source = BUILTIN if builtin else config.path
        out(f"config: {source}; broker {describe_connection(config, str(config.endpoints[0]))}, exchange "
            f"'{config.exchange.name}'")
        if not args.no_declare and not config.broker.test_mode:
            out(ensure_exchange(config))
        cnx = hub_connection(config)
        hub = HubSimulator(cnx, echo_log=bool(getattr(args, "debug", False)))
        try:
            callback = callback_for(args.event)
            seconds, logged = hub.request("send", [(callback, kwargs)])
        finally:
            hub.close()
            if cnx is not None:
                cnx.close()
    for level, line in logged:
        out(f"plugin {logging.getLevelName(level).lower()}: {line}")
    if any(level >= logging.ERROR for level, _ in logged):
        return EXIT_FAIL
    what = "logged (test_mode = true)" if config.broker.test_mode else "sent"
    out(f"{args.event} {what} through the plugin ({callback}, preCommit, COMMIT, postCommit: "
        f"{seconds * 1000:.1f} ms in postCommit)")
    return EXIT_OK
