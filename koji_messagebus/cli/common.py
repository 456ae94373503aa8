"""What every command shares: exit codes, the one-line error, output, config loading (with the
built-in demo config as fallback for listen and demo) and argument types."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from urllib.parse import unquote, urlsplit

from koji_messagebus.config.redact import redact_url
from koji_messagebus.config.settings import DEFAULT_PATH, ENV_VAR, Config, ConfigError, load_config
from koji_messagebus.errors import CommandError
from koji_messagebus.format.messages import CALLBACK_TYPES, MESSAGE_TYPES

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEMO_EXCHANGE = "koji.demo"
DEMO_CONFIG = f"""\
# koji-messagebus demo: the local RabbitMQ (AMQP 1.0 plugin), its default guest account
[broker]
host = 127.0.0.1
port = 5672
auth = PLAIN
username = guest
password = guest
timeout = 10
connect_timeout = 5

[exchange]
name = {DEMO_EXCHANGE}
type = topic
durable = true

[topic]
prefix = koji.event
"""
BUILTIN = "the built-in demo config"

class CliError(CommandError):
    """An expected failure: printed as one line (or several, for config problems), then exit."""

    def __init__(self, message: str, code: int = EXIT_FAIL, lines: Sequence[str] = ()):
        self.code = code
        self.lines = list(lines)
        super().__init__(message)


def out(text: str = "") -> None:
    print(text, flush=True)


def out_to_pipe(text: str = "") -> None:
    """`out` for commands that must finish their work when the reader leaves (`demo | head -5`):
    once stdout is a closed pipe, the rest of the output goes to /dev/null."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def add_plugin_options(parser: argparse.ArgumentParser) -> None:
    """--exchange and --prefix for commands that publish through the plugin (demo, send)."""
    parser.add_argument("--exchange", metavar="NAME", help="publish to this exchange instead of [exchange] name")
    parser.add_argument("--prefix", metavar="PREFIX", help="routing key prefix instead of [topic] prefix")


@contextlib.contextmanager
def plugin_config(config: Config, exchange: str | None = None, prefix: str | None = None) -> Iterator[Config]:
    """The config the plugin will read (through $KOJI_MESSAGEBUS_CONFIG, as in the hub), with
    --exchange/--prefix applied in a temporary copy (mode 600); the environment is restored after."""
    import configparser

    path = config.path
    tmp = None
    if exchange or prefix is not None:
        parser = configparser.RawConfigParser()
        parser.read(config.path, encoding="utf-8")
        for section, key, value in (("exchange", "name", exchange), ("topic", "prefix", prefix)):
            if value is not None and (value or key == "prefix"):
                if not parser.has_section(section):
                    parser.add_section(section)
                parser.set(section, key, value)
        fd, tmp = tempfile.mkstemp(prefix="koji-messagebus-", suffix=".conf")
        with os.fdopen(fd, "w") as fh:
            parser.write(fh)
        try:
            config = load_config(tmp)
        except ConfigError as exc:
            os.unlink(tmp)
            raise CliError("invalid --exchange/--prefix", EXIT_USAGE, [f"error: {p}" for p in exc.problems]) from None
        path = tmp
    before = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = path
    try:
        yield config
    finally:
        if before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = before
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def add_broker_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", metavar="URL",
                        help="with the built-in demo config: this broker instead of the local RabbitMQ, "
                        "amqp[s]://[USER:PASSWORD@]HOST[:PORT] (default account guest/guest)")


def parent_parser() -> argparse.ArgumentParser:
    """--config and --debug, accepted before and after every command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                        help=f"messagebus.conf to use (default: ${ENV_VAR} or {DEFAULT_PATH})")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and the plugin's debug log")
    return common


def default_path() -> str:
    """The hub's config path (a module global, so that tests can point it elsewhere)."""
    return DEFAULT_PATH


def explicit_config(args: argparse.Namespace) -> str | None:
    """The config named by --config or $KOJI_MESSAGEBUS_CONFIG, if any."""
    return getattr(args, "config", None) or os.environ.get(ENV_VAR) or None


def config_path(args: argparse.Namespace) -> str:
    return explicit_config(args) or default_path()


def get_config(args: argparse.Namespace, for_sending: bool = True) -> Config:
    """Load and validate the config; CliError listing every problem.  for_sending=False: the
    command never connects (preview), so credentials are not required."""
    try:
        return load_config(config_path(args), for_sending=for_sending)
    except ConfigError as exc:
        raise CliError(f"invalid config {exc.path}", EXIT_USAGE, [f"error: {p}" for p in exc.problems]) from None


def config_if_any(args: argparse.Namespace) -> Config | None:
    """The config if one is given or exists at the default path; None otherwise (preview's: it
    never connects, so no credentials are needed)."""
    if explicit_config(args) is None and not os.path.exists(default_path()):
        return None
    return get_config(args, for_sending=False)


def demo_config_text(broker: str | None = None) -> str:
    """The built-in demo config; `broker` (amqp[s]://[USER:PASSWORD@]HOST[:PORT]) replaces the local
    RabbitMQ and its guest account."""
    if not broker:
        return DEMO_CONFIG
    url = urlsplit(broker)
    try:
        port = url.port
    except ValueError:
        port = -1
    if url.scheme not in ("amqp", "amqps") or not url.hostname or port == -1 or url.path not in ("", "/"):
        raise CliError(f"--broker {redact_url(broker)!r}: expected amqp://HOST[:PORT] or amqps://HOST[:PORT], "
                       "optionally with USER:PASSWORD@", EXIT_USAGE)
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    lines = []
    for line in DEMO_CONFIG.splitlines():
        if line.startswith(("host = ", "port = ")):
            continue
        if line.startswith("username = ") and url.username is not None:
            line = f"username = {unquote(url.username)}"
        elif line.startswith("password = ") and url.password is not None:
            line = f"password = {unquote(url.password)}"
        lines.append(line)
        if line == "[broker]":
            lines.append(f"urls = {url.scheme}://{host}{f':{port}' if port else ''}")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def demo_config_file(broker: str | None = None) -> Iterator[str]:
    """The built-in demo config as a temporary file (mode 600), removed afterwards."""
    text = demo_config_text(broker)
    fd, path = tempfile.mkstemp(prefix="koji-messagebus-demo-", suffix=".conf")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


@contextlib.contextmanager
def config_or_demo(args: argparse.Namespace, purpose: str) -> Iterator[tuple[Config, bool]]:
    """The given config; without one (no --config, no $KOJI_MESSAGEBUS_CONFIG) the built-in demo
    config, even when the hub's config exists: a demo must not publish into a real exchange."""
    broker = getattr(args, "broker", None)
    if broker and explicit_config(args) is not None:
        raise CliError("--broker replaces the broker of the built-in demo config; with --config (or "
                       f"${ENV_VAR}), set [broker] urls there instead", EXIT_USAGE)
    use_demo = explicit_config(args) is None and (purpose == "demo" or bool(broker)
                                                 or not os.path.exists(default_path()))
    if not use_demo:
        yield get_config(args), False
        return
    with demo_config_file(broker) as path:
        try:
            config = load_config(path)
        except ConfigError as exc:  # only --broker can make the built-in config invalid
            raise CliError("invalid --broker", EXIT_USAGE, [f"error: --broker: {p.split(': ', 1)[-1]}"
                                                            for p in exc.problems]) from None
        yield config, True


def with_exchange(config: Config, name: str | None) -> Config:
    if not name:
        return config
    return dataclasses.replace(config, values={**config.values, ("exchange", "name"): name})


def describe_connection(config: Config, endpoint: str) -> str:
    auth = config.broker.auth
    who = f" as '{config.broker.username}'" if auth == "PLAIN" else ""
    vhost = config.broker.vhost
    return f"{endpoint} ({auth}{who}{', vhost ' + vhost if vhost else ''})"


# ---- argument types ----------------------------------------------------------------------------
def parse_age(text: str) -> float:
    """'3600', '90s', '30m', '12h', '5d', '2w' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age: use SECONDS or a number with s, m, h, d or w "
                                         "(e.g. 12h, 5d)")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number of seconds > 0")
    return value


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be an integer >= 1")
    return int(text)


def message_type_arg(text: str) -> str:
    """'Tag', 'tag' or 'postTag' -> 'Tag'."""
    by_lower = {t.lower(): t for t in MESSAGE_TYPES}
    by_lower.update({cb.lower(): t for cb, t in CALLBACK_TYPES.items()})
    try:
        return by_lower[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown event {text!r}; one of: {', '.join(MESSAGE_TYPES)}") from None


def need_validator() -> None:
    """--validate: a usage error, naming the extra to install, when jsonschema is missing."""
    from koji_messagebus.schema import SchemaError, require_validator

    try:
        require_validator()
    except SchemaError as exc:
        raise CliError(f"--validate: {exc}", EXIT_USAGE) from None
