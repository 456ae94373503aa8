"""The plugin's configuration: every option, its default, validation and documentation.

`load_config()` reads `/etc/koji-hub/plugins/messagebus.conf` (or `$KOJI_MESSAGEBUS_CONFIG`),
checks every key at once and raises one `ConfigError` listing each problem with the file,
section, key, the value given and what is allowed.  Secrets are never echoed.
"""

from __future__ import annotations

import configparser
import dataclasses
import io
import os
import re
import ssl
import stat
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlsplit

from koji_messagebus.config import text as configtext
from koji_messagebus.config.httpd import httpd_group
from koji_messagebus.config.security import BUILTIN_MECHS, CYRUS_MECHS, has_cyrus_sasl, is_ip, uses_password
from koji_messagebus.errors import SettingsError

DEFAULT_PATH = "/etc/koji-hub/plugins/messagebus.conf"
ENV_VAR = "KOJI_MESSAGEBUS_CONFIG"
#: routing keys are at most 255 bytes; the prefix leaves room for the type and the name tokens
MAX_PREFIX_BYTES = 128
AUTH_MECHS = ("PLAIN", "EXTERNAL", "ANONYMOUS", "GSSAPI")
SECRET_KEYS = {("broker", "password")}


class ConfigError(SettingsError):
    """A config that cannot be used; `problems` holds one line per problem."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = [" ".join(p.splitlines()) for p in problems]  # one line each, in any log
        super().__init__("invalid messagebus config:\n  " + "\n  ".join(self.problems))


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
           "at most 1 s) apart; `koji-messagebus outbox flush` does not try again for this long (grows to at "
           "most 10x)."),
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


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{'amqps' if self.tls else 'amqp'}://{self.host}:{self.port}"


@dataclass(frozen=True)
class BrokerSettings:
    """[broker], typed; every default is in OPTIONS (written once), never here."""

    host: str
    port: int | None
    urls: tuple[str, ...]
    ssl: bool
    cacert: str
    cert: str
    key: str
    ssl_verify: bool
    auth: str
    username: str
    password: str = field(repr=False)
    password_file: str
    principal: str
    keytab: str
    service: str
    vhost: str
    timeout: float
    connect_timeout: float
    heartbeat: int
    retry_interval: float
    max_pending: int
    spool_dir: str
    test_mode: bool


@dataclass(frozen=True)
class ExchangeSettings:
    """[exchange], typed."""

    name: str
    type: str
    durable: bool
    address: str

    def target_address(self) -> str | None:
        """The sender link's target, or None when each message carries its own `to`."""
        template = self.address
        if "{routing_key}" in template or template == "auto":
            return None  # auto: amqp.address.route() picks it once the broker is known
        return template.format(name=self.name)

    def message_to(self, routing_key: str) -> str | None:
        """Per-message `to` address (only when the template names {routing_key}), the key
        percent-encoded as one path segment (RabbitMQ 4.x rejects `f44/updates`, routes
        `f44%2Fupdates` with the key `f44/updates`); the subject keeps the real key."""
        template = self.address
        if "{routing_key}" not in template:
            return None
        return template.format(name=self.name, routing_key=quote(routing_key, safe=""))


@dataclass(frozen=True)
class TopicSettings:
    """[topic], typed."""

    prefix: str
    unsigned_rpm_sign: bool


@dataclass(frozen=True)
class OutboxSettings:
    """[outbox], typed."""

    enabled: bool
    batch_size: int
    max_age: float
    hub_config: str
    keep: float


@dataclass(frozen=True)
class MessageSettings:
    """[message], typed."""

    ttl: float | None
    max_size: int | None


@dataclass(frozen=True)
class StatusSettings:
    """[status], typed."""

    dir: str


_SECTIONS: dict[str, type] = {"broker": BrokerSettings, "exchange": ExchangeSettings, "topic": TopicSettings,
                              "outbox": OutboxSettings, "message": MessageSettings, "status": StatusSettings}


def _section(values: Mapping[tuple[str, str], Any], section: str, cls: type) -> Any:
    names = [f.name for f in dataclasses.fields(cls)]
    return cls(**{n: tuple(v) if isinstance(v := values[(section, n)], list) else v for n in names})


@dataclass(frozen=True)
class Config:
    """Validated settings, parsed once: typed and frozen per section (`config.broker.timeout`,
    `config.exchange.name`, `config.topic.prefix`, `config.outbox.enabled`), the only way to read
    them; `warnings` the weak spots."""

    path: str
    values: Mapping[tuple[str, str], Any]
    endpoints: tuple[Endpoint, ...]
    warnings: tuple[str, ...] = field(default=())
    broker: BrokerSettings = field(init=False, repr=False, compare=False)
    exchange: ExchangeSettings = field(init=False, repr=False, compare=False)
    topic: TopicSettings = field(init=False, repr=False, compare=False)
    outbox: OutboxSettings = field(init=False, repr=False, compare=False)
    message: MessageSettings = field(init=False, repr=False, compare=False)
    status: StatusSettings = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = MappingProxyType(dict(self.values))
        object.__setattr__(self, "values", values)
        for section, cls in _SECTIONS.items():
            object.__setattr__(self, section, _section(values, section, cls))

    def __repr__(self) -> str:  # never the password, not even in a debugger or a traceback with locals
        shown = {f"{s}.{k}": ("***" if (s, k) in SECRET_KEYS and v else v) for (s, k), v in self.values.items()}
        return f"Config(path={self.path!r}, values={shown!r}, endpoints={self.endpoints!r})"


def config_path(explicit: str | None = None) -> str:
    return explicit or os.environ.get(ENV_VAR) or DEFAULT_PATH


def show_value(section: str, key: str, raw: str) -> str:
    """A value as error messages show it: secrets hidden, credentials in URLs redacted."""
    if (section, key) in SECRET_KEYS:
        return "'***'"
    if (section, key) == ("broker", "urls"):
        return repr(redact_url(raw))
    return repr(raw)


class NotRegularFile(OSError):
    """A path that is a FIFO, a directory, a device or a socket (or a regular file too large)."""


class FileTooLarge(NotRegularFile):
    """A regular file larger than the reader's limit."""

    def __init__(self, size: int, limit: int):
        self.size, self.limit = size, limit
        super().__init__(f"is larger than {limit} bytes")


def read_regular_file(path: str, limit: int = 1 << 20) -> str:
    """The text of a regular file (UTF-8, a byte-order mark skipped).  Opened without blocking
    and checked with fstat first: a FIFO or a device would otherwise hang the reader."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        mode, size = info.st_mode, info.st_size
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else \
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else \
                "not a regular file"
            raise NotRegularFile(f"is {kind}, not a regular file")
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileTooLarge(max(len(data), size), limit)
    return data.decode("utf-8-sig")


def load_config(path: str | None = None, for_sending: bool = True) -> Config:
    """Read and validate the config file; raise ConfigError listing every problem.  With
    for_sending=False (preview: nothing is sent, nothing connects) credentials are not required."""
    path = config_path(path)
    parser = configparser.RawConfigParser()
    text = ""
    try:
        text = read_regular_file(path)
        parser.read_file(io.StringIO(text), path)
    except FileNotFoundError:
        raise ConfigError(path, [f"{path}: file not found (set {ENV_VAR} or create it with "
                                 "`koji-messagebus sample-config`)"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [configtext.not_utf8(path, exc)]) from None
    except FileTooLarge as exc:
        raise ConfigError(path, [configtext.too_large(path, exc.size, exc.limit, ENV_VAR)]) from None
    except NotRegularFile as exc:
        raise ConfigError(path, [f"{path}: cannot be read: it {exc}; point {ENV_VAR} (or {DEFAULT_PATH}) at "
                                 "the config file itself"]) from None
    except OSError as exc:
        raise ConfigError(path, [f"{path}: cannot be read: {exc.strerror or exc}"]) from None
    except configparser.Error as exc:
        raise ConfigError(path, configtext.syntax_problems(path, exc, text, _keys_by_section())) from None
    if for_sending and not parser.sections():
        raise ConfigError(path, [configtext.empty(path)])
    return parse_config(parser, path, for_sending, text)


def _keys_by_section() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for opt in OPTIONS:
        out.setdefault(opt.section, []).append(opt.key)
    return out


def parse_config(parser: configparser.RawConfigParser, path: str, for_sending: bool = True,
                 text: str = "") -> Config:
    """Validate a parsed config (`text`: the file's, to name lines); every problem at once."""
    problems: list[str] = []
    values: dict[tuple[str, str], Any] = {}
    known = {(o.section, o.key) for o in OPTIONS}
    sections = _keys_by_section()
    misplaced = [s for s in parser.sections() if s not in sections and parser.options(s)]
    for section in misplaced:  # misspelt, probably: one line for the section, not one per key
        problems.append(configtext.unknown_section(path, text, section, parser.options(section), sections))
    for section in parser.sections():
        if section in misplaced:
            continue
        for key in parser.options(section):
            if (section, key) not in known:
                problems.append(f"{path}: [{section}] {key}: unknown key (allowed in [{section}]: "
                                f"{', '.join(o.key for o in OPTIONS if o.section == section) or 'none'})")
    for opt in OPTIONS:
        if parser.has_option(opt.section, opt.key):
            raw = parser.get(opt.section, opt.key)
            try:
                values[(opt.section, opt.key)] = opt.parse(raw)
            except ValueError:
                problems.append(f"{path}: [{opt.section}] {opt.key} = {show_value(opt.section, opt.key, raw)}"
                                f" is invalid: must be {opt.allowed}")
                values[(opt.section, opt.key)] = opt.default
        else:
            values[(opt.section, opt.key)] = opt.default
    warnings = [f"{path}: [{section}]: unknown section, ignored (sections: "
                f"{', '.join(dict.fromkeys(o.section for o in OPTIONS))}); fix: correct its name or remove it"
                for section in parser.sections() if section not in {o.section for o in OPTIONS}
                and not parser.options(section)]
    if for_sending:
        _read_password_file(values, path, problems)
    endpoints = _endpoints(values)
    if not misplaced:  # else they would judge keys read from the wrong place ("username is empty")
        problems += _cross_checks(values, path, for_sending)
    if problems:
        raise ConfigError(path, problems)
    if for_sending:
        warnings += security_warnings(path, values, endpoints)
    return Config(path, values, endpoints, tuple(warnings))


def _read_password_file(values: dict, path: str, problems: list[str]) -> None:
    pw_file = values[("broker", "password_file")]
    if not pw_file:
        return
    if values[("broker", "password")]:
        problems.append(f"{path}: [broker] password_file: set together with password; keep only one")
        return
    try:
        values[("broker", "password")] = read_regular_file(pw_file, 1 << 16).split("\n", 1)[0].rstrip("\r")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problems.append(f"{path}: [broker] password_file = {pw_file!r} cannot be read ({reason}): "
                        "must be a readable file whose first line is the password")


def _endpoints(values: dict) -> tuple[Endpoint, ...]:
    urls = values[("broker", "urls")]
    if urls:
        eps = []
        for url in urls:
            parts = urlsplit(url)
            tls = parts.scheme == "amqps"
            eps.append(Endpoint(parts.hostname or "", parts.port or (5671 if tls else 5672), tls))
        return tuple(eps)
    tls = values[("broker", "ssl")]
    port = values[("broker", "port")] or (5671 if tls else 5672)
    return (Endpoint(values[("broker", "host")], port, tls),)


def _cross_checks(values: dict, path: str, for_sending: bool = True) -> list[str]:
    problems = _prefix_checks(values, path)
    if for_sending:
        problems += _sending_checks(values, path)
    return problems


def _prefix_checks(values: dict, path: str) -> list[str]:
    prefix = values[("topic", "prefix")]
    problems = []
    if values[("exchange", "type")] == "topic" and not re.fullmatch(r"[^#*]*", prefix):
        problems.append(f"{path}: [topic] prefix = {prefix!r}: must not contain * or #")
    if prefix and (prefix.startswith(".") or prefix.endswith(".") or ".." in prefix):
        problems.append(f"{path}: [topic] prefix = {prefix!r} would make an empty routing-key token: "
                        "write it without a leading, trailing or doubled '.' "
                        f"(e.g. {'.'.join(filter(None, prefix.split('.')))!r})")
    size = len(prefix.encode("utf-8", "surrogatepass"))
    if size > MAX_PREFIX_BYTES:
        problems.append(f"{path}: [topic] prefix is {size} bytes long: at most {MAX_PREFIX_BYTES} bytes, so that "
                        "routing keys (255 bytes at most) keep room for the type and the names")
    return problems


def _sending_checks(values: dict, path: str) -> list[str]:
    """What connecting needs: credentials, TLS files."""
    problems = []
    auth = values[("broker", "auth")]
    for url in values[("broker", "urls")]:
        if "@" in (urlsplit(url).netloc or ""):
            problems.append(f"{path}: [broker] urls = {redact_url(url)!r}: credentials in URLs are not used; "
                            "put them in username and password (or password_file)")
    if uses_password(auth):
        if not values[("broker", "username")]:
            problems.append(f"{path}: [broker] username is empty: auth = {auth} needs username and password")
        if not values[("broker", "password")]:
            problems.append(f"{path}: [broker] password is empty: auth = {auth} needs a password "
                            "(password or password_file)")
    if auth not in BUILTIN_MECHS and auth != "GSSAPI" and not has_cyrus_sasl():
        problems.append(f"{path}: [broker] auth = {auth}: proton has only PLAIN, EXTERNAL and ANONYMOUS without "
                        "Cyrus SASL (proton.SASL.extended() is False); reinstall it with libsasl2-dev present")
    if auth == "EXTERNAL" and not values[("broker", "cert")]:
        problems.append(f"{path}: [broker] cert is empty: auth = EXTERNAL authenticates with a client "
                        "certificate; set cert (and key)")
    tls_used = values[("broker", "ssl")] or any(u.startswith("amqps:") for u in values[("broker", "urls")])
    if auth == "EXTERNAL" and not tls_used:
        problems.append(f"{path}: [broker] auth = EXTERNAL needs TLS: set ssl = true or use amqps:// URLs")
    if auth == "GSSAPI":
        if not values[("broker", "principal")]:
            problems.append(f"{path}: [broker] principal is empty: auth = GSSAPI needs principal and keytab")
        if not values[("broker", "keytab")]:
            problems.append(f"{path}: [broker] keytab is empty: auth = GSSAPI needs principal and keytab")
        if values[("broker", "vhost")]:
            problems.append(f"{path}: [broker] vhost = {values[('broker', 'vhost')]!r} cannot be used with auth = "
                            "GSSAPI: proton would ask Kerberos for amqp/vhost:NAME instead of amqp/HOST; leave "
                            "vhost empty")
        if values[("broker", "service")] != "amqp":
            problems.append(f"{path}: [broker] service = {values[('broker', 'service')]!r}: proton's Cyrus SASL "
                            "always asks for the service principal amqp/HOST@REALM; only service = amqp works")
        if not has_cyrus_sasl():
            problems.append(f"{path}: [broker] auth = GSSAPI: this python-qpid-proton has no Cyrus SASL "
                            "(proton.SASL.extended() is False); reinstall it with libsasl2-dev present")
    for key in ("cacert", "cert", "key", "keytab"):
        file = values[("broker", key)]
        if file and not os.access(file, os.R_OK):
            problems.append(f"{path}: [broker] {key} = {file!r}: file missing or not readable")
    if values[("broker", "key")] and not values[("broker", "cert")]:
        problems.append(f"{path}: [broker] key is set but cert is empty: set cert too")
    return problems


def security_warnings(path: str, values: dict, endpoints: tuple[Endpoint, ...]) -> list[str]:
    """Weak spots of a valid config: each a line naming the key and the fix."""
    warnings = []
    auth = values[("broker", "auth")]
    if auth == "PLAIN" and not all(ep.tls for ep in endpoints):
        warnings.append(f"{path}: [broker] auth = PLAIN without TLS sends the password in clear text; "
                        "set ssl = true (or amqps:// URLs)")
    if any(ep.tls for ep in endpoints) and not values[("broker", "ssl_verify")]:
        warnings.append(f"{path}: [broker] ssl_verify = false: the broker's certificate and host name are "
                        "NOT verified, anyone on the path can impersonate it; set ssl_verify = true")
    if values[("broker", "ssl_verify")]:
        for ep in endpoints:
            if ep.tls and is_ip(ep.host):
                warnings.append(f"{path}: [broker] TLS to {ep.host}: proton checks the broker's certificate "
                                "against DNS names only, so an IP address fails verification; use the broker's "
                                "host name as in its certificate")
    secrets = []
    if values[("broker", "password_file")]:
        secrets.append(("password_file", values[("broker", "password_file")], "holds a password"))
    elif values[("broker", "password")]:
        secrets.append(("config file", path, "holds a password"))
    for key in ("key", "keytab"):
        if values[("broker", key)]:
            secrets.append((key, values[("broker", key)], "is a secret"))
    if values[("broker", "cert")] and not values[("broker", "key")] and _holds_private_key(values[("broker", "cert")]):
        secrets.append(("cert", values[("broker", "cert")], "holds a private key"))
    for key, file, what in secrets:
        try:
            mode = os.stat(file).st_mode
        except OSError:
            continue
        if mode & stat.S_IROTH:  # group-readable is how the hub reads it: 0640 root:<httpd's group>
            group = httpd_group()
            warnings.append(f"{file} ({key}) {what} and is readable by other users "
                            f"(mode {stat.S_IMODE(mode):o}); fix: chown root:{group} {file} && chmod 640 {file} "
                            f"(or chmod 600 {file} if {group} owns it)")
    return warnings


def _holds_private_key(path: str) -> bool:
    """A combined PEM: certificate and private key in one file."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return "PRIVATE KEY-----" in fh.read(1 << 20)
    except OSError:
        return False


_URL_START = re.compile(r"(?i)\bamqps?://")


def redact_url(text: str) -> str:
    """Hide the user information of each URL in `text` (one URL or the `urls` list), found by
    structure, not by what a password may hold: a URL runs from its `amqp://`/`amqps://` to the
    next one, and everything before the last `@` of that stretch goes (a password may hold
    spaces, `/`, `:` or `@`).  Text before the first URL is treated the same way."""
    starts = [m.start() for m in _URL_START.finditer(text)]
    bounds = [0, *[i for i in starts if i > 0], len(text)]
    out = []
    for begin, end in zip(bounds, bounds[1:]):
        part = text[begin:end]
        at = part.rfind("@")
        if at >= 0:
            scheme = _URL_START.match(part)
            head = part[:scheme.end()] if scheme else ""
            part = f"{head}***{part[at:]}"
        out.append(part)
    return "".join(out)


def default_cafile() -> str:
    """The system CA bundle as OpenSSL sees it."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and os.path.exists(candidate):
            return candidate
    return ""


def render_sample() -> str:
    """The documented sample config: every key with its default (data/messagebus.conf is built on it)."""
    lines = []
    section = None
    for opt in OPTIONS:
        if opt.section != section:
            section = opt.section
            lines.append(f"\n[{section}]")
        lines.append(f"# {opt.doc}")
        lines.append(f"# Allowed: {opt.allowed}.")
        default = opt.default
        if isinstance(default, bool):
            default = str(default).lower()
        elif isinstance(default, list):
            default = " ".join(default)
        elif default is None:
            default = ""
        elif isinstance(default, float) and default.is_integer():
            default = int(default)
        lines.append(f"#{opt.key} = {default}")
    return "\n".join(lines).lstrip() + "\n"
