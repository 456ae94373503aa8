"""RabbitMQ over AMQP 0-9-1 (pika): what RabbitMQ 3.x cannot do over AMQP 1.0.

Its AMQP 1.0 plugin can neither declare an exchange nor a temporary (auto-delete) queue, so the
demo declares its exchange and the listener its queue here.  pika is optional (the `cli` extra):
without it every function says so and the callers fall back or print the command to run.
"""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
import uuid
from collections.abc import Iterable
from typing import Any

from koji_messagebus.config.sections import BrokerSettings, Endpoint, ExchangeSettings
from koji_messagebus.config.settings import Config
from koji_messagebus.errors import BusError

QUEUE_EXPIRES_MS = 60000


class DeclareError(BusError):
    """The exchange exists with other settings than the config's."""


def amqp091_connect(broker: BrokerSettings, ep: Endpoint) -> tuple[Any, str]:
    """(a pika BlockingConnection to the endpoint, or None, and why not): AMQP 0-9-1 with
    the config's TLS settings and PLAIN or EXTERNAL, for what RabbitMQ 3.x cannot do over AMQP
    1.0 (declare exchanges and temporary queues).  pika is optional (a test dependency)."""
    try:
        import pika
    except ImportError:
        return None, "pika is not installed"
    auth = broker.auth
    if auth == "PLAIN":
        credentials = pika.PlainCredentials(broker.username, broker.password)
    elif auth == "EXTERNAL":
        credentials = pika.credentials.ExternalCredentials()
    else:
        return None, f"auth = {auth} is not available over AMQP 0-9-1 here"
    ssl_options = None
    if ep.tls:
        try:
            context = ssl.create_default_context(cafile=broker.cacert or None)
            if not broker.ssl_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if broker.cert:
                context.load_cert_chain(broker.cert, broker.key or None)
        except (OSError, ssl.SSLError) as exc:
            return None, f"TLS setup for AMQP 0-9-1 failed ({exc})"
        ssl_options = pika.SSLOptions(context, server_hostname=ep.host)
    params = pika.ConnectionParameters(
        ep.host, ep.port, virtual_host=broker.vhost or "/", credentials=credentials,
        ssl_options=ssl_options, socket_timeout=broker.connect_timeout, connection_attempts=1,
        blocked_connection_timeout=broker.connect_timeout)
    try:
        return pika.BlockingConnection(params), ""
    except Exception as exc:  # noqa: BLE001 - the AMQP 1.0 path reports the real problem
        return None, f"AMQP 0-9-1 at {ep.host}:{ep.port} failed ({type(exc).__name__})"


def temporary_queue(broker: BrokerSettings, exchange: ExchangeSettings, endpoint: Endpoint,
                    keys: Iterable[str], name: str | None = None,
                    durable: bool = False) -> tuple[str | None, str]:
    """A real temporary queue on RabbitMQ: declared over AMQP 0-9-1 (pika, if installed) as
    auto-delete with x-expires and bound with `keys`, then consumed over AMQP 1.0 at
    `/amq/queue/NAME`; the broker deletes it when the consumer leaves.  With `durable` the named
    queue is durable and stays (a durable subscription).  Returns (the source address, or None
    when this is not possible here, and a note saying what happened)."""
    conn, why = amqp091_connect(broker, endpoint)
    if conn is None:
        return None, why
    import pika

    name = name or f"koji-messagebus-listen-{uuid.uuid4().hex[:12]}"
    keys = list(keys)
    try:
        channel = conn.channel()
        if durable:
            channel.queue_declare(name, durable=True)
        else:
            channel.queue_declare(name, durable=False, exclusive=False, auto_delete=True,
                                  arguments={"x-expires": QUEUE_EXPIRES_MS})
        try:
            for key in keys:
                channel.queue_bind(name, exchange.name, key)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if not durable:
                conn.channel().queue_delete(name)
            return None, f"binding failed: {exc.reply_text}"
        kind = "durable, kept after the listener leaves" if durable else "auto-delete"
        return f"/amq/queue/{name}", f"queue {name} ({kind}, bound with {', '.join(keys)} over AMQP 0-9-1)"
    except Exception as exc:  # noqa: BLE001
        return None, f"AMQP 0-9-1 queue setup failed ({type(exc).__name__}: {exc})"
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def declare_command(name: str, ex_type: str, durable: bool, vhost: str = "/") -> str:
    """A command, run on the broker's host, that declares an exchange on RabbitMQ 3.x and 4.x
    without the management plugin (idempotent)."""
    return (f"rabbitmqctl eval 'rabbit_exchange:declare(rabbit_misc:r(<<\"{vhost}\">>, exchange, <<\"{name}\">>), "
            f"{ex_type}, {str(durable).lower()}, false, false, [], <<\"rabbitmqctl\">>).'")


def declare_hint(config: Config) -> str:
    """declare_command for the configured exchange."""
    return declare_command(config.exchange.name, config.exchange.type, config.exchange.durable,
                           config.broker.vhost or "/")


def _rabbitmqadmin_args(config: Config) -> list[str]:
    name, ex_type, durable = config.exchange.name, config.exchange.type, config.exchange.durable
    return ["declare", "exchange", f"name={name}", f"type={ex_type}", f"durable={str(durable).lower()}"]


def declare_exchange(config: Config) -> str:
    """Declare the exchange over AMQP 0-9-1 with pika if installed, else with rabbitmqadmin (which
    needs the management plugin).  Returns what was done, or the command to run; DeclareError if
    it exists with other settings."""
    name, ex_type, durable = config.exchange.name, config.exchange.type, config.exchange.durable
    hint = declare_hint(config)
    conn, why = amqp091_connect(config.broker, config.endpoints[0])
    if conn is None:
        if why == "pika is not installed":
            return _declare_with_rabbitmqadmin(config, hint)
        return f"could not declare exchange '{name}': {why}; if it is missing: {hint}"
    import pika

    try:
        conn.channel().exchange_declare(name, ex_type, durable=durable)
    except pika.exceptions.ChannelClosedByBroker as exc:
        raise DeclareError(f"exchange '{name}' exists with other settings than [exchange] type = {ex_type}, "
                           f"durable = {str(durable).lower()}: {exc.reply_text}") from None
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    return f"exchange '{name}' ({ex_type}, {'durable' if durable else 'transient'}) declared over AMQP 0-9-1"


def _declare_with_rabbitmqadmin(config: Config, hint: str) -> str:
    admin = shutil.which("rabbitmqadmin")
    name = config.exchange.name
    if not admin:
        return f"did not declare exchange '{name}' (neither pika nor rabbitmqadmin here); if it is missing: {hint}"
    cmd = [admin, "-H", config.endpoints[0].host, *_rabbitmqadmin_args(config)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not run rabbitmqadmin ({exc}); if the exchange is missing: {hint}"
    if res.returncode == 0:
        return f"exchange '{name}' declared with rabbitmqadmin"
    return f"rabbitmqadmin could not declare exchange '{name}': {(res.stderr or res.stdout).strip()[:200]}"
