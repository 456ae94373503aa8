"""Which broker the tests talk to, from the environment, and what that broker can do.

scripts/test.sh sets KMB_BROKER (rabbitmq3, rabbitmq4, artemis, brokerj) and, when it differs from
the flavour's default as started by scripts/services/*.sh, KMB_BROKER_HOST, KMB_BROKER_PORT,
KMB_BROKER_USER, KMB_BROKER_PASSWORD, KMB_BROKER_TLS_PORT, KMB_BROKER_AMQP091_PORT,
KMB_BROKER_SCRAM_PORT (where the same user logs in with SCRAM-SHA-256/512) and
KMB_BROKER_ADDRESS (an explicit `[exchange] address` for the plugin; empty: the product's
default).  No test names a host or port itself: it asks `target()`.

A test that needs a capability says so with `@pytest.mark.requires("pika", ...)` (or calls
`need(...)`); on a broker without it the test is skipped with the reason, never passed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

# What each broker can do, as set up by scripts/services/*.sh, and why not where it cannot.
FEATURES: dict[str, dict[str, str]] = {
    # feature: {flavour: "" (has it) or the reason it has not}
    "pika": {"rabbitmq3": "", "rabbitmq4": "",
             "artemis": "Artemis is set up with AMQP 1.0 only (no 0-9-1)",
             "brokerj": "Broker-J is set up with AMQP 1.0 only here"},
    "tls": {"rabbitmq3": "", "rabbitmq4": "", "artemis": "", "brokerj": ""},
    "exchanges": {"rabbitmq3": "", "rabbitmq4": "", "brokerj": "",
                  "artemis": "Artemis has addresses, not exchanges"},
    "headers-match": {"rabbitmq4": "", "artemis": "", "brokerj": "",
                      "rabbitmq3": "RabbitMQ 3.10 hides AMQP 1.0 application-properties from a headers exchange"},
    "exchange-creation": {"rabbitmq4": "", "artemis": "", "brokerj": "",
                          "rabbitmq3": "RabbitMQ 3.x cannot create exchanges over AMQP 1.0"},
    "missing-exchange": {"rabbitmq3": "",
                         "rabbitmq4": "the plugin creates the exchange through /management (tests/integration/"
                                      "test_broker_matrix.py covers one it may not create)",
                         "brokerj": "the plugin creates the exchange through $management",
                         "artemis": "Artemis creates addresses on demand: nothing is ever missing"},
    "external-auth": {"rabbitmq3": "",
                      "rabbitmq4": "EXTERNAL (client certificates) is configured on RabbitMQ 3.10 only",
                      "artemis": "EXTERNAL (client certificates) is configured on RabbitMQ 3.10 only",
                      "brokerj": "EXTERNAL (client certificates) is configured on RabbitMQ 3.10 only"},
    "gssapi": {"rabbitmq3": "",
               "rabbitmq4": "the Kerberos test set-up configures RabbitMQ 3.10 only",
               "artemis": "the Kerberos test set-up configures RabbitMQ 3.10 only",
               "brokerj": "the Kerberos test set-up configures RabbitMQ 3.10 only"},
    "scram": {"brokerj": "",  # SCRAM-SHA-256 beside PLAIN on the main port
              "rabbitmq3": "RabbitMQ offers no SCRAM mechanism",
              "rabbitmq4": "RabbitMQ offers no SCRAM mechanism",
              "artemis": "Artemis offers SCRAM-SHA-256/512 only on an acceptor of its own (scram_port 5683, "
                         "no PLAIN there), not on the main port"},
    "quorum-queues": {"rabbitmq4": "", "rabbitmq3": "",
                      "artemis": "quorum queues are RabbitMQ's", "brokerj": "quorum queues are RabbitMQ's"},
    "released-unroutable": {"rabbitmq4": "",
                            "rabbitmq3": "RabbitMQ 3.10 accepts and drops an unroutable message",
                            "artemis": "Artemis keeps addresses without queues silently",
                            "brokerj": "Broker-J's answer to an unroutable message is not checked here"},
}

# The services as scripts/services/*.sh start them: flavour -> defaults.
DEFAULTS: dict[str, dict[str, str]] = {
    "rabbitmq3": {"port": "5672", "user": "guest", "password": "guest", "tls_port": "5671",
                  "amqp091_port": "5672", "scram_port": "", "product": "RabbitMQ", "version": "3.10"},
    "rabbitmq4": {"port": "5673", "user": "guest", "password": "guest", "tls_port": "5674",
                  "amqp091_port": "5673", "scram_port": "", "product": "RabbitMQ", "version": "4.0"},
    "artemis": {"port": "5680", "user": "admin", "password": "admin", "tls_port": "5682",
                "amqp091_port": "", "scram_port": "5683", "product": "apache-activemq-artemis", "version": "2.40"},
    "brokerj": {"port": "5690", "user": "guest", "password": "guest", "tls_port": "5691",
                "amqp091_port": "", "scram_port": "5690", "product": "Apache Qpid Broker-J Core",
                "version": "9.2"},
}


@dataclass(frozen=True)
class BrokerTarget:
    """One broker the tests talk to (loopback only)."""

    flavour: str
    host: str
    port: int
    user: str
    password: str
    tls_port: int | None
    amqp091_port: int | None
    scram_port: int | None
    address: str | None
    product: str
    version: str
    features: frozenset[str] = field(default_factory=frozenset)

    @property
    def endpoint(self) -> str:
        """host:port as the plugin names the broker in its messages."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"amqp://{self.host}:{self.port}"

    @property
    def is_rabbitmq(self) -> bool:
        return self.flavour.startswith("rabbitmq")

    def has(self, feature: str) -> bool:
        return feature in self.features

    def why_not(self, feature: str) -> str:
        """Why this broker lacks `feature` ("" when it has it)."""
        if feature not in FEATURES:
            raise KeyError(f"unknown broker feature {feature!r} (devkit/brokers.py FEATURES)")
        return FEATURES[feature].get(self.flavour, f"{self.flavour} has no {feature}")


def _port(value: str) -> int | None:
    return int(value) if value else None


def from_env(env: dict[str, str] | None = None) -> BrokerTarget:
    """The target described by KMB_BROKER* (default: the RabbitMQ 3.10 of scripts/services)."""
    env = dict(os.environ if env is None else env)
    flavour = env.get("KMB_BROKER", "rabbitmq3") or "rabbitmq3"
    if flavour not in DEFAULTS:
        raise ValueError(f"KMB_BROKER={flavour!r}: expected one of {', '.join(DEFAULTS)}")
    d = DEFAULTS[flavour]

    def get(name: str) -> str:
        return env.get(f"KMB_BROKER_{name.upper()}", d.get(name, ""))

    host = get("host") or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"KMB_BROKER_HOST={host!r}: tests talk to loopback only")
    features = frozenset(f for f, per in FEATURES.items() if per.get(flavour) == "")
    return BrokerTarget(flavour=flavour, host=host, port=int(get("port")), user=get("user"),
                        password=get("password"), tls_port=_port(get("tls_port")),
                        amqp091_port=_port(get("amqp091_port")), scram_port=_port(get("scram_port")),
                        address=get("address") or None,
                        product=d["product"], version=d["version"], features=features)


_TARGET: BrokerTarget | None = None


def target() -> BrokerTarget:
    """The broker of this test run (read once)."""
    global _TARGET
    if _TARGET is None:
        _TARGET = from_env()
    return _TARGET


def need(*features: str) -> BrokerTarget:
    """Skip the running test, with the reason, unless the broker has every feature."""
    t = target()
    for f in features:
        reason = t.why_not(f)
        if reason:
            pytest.skip(f"{t.flavour}: needs {f}: {reason}")
    return t


@pytest.fixture
def broker() -> BrokerTarget:
    """The broker of this run (KMB_BROKER*)."""
    return target()
