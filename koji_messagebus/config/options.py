"""Every option of messagebus.conf: its section, key, default (written here only), parser, what
is allowed and its documentation.  The sample config, the docs and the loader all read OPTIONS."""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from koji_messagebus.config.security import CYRUS_MECHS

#: routing keys are at most 255 bytes; the prefix leaves room for the type and the name tokens
MAX_PREFIX_BYTES = 128
AUTH_MECHS = ("PLAIN", "EXTERNAL", "ANONYMOUS", "GSSAPI")
SECRET_KEYS = {("broker", "password")}


@dataclass(frozen=True)
class Option:
    section: str
    key: str
    default: Any
    parse: Callable[[str], Any]
    allowed: str
    doc: str


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "yes", "true", "on"):
        return True
    if low in ("0", "no", "false", "off"):
        return False
    raise ValueError


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text.strip())
        if not lo <= value <= hi:
            raise ValueError
        return value
    return parse


def _positive_float(text: str) -> float:
    value = float(text.strip())
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError
    return value


def _choice(*choices: str, upper: bool = False) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().upper() if upper else text.strip().lower()
        if value not in choices:
            raise ValueError
        return value
    return parse


def _text(text: str) -> str:
    return text.strip()


def _seconds_or_zero(text: str) -> float:
    value = float(text.strip())
    if not value >= 0 or value == float("inf"):
        raise ValueError
    return value


def _optional_seconds(text: str) -> float | None:
    """Empty or `none`: no value; else a number of seconds > 0."""
    if text.strip().lower() in ("", "none"):
        return None
    return _positive_float(text)


def _optional_size(text: str) -> int | None:
    """Empty or `none`: no limit; else a number of bytes, optionally with k, M or G (1024-based)."""
    value = text.strip().lower()
    if value in ("", "none"):
        return None
    scale = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}.get(value[-1:], 1)
    number = int(value[:-1] if scale > 1 else value) * scale
    if not 1024 <= number <= 128 * 1024 ** 2:
        raise ValueError
    return number


def _nonempty(text: str) -> str:
    if not text.strip():
        raise ValueError
    return text.strip()


ADDRESS_FIELDS = ("name", "routing_key")


def _address(text: str) -> str:
    """A template naming only {name} and {routing_key}: no attribute or index access
    (`{name.upper}`, `{name[0]}`), conversions or format specs, no other field."""
    value = text.strip()
    if not value:
        raise ValueError
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError:
        raise ValueError from None
    for _literal, name, spec, conversion in parts:
        if name is not None and (name not in ADDRESS_FIELDS or spec or conversion):
            raise ValueError
    return value


def _urls(text: str) -> list[str]:
    urls = text.split()
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ValueError
        if parts.port == 0:  # urlsplit takes :0, and proton would then use the default port
            raise ValueError
    return urls


OPTIONS: tuple[Option, ...] = (
    Option("broker", "host", "localhost", _nonempty, "a host name or address",
           "Broker host (ignored when `urls` is set)."),
    Option("broker", "port", None, _int_range(1, 65535), "an integer from 1 to 65535",
           "Broker port; default 5671 with ssl, 5672 without."),
    Option("broker", "urls", [], _urls, "space-separated amqp://host[:port] or amqps://host[:port] URLs",
           "Brokers to try in order (failover); the first that works is kept. Replaces host/port/ssl."),
    Option("broker", "ssl", False, _bool, "true or false", "Connect with TLS."),
    Option("broker", "cacert", "", _text, "a path to a PEM file of CA certificates",
           "CAs to verify the broker's certificate with; default: the system CA bundle."),
    Option("broker", "cert", "", _text, "a path to a PEM certificate (may also hold the key)",
           "Client certificate for TLS client authentication and auth = EXTERNAL."),
    Option("broker", "key", "", _text, "a path to a PEM private key",
           "Private key of `cert` (leave empty when `cert` holds both)."),
    Option("broker", "ssl_verify", True, _bool, "true or false",
           "Verify the broker's certificate and host name. false is insecure and logged loudly."),
    Option("broker", "auth", "PLAIN", _choice(*AUTH_MECHS, *CYRUS_MECHS, upper=True),
           ", ".join(AUTH_MECHS) + " (proton's own and Cyrus SASL's), or with Cyrus SASL " + ", ".join(CYRUS_MECHS),
           "SASL mechanism; only this one is ever offered to the broker."),
    Option("broker", "username", "", _text, "a user name", "User for auth = PLAIN."),
    Option("broker", "password", "", _text, "a password", "Password for auth = PLAIN (or use password_file)."),
    Option("broker", "password_file", "", _text, "a path to a file holding the password",
           "File whose first line is the password for auth = PLAIN (mode 600)."),
    Option("broker", "principal", "", _text, "a Kerberos principal",
           "Principal for auth = GSSAPI, e.g. messagebus/koji.example.com@EXAMPLE.COM."),
    Option("broker", "keytab", "", _text, "a path to a keytab", "Keytab holding `principal` (auth = GSSAPI)."),
    Option("broker", "service", "amqp", _nonempty, "a Kerberos service name",
           "Service name of the broker's principal (auth = GSSAPI)."),
    Option("broker", "vhost", "", _text, "a virtual host name",
           "Virtual host; sent as the AMQP open hostname `vhost:NAME` (RabbitMQ). Empty: the default."),
    Option("broker", "timeout", 10.0, _positive_float, "a number of seconds > 0",
           "The longest a hub request waits for the broker, in total (connecting happens off the request "
           "path); with the outbox a request stops waiting as soon as the broker goes quiet."),
    Option("broker", "connect_timeout", 5.0, _positive_float, "a number of seconds > 0",
           "How long opening a connection (TCP, TLS, SASL, attach) may take."),
    Option("broker", "heartbeat", 60, _int_range(0, 86400), "an integer number of seconds, 0 to disable",
           "AMQP idle timeout; a connection silent for longer is treated as dead and replaced."),
    Option("broker", "retry_interval", 30.0, _positive_float, "a number of seconds > 0",
           "After a broker failure the hub's sender thread probes in the background, at most this long (and "
           "at most 1 s) apart."),
    Option("broker", "max_pending", 10000, _int_range(0, 10_000_000), "an integer >= 0",
           "Without the outbox: messages kept in memory while the broker is down."),
    Option("broker", "spool_dir", "/var/spool/koji-messagebus", _text, "a directory path, or empty",
           "Messages a hub process still holds when it exits (the broker down or slow for the whole `timeout`, "
           "mostly without the outbox) are written here (0750, owned by the httpd group) and sent by the next "
           "hub process that connects, or by `koji-messagebus spool flush`; empty: they are logged as lost."),
    Option("broker", "test_mode", False, _bool, "true or false", "Log each message instead of sending it."),
    Option("exchange", "name", "koji.events", _nonempty, "an exchange name", "Exchange to publish to."),
    Option("exchange", "type", "topic", _choice("topic", "headers"), "topic or headers",
           "Exchange type: topic routes on the routing key, headers on the message headers."),
    Option("exchange", "durable", True, _bool, "true or false", "Create the exchange durable (where created)."),
    Option("exchange", "address", "auto", _address,
           "auto, or an address template using only {name} and {routing_key}",
           "AMQP 1.0 target address. auto: chosen from the broker's product and version (RabbitMQ 3.x "
           "/exchange/{name}; 4.x /exchanges/{name}/{routing_key}; Artemis one multicast address per routing key; "
           "Broker-J {name}); a template: as written, with {routing_key} each message is addressed on its own."),
    Option("topic", "prefix", "koji.event", _text,
           f"a routing key prefix of at most {MAX_PREFIX_BYTES} bytes, without empty tokens",
           "First token(s) of every routing key."),
    Option("topic", "unsigned_rpm_sign", False, _bool, "true or false",
           "Also publish RPMSign for an RPM imported without a signature (`sigkey` empty or missing), with "
           "~none~ as the key's sigkey token. Off: not sent, as Koji's own protonmsg plugin does."),
    Option("outbox", "enabled", False, _bool, "true or false",
           "Store messages in the hub database before commit and send them after (no loss)."),
    Option("outbox", "batch_size", 500, _int_range(1, 100000), "an integer from 1 to 100000",
           "Messages read from the outbox per batch when draining a backlog."),
    Option("outbox", "max_age", 604800.0, _positive_float, "a number of seconds > 0",
           "Outbox messages older than this are dropped, with an error naming how many."),
    Option("outbox", "hub_config", "/etc/koji-hub/hub.conf", _nonempty, "a path to hub.conf",
           "Where the command line finds the hub's database settings."),
    Option("outbox", "keep", 0.0, _seconds_or_zero, "a number of seconds >= 0",
           "Keep sent messages this long (marked sent, removed in batches afterwards) so that "
           "`koji-messagebus replay` can send them again; 0: delete them once sent."),
    Option("message", "ttl", None, _optional_seconds, "a number of seconds > 0, or none",
           "AMQP time-to-live of every message (the header's ttl, in milliseconds): a broker drops a "
           "message not consumed within it. none: messages never expire."),
    Option("message", "max_size", None, _optional_size, "none, or 1024 bytes to 128M (k, M, G allowed)",
           "Largest encoded message. Above it the `extra` maps of the body are dropped and the message "
           "marked (header extra_dropped); if still too large it is not sent. Both are logged with type, "
           "routing key and size. none: only the 128 MiB encoder limit."),
    Option("status", "dir", "/run/koji-messagebus", _nonempty, "a directory path",
           "Where each hub process writes its figures for `koji-messagebus status` (mode 0750, owned by "
           "the httpd user; the package's tmpfiles.d entry creates it)."),
)


def keys_by_section() -> dict[str, list[str]]:
    """Each section's keys, in OPTIONS order."""
    out: dict[str, list[str]] = {}
    for opt in OPTIONS:
        out.setdefault(opt.section, []).append(opt.key)
    return out
