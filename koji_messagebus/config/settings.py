"""Loading the plugin's configuration into a Config: typed, frozen, validated at once.

`load_config()` reads `/etc/koji-hub/plugins/messagebus.conf` (or `$KOJI_MESSAGEBUS_CONFIG`),
checks every key at once and raises one `ConfigError` listing each problem with the file,
section, key, the value given and what is allowed.  Secrets are never echoed.
"""

from __future__ import annotations

import configparser
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from koji_messagebus.config import text as configtext
from koji_messagebus.config.advice import security_warnings
from koji_messagebus.config.checks import cross_checks
from koji_messagebus.config.files import FileTooLarge, NotRegularFile, read_regular_file
from koji_messagebus.config.options import OPTIONS, SECRET_KEYS, keys_by_section
from koji_messagebus.config.redact import show_value
from koji_messagebus.config.sections import (
    SECTIONS,
    BrokerSettings,
    Endpoint,
    ExchangeSettings,
    MessageSettings,
    OutboxSettings,
    StatusSettings,
    TopicSettings,
    build_section,
)
from koji_messagebus.errors import SettingsError

DEFAULT_PATH = "/etc/koji-hub/plugins/messagebus.conf"
ENV_VAR = "KOJI_MESSAGEBUS_CONFIG"


class ConfigError(SettingsError):
    """A config that cannot be used; `problems` holds one line per problem."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = [" ".join(p.splitlines()) for p in problems]  # one line each, in any log
        super().__init__("invalid messagebus config:\n  " + "\n  ".join(self.problems))


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
        for section, cls in SECTIONS.items():
            object.__setattr__(self, section, build_section(values, section, cls))

    def __repr__(self) -> str:  # never the password, not even in a debugger or a traceback with locals
        shown = {f"{s}.{k}": ("***" if (s, k) in SECRET_KEYS and v else v) for (s, k), v in self.values.items()}
        return f"Config(path={self.path!r}, values={shown!r}, endpoints={self.endpoints!r})"


def config_path(explicit: str | None = None) -> str:
    return explicit or os.environ.get(ENV_VAR) or DEFAULT_PATH


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
        raise ConfigError(path, configtext.syntax_problems(path, exc, text, keys_by_section())) from None
    if for_sending and not parser.sections():
        raise ConfigError(path, [configtext.empty(path)])
    return parse_config(parser, path, for_sending, text)


def parse_config(parser: configparser.RawConfigParser, path: str, for_sending: bool = True,
                 text: str = "") -> Config:
    """Validate a parsed config (`text`: the file's, to name lines); every problem at once."""
    problems: list[str] = []
    values: dict[tuple[str, str], Any] = {}
    known = {(o.section, o.key) for o in OPTIONS}
    sections = keys_by_section()
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
        problems += cross_checks(values, path, for_sending)
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
