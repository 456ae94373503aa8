"""The typed, frozen sections a Config is read through (`config.broker.timeout`), and the
broker endpoints.  They hold no defaults: every value comes from OPTIONS, parsed once."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote


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


SECTIONS: dict[str, type] = {"broker": BrokerSettings, "exchange": ExchangeSettings, "topic": TopicSettings,
                              "outbox": OutboxSettings, "message": MessageSettings, "status": StatusSettings}


def build_section(values: Mapping[tuple[str, str], Any], section: str, cls: type) -> Any:
    """One section's dataclass from the parsed values (lists become tuples: the sections are frozen)."""
    names = [f.name for f in dataclasses.fields(cls)]
    return cls(**{n: tuple(v) if isinstance(v := values[(section, n)], list) else v for n in names})
