"""`koji-messagebus`: check a setup, preview and watch messages, manage the outbox, run the demo.

Exit codes: 0 success, 1 the broker or the database failed, 2 bad usage or an invalid config,
130 interrupted (except `listen`, for which Ctrl-C is the normal end).  Errors are one line;
`--debug` shows tracebacks and the plugin's debug log.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import filecmp
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

from . import __version__
from .amqp import BrokerError
from .config import DEFAULT_PATH, ENV_VAR, Config, ConfigError, load_config
from .hubconf import HubConfigError, read_database_settings
from .messages import CALLBACK_TYPES, MESSAGE_TYPES, format_event

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_PLUGIN_PATH = "/usr/lib/koji-hub-plugins"
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
DEMO_ARRIVAL_WAIT = 3.0
BUILTIN = "the built-in demo config"
LOCK_WAIT = 10.0


class CliError(Exception):
    """An expected failure: printed as one line (or several, for config problems), then exit."""

    def __init__(self, message: str, code: int = EXIT_FAIL, lines: Sequence[str] = ()):
        self.code = code
        self.lines = list(lines)
        super().__init__(message)


# ---- small helpers -----------------------------------------------------------------------------
def out(text: str = "") -> None:
    print(text, flush=True)


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def explicit_config(args: argparse.Namespace) -> str | None:
    """The config named by --config or $KOJI_MESSAGEBUS_CONFIG, if any."""
    return getattr(args, "config", None) or os.environ.get(ENV_VAR) or None


def get_config(args: argparse.Namespace) -> Config:
    """Load and validate the config; CliError listing every problem."""
    try:
        return load_config(explicit_config(args) or DEFAULT_PATH)
    except ConfigError as exc:
        raise CliError(f"invalid config {exc.path}", EXIT_USAGE, [f"error: {p}" for p in exc.problems]) from None


@contextlib.contextmanager
def demo_config_file() -> Iterator[str]:
    """The built-in demo config as a temporary file (mode 600), removed afterwards."""
    fd, path = tempfile.mkstemp(prefix="koji-messagebus-demo-", suffix=".conf")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(DEMO_CONFIG)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


@contextlib.contextmanager
def config_or_demo(args: argparse.Namespace, purpose: str) -> Iterator[tuple[Config, bool]]:
    """The given config; without one (no --config, no $KOJI_MESSAGEBUS_CONFIG) the built-in demo
    config, even when the hub's config exists: a demo must not publish into a real exchange."""
    use_demo = explicit_config(args) is None and (purpose == "demo" or not os.path.exists(DEFAULT_PATH))
    if not use_demo:
        yield get_config(args), False
        return
    with demo_config_file() as path:
        config = load_config(path)
        yield config, True


def with_exchange(config: Config, name: str | None) -> Config:
    if not name:
        return config
    return dataclasses.replace(config, values={**config.values, ("exchange", "name"): name})


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


def describe_connection(config: Config, endpoint: str) -> str:
    auth = config.get("broker", "auth")
    who = f" as '{config.get('broker', 'username')}'" if auth == "PLAIN" else ""
    vhost = config.get("broker", "vhost")
    return f"{endpoint} ({auth}{who}{', vhost ' + vhost if vhost else ''})"


# ---- check -------------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    path = explicit_config(args) or DEFAULT_PATH
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            out(f"error: {problem}")
        out(f"config {exc.path}: {len(exc.problems)} problem(s); nothing was tried")
        return EXIT_USAGE
    out(f"ok: config {path} is valid")
    for warning in config.warnings:
        out(f"warning: {warning}")
    if config.get("broker", "test_mode"):
        out(f"note: {path}: [broker] test_mode = true: the plugin logs messages instead of sending them; "
            "checking the broker anyway")
    from .publisher import Publisher

    publisher = Publisher(config)
    start = time.monotonic()
    try:
        endpoint = publisher.check()
    except BrokerError as exc:
        out(f"error: {exc}")
        return EXIT_FAIL
    finally:
        publisher.close()
    target = config.target_address() or "per-message addresses ({routing_key} in [exchange] address)"
    out(f"ok: broker {describe_connection(config, endpoint)} accepted the login and the sender attached to "
        f"exchange '{config.exchange}' (address {target}) in {(time.monotonic() - start) * 1000:.0f} ms; "
        "nothing was sent")
    code = EXIT_OK
    if config.get("outbox", "enabled"):
        code = check_outbox(config, getattr(args, "hub_config", None))
    return code


def check_outbox(config: Config, hub_config: str | None) -> int:
    from . import outbox

    path = hub_config or config.get("outbox", "hub_config")
    try:
        settings = read_database_settings(path)
        cnx = settings.connect()
    except HubConfigError as exc:
        out(f"error: outbox: {exc}")
        return EXIT_FAIL
    try:
        rows, age = outbox.status(cnx)
    except Exception as exc:  # noqa: BLE001 - reported as one line
        if outbox.is_undefined_table(exc):
            out(f"error: outbox: table {outbox.TABLE} does not exist in {settings.describe()}: create it with "
                "`koji-messagebus outbox init` (or psql -f conf/messagebus-schema.sql)")
        else:
            out(f"error: outbox: {settings.describe()}: {str(exc).strip().splitlines()[0]}")
        return EXIT_FAIL
    finally:
        cnx.close()
    out(f"ok: outbox table {outbox.TABLE} in {settings.describe()}: {rows} row(s) waiting"
        + (f", the oldest stored {human_age(age)} ago" if rows else ""))
    return EXIT_OK


# ---- preview -----------------------------------------------------------------------------------
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


def preview_config(args: argparse.Namespace) -> Config | None:
    """The config if one is given or exists at the default path (for prefix and address)."""
    if explicit_config(args) is None and not os.path.exists(DEFAULT_PATH):
        return None
    return get_config(args)


def cmd_preview(args: argparse.Namespace) -> int:
    from koji.util import encode_datetime_recurse

    from . import examples
    from .listener import message_record
    from .wire import encode

    config = preview_config(args)
    prefix = args.prefix if args.prefix is not None else (config.get("topic", "prefix") if config else "koji.event")
    if args.kwargs:
        kwargs, origin = read_kwargs(args.kwargs), ("stdin" if args.kwargs == "-" else args.kwargs)
    else:
        kwargs, origin = examples.example(args.event), "the built-in example"
    kwargs = encode_datetime_recurse(kwargs)  # what a @convert_datetime callback receives
    event = format_event(args.event, kwargs, prefix)
    to = config.message_to(event.routing_key) if config else None
    sent = encode(event, to=to, msg_id="(a new UUID per message)", created=time.time())
    received = message_record(_message(sent.payload))
    address = to or (config.target_address() if config else "/exchange/koji.events")
    notes = event.conversions.lossy + event.conversions.lossless
    if args.json:
        out(json.dumps({"type": event.type, "routing_key": event.routing_key, "address": address,
                        "headers": received["headers"], "body": received["body"], "conversions": notes},
                       sort_keys=True, ensure_ascii=False))
        return EXIT_OK
    out(f"# {event.type} from {origin} (prefix '{prefix}'; nothing is sent)")
    out(f"routing key / subject: {event.routing_key}")
    out(f"address:               {address}")
    out("durable:               true; message-id: a new UUID; creation-time: the time of the event")
    out("headers (application-properties):")
    out(json.dumps(received["headers"], indent=2, ensure_ascii=False))
    out("body (AMQP map):")
    out(json.dumps(received["body"], indent=2, sort_keys=True, ensure_ascii=False))
    for note in notes:
        out(f"converted: {note}")
    return EXIT_OK


def _message(payload: bytes):
    from proton import Message

    msg = Message()
    msg.decode(payload)
    return msg


# ---- listen ------------------------------------------------------------------------------------
def cmd_listen(args: argparse.Namespace) -> int:
    from .listener import DEFAULT_SOURCE, HeaderMatch, open_listener, source_addresses, temporary_queue

    try:
        matches = [HeaderMatch(spec) for spec in args.header or []]
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    with config_or_demo(args, "listen") as (config, demo):
        config = with_exchange(config, args.exchange)
        if demo:
            err(f"note: no config at {DEFAULT_PATH}: using the built-in demo config (local RabbitMQ, exchange "
                f"'{config.exchange}'); pass --config for another")
        if args.key and config.get("exchange", "type") != "topic":
            raise CliError(f"--key needs a topic exchange; '{config.exchange}' is configured as "
                           f"{config.get('exchange', 'type')}: use --header", EXIT_USAGE)
        keys = (args.key or ["#"]) if config.get("exchange", "type") == "topic" else [""]
        source, how = (None, "--source given") if args.source else temporary_queue(config, keys)
        sources = [source] if source else source_addresses(config, keys, args.source or DEFAULT_SOURCE)
        listener = open_listener(config, sources)
    try:
        return _listen(args, config, listener, matches, how if source else None)
    finally:
        listener.close()


def _listen(args, config, listener, matches, queue: str | None) -> int:
    from .listener import message_record, render

    binding = ", ".join(args.key or ["#"]) if config.get("exchange", "type") == "topic" else "(all)"
    filters = f"; header match (client-side): {' '.join(map(str, matches))}" if matches else ""
    err(f"listening on {listener.endpoint} exchange '{config.exchange}' ({config.get('exchange', 'type')}), "
        f"binding {binding}{filters}, via {queue or ', '.join(listener.sources)}; Ctrl-C to stop")
    note = None if queue else listener.leftover_queue_note()
    if note and not args.quiet:
        err(f"note: {note}")
    shown = 0

    def handle(msg) -> bool:
        nonlocal shown
        record = message_record(msg)
        if not all(m.matches(record["headers"]) for m in matches):
            return True
        out(render(record, args.pretty))
        shown += 1
        return not (args.count and shown >= args.count)

    until = time.monotonic() + args.timeout if args.timeout else None
    try:
        listener.listen(handle, until)
    except KeyboardInterrupt:
        err(f"stopped after {shown} message(s)")
        return EXIT_OK
    if args.count and shown < args.count:
        err(f"timeout: {shown} of {args.count} message(s) within {args.timeout:g}s")
        return EXIT_FAIL
    return EXIT_OK


# ---- outbox ------------------------------------------------------------------------------------
def outbox_database(args: argparse.Namespace, config: Config | None):
    path = args.hub_config or (config.get("outbox", "hub_config") if config else None)
    if path is None:
        config = get_config(args)
        path = config.get("outbox", "hub_config")
    try:
        settings = read_database_settings(path)
        return settings, settings.connect()
    except HubConfigError as exc:
        raise CliError(str(exc)) from None


def _outbox_error(exc: Exception, settings) -> CliError:
    from . import outbox

    if outbox.is_undefined_table(exc):
        return CliError(f"table {outbox.TABLE} does not exist in {settings.describe()}: create it with "
                        "`koji-messagebus outbox init`")
    return CliError(f"{settings.describe()}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}")


def cmd_outbox_status(args: argparse.Namespace) -> int:
    from . import outbox

    settings, cnx = outbox_database(args, None)
    try:
        rows, age = outbox.status(cnx)
    except Exception as exc:  # noqa: BLE001
        raise _outbox_error(exc, settings) from None
    finally:
        cnx.close()
    out(f"{outbox.TABLE} in {settings.describe()}: {rows} row(s)"
        + (f", the oldest stored {human_age(age)} ago" if rows else ", empty"))
    return EXIT_OK


def cmd_outbox_init(args: argparse.Namespace) -> int:
    from . import outbox

    settings, cnx = outbox_database(args, None)
    try:
        cur = cnx.cursor()
        cur.execute(outbox.SCHEMA)
        cnx.commit()
    except Exception as exc:  # noqa: BLE001
        raise _outbox_error(exc, settings) from None
    finally:
        cnx.close()
    out(f"{outbox.TABLE} is ready in {settings.describe()} (created if it was missing)")
    return EXIT_OK


def cmd_outbox_purge(args: argparse.Namespace) -> int:
    from . import outbox

    settings, cnx = outbox_database(args, None)
    try:
        removed = outbox.purge(cnx, args.older_than)
    except Exception as exc:  # noqa: BLE001
        raise _outbox_error(exc, settings) from None
    finally:
        cnx.close()
    out(f"purged {removed} row(s) older than {human_age(args.older_than)} from {outbox.TABLE} in "
        f"{settings.describe()}")
    return EXIT_OK


def cmd_outbox_flush(args: argparse.Namespace) -> int:
    from . import outbox
    from .publisher import Publisher

    config = get_config(args)
    settings, cnx = outbox_database(args, config)
    publisher = Publisher(config)
    counts = {"sent": 0, "refused": 0}
    failure: list[BrokerError] = []

    def send(batch):
        result = publisher.send(batch)
        counts["refused"] += len(result.lost)
        if result.error and result.unsent:
            failure.append(result.error)
        return result.accepted + [m for m, _ in result.lost], result.unsent

    try:
        total, _age = outbox.status(cnx)
        progress = Progress(f"flushing {outbox.TABLE} ({settings.describe()})", total)
        expired = 0
        lock_wait_until = time.monotonic() + LOCK_WAIT
        while True:
            result = outbox.drain(cnx, send, config.get("outbox", "batch_size"),
                                  max_age=config.get("outbox", "max_age"), max_batches=1)
            expired += result.expired
            if result.locked_out:
                if time.monotonic() < lock_wait_until:
                    time.sleep(0.2)  # a hub process holds the drain lock for one batch at a time
                    continue
                progress.done()
                raise CliError(f"another process held the outbox drain lock for {LOCK_WAIT:g}s (a hub process "
                               "is draining it); try again later")
            lock_wait_until = time.monotonic() + LOCK_WAIT
            counts["sent"] += result.sent
            progress.update(counts["sent"])
            if failure or not result.left:
                break
    except CliError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _outbox_error(exc, settings) from None
    finally:
        publisher.close()
        cnx.close()
    progress.done()
    left = total - counts["sent"] - expired
    summary = f"sent {counts['sent'] - counts['refused']} message(s)"
    if counts["refused"]:
        summary += f", {counts['refused']} refused by the broker (dropped)"
    if expired:
        summary += f", {expired} older than max_age dropped"
    if failure:
        err(f"error: {failure[0]}")
        out(f"{summary}; stopped: the broker failed, {max(left, 0)} row(s) stay in the outbox")
        return EXIT_FAIL
    out(f"{summary}; the outbox is empty")
    return EXIT_OK


class Progress:
    """'label: 120/500' on stderr, rewritten in place on a terminal, every ~0.5 s otherwise."""

    def __init__(self, label: str, total: int):
        self.label, self.total = label, total
        self.tty = sys.stderr.isatty()
        self._last = 0.0
        self.count = 0
        self._shown = -1
        if not self.tty:
            err(f"{label}: {total} row(s)")

    def update(self, count: int) -> None:
        now = time.monotonic()
        self.count = count
        if self.tty:
            sys.stderr.write(f"\r{self.label}: {count}/{self.total}")
            sys.stderr.flush()
        elif now - self._last >= 0.5:
            err(f"{self.label}: {count}/{self.total}")
            self._last = now
            self._shown = count

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()
        elif self._shown != self.count:
            err(f"{self.label}: {self.count}/{self.total}")
            self._shown = self.count


# ---- install-plugin ----------------------------------------------------------------------------
def cmd_install_plugin(args: argparse.Namespace) -> int:
    from . import hub

    source = os.path.join(os.path.dirname(hub.__file__), "messagebus.py")
    directory = args.plugin_path
    target = os.path.join(directory, "messagebus.py")
    if not os.path.isdir(directory):
        raise CliError(f"plugin directory {directory} does not exist (is koji-hub installed here? its hub.conf "
                       "names it as PluginPath): pass --plugin-path DIR")
    if os.path.exists(target):
        if filecmp.cmp(source, target, shallow=False):
            out(f"{target} is already installed and up to date")
            _print_enable_hint(directory)
            return EXIT_OK
        if not args.force:
            raise CliError(f"{target} exists and is not this plugin's shim (Koji's legacy messagebus plugin?); "
                           "move it away or pass --force to replace it")
    try:
        shutil.copyfile(source, target)
        os.chmod(target, 0o644)
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror} (run as root?)") from None
    out(f"installed {target} (imports the plugin from the koji_messagebus package)")
    _print_enable_hint(directory)
    return EXIT_OK


def _print_enable_hint(directory: str) -> None:
    out("To enable it, in /etc/koji-hub/hub.conf, section [hub]:")
    out(f"    PluginPath = {directory}")
    out("    Plugins = messagebus        (add it to the space-separated list if there is one)")
    out(f"then write {DEFAULT_PATH} (every key: conf/messagebus.conf), run `koji-messagebus check`, "
        "and restart the hub (httpd).")


# ---- demo --------------------------------------------------------------------------------------
class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage().splitlines()[0]))


def declare_exchange(config: Config) -> str:
    """Declare the exchange over AMQP 0-9-1 (RabbitMQ 3.x cannot create one over AMQP 1.0), with
    pika if installed (a test dependency), else rabbitmqadmin.  Returns what was done."""
    from .listener import amqp091_connect

    name, ex_type, durable = config.exchange, config.get("exchange", "type"), config.get("exchange", "durable")
    hint = f"rabbitmqadmin declare exchange name={name} type={ex_type} durable={str(durable).lower()}"
    conn, why = amqp091_connect(config)
    if conn is None:
        if why == "pika is not installed":
            return _declare_with_rabbitmqadmin(config, hint)
        return f"could not declare exchange '{name}': {why}; if it is missing: {hint}"
    import pika

    try:
        conn.channel().exchange_declare(name, ex_type, durable=durable)
    except pika.exceptions.ChannelClosedByBroker as exc:
        raise CliError(f"exchange '{name}' exists with other settings than [exchange] type = {ex_type}, "
                       f"durable = {str(durable).lower()}: {exc.reply_text}") from None
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    return f"exchange '{name}' ({ex_type}, {'durable' if durable else 'transient'}) declared over AMQP 0-9-1"


def _declare_with_rabbitmqadmin(config: Config, hint: str) -> str:
    admin = shutil.which("rabbitmqadmin")
    name = config.exchange
    if not admin:
        return f"did not declare exchange '{name}' (neither pika nor rabbitmqadmin here); if it is missing: {hint}"
    import subprocess

    cmd = [admin, "-H", config.endpoints[0].host, *hint.split()[1:]]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not run rabbitmqadmin ({exc}); if the exchange is missing: {hint}"
    if res.returncode == 0:
        return f"exchange '{name}' declared with rabbitmqadmin"
    return f"rabbitmqadmin could not declare exchange '{name}': {(res.stderr or res.stdout).strip()[:200]}"


def _headers_line(headers: dict) -> str:
    return " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in headers.items() if k != "type")


def cmd_demo(args: argparse.Namespace) -> int:
    with config_or_demo(args, "demo") as (config, builtin):
        source = BUILTIN if builtin else config.path
        env_before = os.environ.get(ENV_VAR)
        os.environ[ENV_VAR] = config.path  # the plugin reads its config as in the hub
        try:
            return _demo(args, config, source)
        finally:
            if env_before is None:
                os.environ.pop(ENV_VAR, None)
            else:
                os.environ[ENV_VAR] = env_before


def _demo(args: argparse.Namespace, config: Config, source: str) -> int:
    from . import examples
    from .listener import message_record, open_listener, render, source_addresses, temporary_queue

    story = examples.build_story()
    total = sum(len(events) for _, _, events in story)
    out(f"koji-messagebus demo: a build from task to tag to repo — {len(story)} hub requests, {total} events")
    out(f"  config: {source}; broker {describe_connection(config, str(config.endpoints[0]))}, exchange "
        f"'{config.exchange}' ({config.get('exchange', 'type')})")
    if not args.no_declare:
        out(f"  {declare_exchange(config)}")
    keys = ["#"] if config.get("exchange", "type") == "topic" else [""]
    queue_source, how = temporary_queue(config, keys)
    queue_made = queue_source is not None
    sources = [queue_source] if queue_source else source_addresses(config, keys)
    listener = open_listener(config, sources)
    try:
        what = f"{how}, removed when it leaves" if queue_made else f"{', '.join(sources)} (the broker binds a queue)"
        out(f"  a consumer is listening over AMQP 1.0 on {what}")
        hub = DemoHub(config, debug=bool(getattr(args, "debug", False)))
        try:
            out(f"  plugin loaded as the hub loads it: {hub.describe()}")
            received = _demo_requests(args, config, story, hub, listener, message_record, render)
        finally:
            hub.close()
        note = None if queue_made else listener.leftover_queue_note()
    finally:
        listener.close()
    sent_ok = not config.get("broker", "test_mode")
    if not sent_ok:
        out(f"test_mode = true in {source}: the plugin logged each message instead of sending it; nothing to "
            "receive")
        return EXIT_OK
    out(f"done: the consumer received {received} of {total} message(s)")
    if note:
        out(f"note: {note}")
    if received == total:
        given = "" if source == BUILTIN else f" --config {config.path}"
        out(f"next: `koji-messagebus{given} listen --pretty` in another terminal while you run the demo again; "
            "`koji-messagebus preview Tag` shows any event without a broker")
        return EXIT_OK
    return EXIT_FAIL


def _demo_requests(args, config, story, hub, listener, message_record, render) -> int:
    received = fired = 0
    test_mode = config.get("broker", "test_mode")
    for i, (method, what, events) in enumerate(story, 1):
        out(f"[{i}/{len(story)}] {method}: {what}")
        seconds, logged = hub.request(method, events)
        for level, line in logged:
            out(f"      plugin {logging.getLevelName(level).lower()}: {line}")
        kinds = ", ".join(CALLBACK_TYPES[cb] for cb, _ in events)
        out(f"      hub: {kinds} -> preCommit, COMMIT, postCommit ({seconds * 1000:.1f} ms in postCommit)")
        fired += len(events)
        if test_mode or any(level >= logging.ERROR for level, _ in logged):
            continue  # nothing was sent (the plugin said why)
        expected = fired

        def handle(msg, expected=expected) -> bool:
            nonlocal received
            record = message_record(msg)
            received += 1
            if args.pretty:
                out(render(record, True))
            elif args.json:
                out(render(record, False))
            else:
                out(f"      consumer got {record['type']:<17} {record['routing_key']}  "
                    f"{_headers_line(record['headers'])}")
            return received < expected

        listener.listen(handle, time.monotonic() + DEMO_ARRIVAL_WAIT)
        if received < expected:
            out(f"      consumer: {expected - received} message(s) did not arrive within {DEMO_ARRIVAL_WAIT:g}s")
    return received


class DemoHub:
    """The plugin loaded with koji's PluginTracker from the shim directory, its callbacks
    registered as the hub registers them, and hub requests run through koji's run_callbacks with
    koji's context: callbacks -> preCommit -> COMMIT -> postCommit."""

    MODULE = "_koji_plugin__messagebus"

    def __init__(self, config: Config, debug: bool = False):
        import koji.plugin

        from . import hub as shim_pkg
        from . import plugin as mb_plugin

        self._koji_plugin = koji.plugin
        self._mb_plugin = mb_plugin
        mb_plugin.reset(None)  # a fresh Runtime: reads $KOJI_MESSAGEBUS_CONFIG on first use
        sys.modules.pop(self.MODULE, None)
        tracker = koji.plugin.PluginTracker(path=[os.path.dirname(shim_pkg.__file__)])
        self.module = tracker.load("messagebus")
        self.registered: list[tuple[str, Any]] = []
        for value in vars(self.module).values():
            if isinstance(value, type) or not callable(value):
                continue
            for cbtype in getattr(value, "callbacks", None) or ():
                koji.plugin.register_callback(cbtype, value)
                self.registered.append((cbtype, value))
        self.cnx = None
        if config.get("outbox", "enabled") and not config.get("broker", "test_mode"):
            try:
                self.cnx = read_database_settings(config.get("outbox", "hub_config")).connect()
            except HubConfigError as exc:
                self.close()
                raise CliError(f"[outbox] enabled = true needs the hub database: {exc}") from None
        self._log = logging.getLogger("koji.plugin")
        self._collector = _Collect()
        self._debug = debug  # with --debug the plugin's log also goes to stderr

    def describe(self) -> str:
        names = sorted({f.__name__ for _, f in self.registered})
        types = len({cb for cb, _ in self.registered})
        return f"{self.module.__file__} -> {', '.join(names)} for {types} callback types"

    def request(self, method: str, events: list[tuple[str, dict]]) -> tuple[float, list[tuple[int, str]]]:
        """One hub request; returns the seconds spent in postCommit and the plugin's warnings and
        errors as (level, first line)."""
        from koji.context import context

        self._collector.lines.clear()
        propagate = self._log.propagate
        self._log.addHandler(self._collector)
        self._log.propagate = self._debug
        context._threadclear()
        try:
            context.method = method
            context.commit_pending = True
            context.cnx = self.cnx
            for cbtype, kwargs in events:
                self._koji_plugin.run_callbacks(cbtype, **kwargs)
            self._koji_plugin.run_callbacks("preCommit")
            if self.cnx is not None:
                self.cnx.commit()
            start = time.perf_counter()
            self._koji_plugin.run_callbacks("postCommit")
            seconds = time.perf_counter() - start
        finally:
            context._threadclear()
            self._log.removeHandler(self._collector)
            self._log.propagate = propagate
        return seconds, list(self._collector.lines)

    def close(self) -> None:
        for cbtype, func in self.registered:
            with contextlib.suppress(ValueError):
                self._koji_plugin.callbacks[cbtype].remove(func)
        self.registered = []
        self._mb_plugin.reset(None)
        sys.modules.pop(self.MODULE, None)
        if self.cnx is not None:
            with contextlib.suppress(Exception):
                self.cnx.close()
            self.cnx = None


# ---- the parser --------------------------------------------------------------------------------
LISTEN_HELP = """\
Attach to the exchange with a temporary queue and print each message as it arrives: one JSON
object per line (routing_key, type, id, created, durable, headers, body), or --pretty.

Topic exchange: --key takes binding patterns ('*' one word, '#' any number), e.g.
  --key 'koji.event.Tag.f44-updates-candidate.#' --key 'koji.event.BuildStateChange.state.hello'
Several --key each get their own binding; a message matching several is printed once.

--header NAME=GLOB matches the message's headers ON THE CLIENT SIDE, for both exchange types:
RabbitMQ 3.x cannot bind on AMQP 1.0 application properties (a headers exchange does not see
them), so every message of the binding is received and only the matching ones are printed.
Values compare as text (null, true/false for None and booleans); GLOB may use * and ?.

The queue: RabbitMQ 3.x cannot declare a temporary queue over AMQP 1.0 (its plugin makes the
queue of the source /exchange/NAME/KEY neither exclusive nor auto-delete, so it would stay and
keep collecting messages). With pika installed, the listener declares an auto-delete queue over
AMQP 0-9-1, binds it with the keys and consumes it over AMQP 1.0 (/amq/queue/NAME); the broker
deletes it when the listener leaves. Without pika (or with --source) it uses /exchange/NAME/KEY;
then a queue policy removes the leftovers once unused:
  rabbitmqctl set_policy --apply-to queues koji-messagebus-listeners '^amq\\.gen-' '{"expires":600000}'

Exit: 0 after --count messages, at --timeout, or on Ctrl-C; 1 if the broker fails, or if
--timeout ends before --count messages arrived."""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                        help=f"messagebus.conf to use (default: ${ENV_VAR} or {DEFAULT_PATH})")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and the plugin's debug log")

    parser = argparse.ArgumentParser(
        prog="koji-messagebus", parents=[common],
        description="Check, preview, watch and demonstrate the Koji messagebus hub plugin.",
        epilog="Start with `koji-messagebus demo` (local RabbitMQ) or `koji-messagebus check` (your setup).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("check", parents=[common], help="validate the config, connect and attach as the plugin would",
                       description="Validate the config (every problem at once), connect, authenticate and attach "
                       "to the exchange exactly as the plugin does, sending nothing; report TLS and auth "
                       "weaknesses; with [outbox] enabled also check the hub database and the outbox table. "
                       "One line per finding; exit 0 when the setup works, 1 if the broker or database fails, "
                       "2 for an invalid config.")
    p.add_argument("--hub-config", metavar="FILE", help="hub.conf for the outbox check (default: [outbox] hub_config)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("preview", parents=[common], help="print the message the plugin would send for an event",
                       description="Print the routing key, headers and body the plugin would send for an event, "
                       "from the callback's keyword arguments as JSON (a file, or - for stdin) or from a built-in "
                       "realistic example. Pure: no broker. The prefix and address come from the config if one is "
                       "given or exists.")
    p.add_argument("event", type=message_type_arg, metavar="EVENT",
                   help=f"event type: {', '.join(MESSAGE_TYPES)} (or the callback name, e.g. postTag)")
    p.add_argument("kwargs", nargs="?", metavar="KWARGS_JSON",
                   help="file with the callback's keyword arguments as a JSON object, or - for stdin")
    p.add_argument("--prefix", help="routing key prefix (default: [topic] prefix, or koji.event)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the readable form")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("listen", parents=[common], help="print messages as they arrive",
                       description=LISTEN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--key", action="append", metavar="PATTERN",
                   help="topic binding pattern (repeatable; default '#': everything)")
    p.add_argument("--header", action="append", metavar="NAME=GLOB",
                   help="print only messages whose header matches (repeatable: all must match; client-side)")
    p.add_argument("--count", type=positive_int, metavar="N", help="stop after N printed messages")
    p.add_argument("--timeout", type=positive_float, metavar="SECONDS", help="stop after this long")
    p.add_argument("--pretty", action="store_true", help="readable blocks instead of one JSON object per line")
    p.add_argument("--exchange", metavar="NAME", help="listen to this exchange instead of [exchange] name")
    p.add_argument("--source", metavar="TEMPLATE",
                   help="AMQP 1.0 only: receiver source address with {name} and {key}, e.g. /exchange/{name}/{key} "
                   "(RabbitMQ 3.x); default: a temporary queue prepared with pika when installed, else that")
    p.add_argument("--quiet", action="store_true", help="no note about RabbitMQ 3.x leaving a queue behind")
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("outbox", parents=[common], help="status, flush, purge or create the outbox table",
                       description="Manage the outbox table in the hub's database; the database settings are "
                       "read from hub.conf ([hub] DBName, DBUser, DBHost, DBPort, DBPass or DBConnectionString, "
                       "plus hub.conf.d/*.conf), its path from [outbox] hub_config or --hub-config.")
    osub = p.add_subparsers(dest="outbox_command", metavar="ACTION")
    osub.required = True
    hub_config = argparse.ArgumentParser(add_help=False)
    hub_config.add_argument("--hub-config", metavar="FILE",
                            help="the hub's hub.conf (default: [outbox] hub_config of the config)")
    o = osub.add_parser("status", parents=[common, hub_config], help="rows waiting and the age of the oldest")
    o.set_defaults(func=cmd_outbox_status)
    o = osub.add_parser("flush", parents=[common, hub_config],
                        help="send what the outbox holds now, until it is empty or the broker fails",
                        description="Send the outbox's messages now, oldest first, in batches of [outbox] "
                        "batch_size, with a progress line; stops when empty (exit 0) or when the broker fails "
                        "(exit 1; the rest stays). Rows older than [outbox] max_age are dropped, as the plugin "
                        "does.")
    o.set_defaults(func=cmd_outbox_flush)
    o = osub.add_parser("purge", parents=[common, hub_config], help="delete rows older than an age")
    o.add_argument("--older-than", type=parse_age, required=True, metavar="AGE",
                   help="SECONDS, or a number with s, m, h, d or w: 3600, 90m, 12h, 5d")
    o.set_defaults(func=cmd_outbox_purge)
    o = osub.add_parser("init", parents=[common, hub_config], help="create the outbox table (idempotent)")
    o.set_defaults(func=cmd_outbox_init)

    p = sub.add_parser("install-plugin", parents=[common], help="copy the hub plugin file into the hub's PluginPath",
                       description="Copy the file the hub loads by name (messagebus.py, a shim importing the "
                       "koji_messagebus package) into the hub's PluginPath and say what to add to hub.conf.")
    p.add_argument("--plugin-path", default=DEFAULT_PLUGIN_PATH, metavar="DIR",
                   help="the hub's PluginPath (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing, different messagebus.py")
    p.set_defaults(func=cmd_install_plugin)

    p = sub.add_parser("demo", parents=[common], help="run a build's hub events through the plugin into the broker",
                       description="Load the plugin as the hub does (koji's PluginTracker), fire a build's events "
                       "from task to tag to repo as hub requests (callbacks, preCommit, COMMIT, postCommit) into "
                       "the broker, and print what a consumer attached beforehand received. Without --config or "
                       f"${ENV_VAR}: the built-in config for the local RabbitMQ (guest/guest, exchange "
                       f"{DEMO_EXCHANGE}). The exchange is declared first over AMQP 0-9-1 (pika or rabbitmqadmin), "
                       "since RabbitMQ 3.x cannot create it over AMQP 1.0.")
    p.add_argument("--pretty", action="store_true", help="print each received message in full")
    p.add_argument("--json", action="store_true", help="print each received message as one JSON line")
    p.add_argument("--no-declare", action="store_true", help="do not declare the exchange first")
    p.set_defaults(func=cmd_demo)
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
            return args.func(args)
        except CliError as exc:
            for line in exc.lines or [f"error: {exc}"]:
                err(line)
            if debug:
                raise
            return exc.code
        except BrokerError as exc:
            err(f"error: {exc}")
            if debug:
                raise
            return EXIT_FAIL
        except KeyboardInterrupt:
            err("interrupted")
            return EXIT_OK if args.command == "listen" else EXIT_INTERRUPTED
        except BrokenPipeError:  # `koji-messagebus listen | head`
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        except Exception as exc:  # noqa: BLE001 - one line unless --debug
            if debug:
                raise
            first = (str(exc).strip().splitlines() or [""])[0]
            err(f"error: {type(exc).__name__}: {first} (run with --debug for the traceback)")
            return EXIT_FAIL


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
