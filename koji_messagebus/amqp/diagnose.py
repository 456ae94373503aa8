"""Broker conditions and transport failures turned into one-line, typed errors (pure functions).

Every message names the broker endpoint, what was being done and, where one exists, the fix.
Nothing here does I/O; the one check that needs the network (which TLS verification failed) is
handed in by the caller as `explain_tls`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from proton import SASL

from koji_messagebus.amqp.errors import BrokerError, Kind
from koji_messagebus.config.sections import Endpoint
from koji_messagebus.config.security import auth_failure, uses_password
from koji_messagebus.rabbitmq import declare_command


@dataclass(frozen=True)
class Exchange:
    """What the error texts say about the exchange the links are for."""

    name: str
    type: str
    durable: bool
    address: str | None  # the sender's target; None for per-message addresses


def remote_closed(what: str, name: str, desc: str, endpoint: Endpoint, exchange: Exchange) -> BrokerError:
    """The broker closed a link, ended the session or closed the connection with condition
    `name` and description `desc` (either may be empty)."""
    ep = endpoint
    target = exchange.address or "(per-message addresses)"
    if name in ("amqp:not-found", "amqp:resource-deleted") or "no exchange" in desc:
        hint = ""
        if exchange.address and exchange.address.startswith("/exchange/"):
            hint = (" RabbitMQ 3.x cannot create exchanges over AMQP 1.0; declare it on the broker's host: "
                    + declare_command(exchange.name, exchange.type, exchange.durable))
        return BrokerError(Kind.NOT_FOUND, f"exchange '{exchange.name}' (address {target}) does not exist "
                           f"on broker {ep.host}:{ep.port}: {desc or name}.{hint}")
    if name == "amqp:unauthorized-access":
        return BrokerError(Kind.REFUSED, f"broker {ep.host}:{ep.port} refused access to exchange "
                           f"'{exchange.name}' for this user: {desc or name}")
    return BrokerError(Kind.REFUSED, f"{what} {target} on {ep.host}:{ep.port}: "
                       f"{name or 'no reason given'} {desc or ''}".rstrip())


@dataclass(frozen=True)
class Auth:
    """The authentication settings error texts mention (never a secret)."""

    mechanism: str
    username: str = ""
    cert: str = ""
    principal: str = ""


def transport_failed(endpoint: Endpoint, auth: Auth, name: str, desc: str, sasl_outcome: int | None,
                     sasl_mech: str | None, offered: tuple[str, ...] | None,
                     explain_tls: Callable[[str], str]) -> BrokerError:
    """One error for a failed transport: `auth` (SASL refused, mechanism not offered), `tls`
    (certificate not trusted, wrong host name, client certificate refused, not TLS) or
    `connection-lost`."""
    ep = endpoint
    if name == "amqp:unauthorized-access" or sasl_outcome not in (None, SASL.OK):
        why = auth_failure(auth.mechanism, sasl_outcome, sasl_mech, offered, desc, cert=auth.cert,
                           principal=auth.principal)
        who = f" as user '{auth.username}'" if uses_password(auth.mechanism) else ""
        return BrokerError(Kind.AUTH, f"authentication with {auth.mechanism}{who} failed at broker "
                           f"{ep.host}:{ep.port}: {why}")
    if ep.tls and ("SSL" in desc or "TLS" in desc or "certificate" in desc.lower()):
        return BrokerError(Kind.TLS, f"TLS handshake with {ep.host}:{ep.port} failed: {explain_tls(desc)}")
    hint = ""
    if not ep.tls and "\\x15\\x03" in desc:
        hint = " (the broker answered with TLS: set ssl = true or use an amqps:// URL)"
    return BrokerError(Kind.CONNECTION_LOST, f"connection to {ep.host}:{ep.port} closed: "
                       f"{(name + ' ' + desc).strip() or 'by the peer'}{hint}")


def stage(doing: str, sasl_outcome: int | None, sasl_started: bool, frames_in: int, opened: bool,
          mechanism: str) -> str:
    """Where a connection got stuck, for timeout messages."""
    if sasl_started and sasl_outcome is None:
        if frames_in:
            return (f"authenticating with {mechanism} (no SASL outcome; RabbitMQ delays refusing wrong "
                    "credentials by several seconds: check username and password)")
        return "waiting for the AMQP/TLS handshake (is this an AMQP 1.0 port?)"
    if not opened:
        return "opening the AMQP connection"
    return doing
