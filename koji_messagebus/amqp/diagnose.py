"""Broker conditions and transport failures turned into one-line, typed errors (pure functions).

Every message names the broker endpoint, what was being done and, where one exists, the fix.
Nothing here does I/O; the one check that needs the network (which TLS verification failed) is
handed in by the caller as `explain_tls`.
"""

from __future__ import annotations

import re
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


#: AMQP 0-9-1 reply codes, which RabbitMQ's AMQP 1.0 plugin (3.x) passes on inside an Erlang term
REPLY_CODES = {320: "CONNECTION_FORCED", 402: "INVALID_PATH", 403: "ACCESS_REFUSED", 404: "NOT_FOUND",
               405: "RESOURCE_LOCKED", 406: "PRECONDITION_FAILED", 501: "FRAME_ERROR", 502: "SYNTAX_ERROR",
               503: "COMMAND_INVALID", 504: "CHANNEL_ERROR", 505: "UNEXPECTED_FRAME", 506: "RESOURCE_ERROR",
               530: "NOT_ALLOWED", 540: "NOT_IMPLEMENTED", 541: "INTERNAL_ERROR"}
#: an Erlang binary as RabbitMQ prints it: bytes (<<104,105>>) or a string (<<"hi">>, <<"hé"/utf8>>)
_BINARY = re.compile(r'<<((?:\d{1,3},)*\d{1,3})?>>|<<"((?:[^"\\]|\\.)*)"(?:/utf8)?>>')
#: RabbitMQ 3.x (session ended): {shutdown,{connection_closing,{server_initiated_close,320,<<...>>}}}
_SERVER_CLOSE = re.compile(r'server_initiated_close,\s*(\d+),\s*("(?:[^"\\]|\\.)*")')
#: RabbitMQ 4.x (connection closed): Connection forced: <<"...">>
_FORCED = re.compile(r'^Connection forced: ("(?:[^"\\]|\\.)*")\s*$')
#: descriptions longer than this are cut (a crash report can be kilobytes)
MAX_DESCRIPTION = 500


def _binary_text(match: re.Match[str]) -> str:
    """One Erlang binary as a double-quoted text: UTF-8 bytes decoded; anything else kept as it was."""
    numbers, string = match.group(1), match.group(2)
    if string is not None:
        return f'"{string}"'
    try:
        raw = bytes(int(n) for n in numbers.split(",")) if numbers else b""
        text = raw.decode("utf-8")
    except ValueError:  # a number above 255, or not UTF-8: leave the bytes be
        return match.group(0)
    if not text.isprintable():
        return match.group(0)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(quoted: str) -> str:
    return re.sub(r'\\(.)', r"\1", quoted[1:-1])


def erlang_text(desc: str) -> str:
    """A broker's description with each Erlang binary shown as text, one line, at most
    MAX_DESCRIPTION characters: RabbitMQ 3.x prints `close_all_connections "hello"` as
    `<<104,101,108,108,111>>`, which an admin cannot read."""
    text = _BINARY.sub(_binary_text, " ".join(desc[:4 * MAX_DESCRIPTION].split()))
    return text if len(text) <= MAX_DESCRIPTION else text[:MAX_DESCRIPTION - 3] + "..."


def forced_close(desc: str) -> str | None:
    """'CONNECTION_FORCED - hello' for a close an operator or the broker forced (rabbitmqctl
    close_connection / close_all_connections, a node shutting down), from RabbitMQ 3.x's
    `{shutdown,{connection_closing,{server_initiated_close,320,<<...>>}}}` or 4.x's
    `Connection forced: <<"...">>`; None for anything else."""
    text = erlang_text(desc)
    match = _SERVER_CLOSE.search(text)
    if match:
        code, reason = int(match.group(1)), _unquote(match.group(2))
        name = REPLY_CODES.get(code, f"reply code {code}")
    else:
        match = _FORCED.match(text)
        if not match:
            return None
        name, reason = "CONNECTION_FORCED", _unquote(match.group(1))
    if not reason or reason.startswith(name):  # 0-9-1 texts already start with the name
        return reason or name
    return f"{name} - {reason}"


def remote_closed(what: str, name: str, desc: str, endpoint: Endpoint, exchange: Exchange) -> BrokerError:
    """The broker closed a link, ended the session or closed the connection with condition
    `name` and description `desc` (either may be empty)."""
    ep = endpoint
    target = exchange.address or "(per-message addresses)"
    forced = forced_close(desc)
    if forced:  # not a verdict on our messages: reconnect (and another endpoint may take them)
        return BrokerError(Kind.CONNECTION_LOST, f"connection to {ep.host}:{ep.port} closed by the broker: {forced}")
    desc = erlang_text(desc)
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
    elif "AMQP\\x00\\x00\\x09" in desc:
        hint = " (the broker speaks AMQP 0-9-1 only here: on RabbitMQ 3.x enable the rabbitmq_amqp1_0 plugin)"
    elif "Unknown protocol" in desc or "protocol header" in desc:
        hint = " (the peer sent something that is not AMQP: is this an AMQP 1.0 port?)"
    return BrokerError(Kind.CONNECTION_LOST, f"connection to {ep.host}:{ep.port} closed: "
                       f"{(name + ' ' + desc).strip() or 'by the peer'}{hint}")


def timed_out(endpoint: Endpoint, stage_text: str, heard: bool, waited: float) -> BrokerError:
    """A wait that ran out.  `heard`: the peer ever sent a byte on this connection; one that
    accepted the TCP connection and never did is frozen (SIGSTOP, a hung node) or overloaded, not
    some other protocol (that one answers, see `transport_failed`)."""
    ep = endpoint
    if not heard:
        return BrokerError(Kind.TIMEOUT, f"broker {ep.host}:{ep.port} accepted the connection but did not answer "
                           f"within {_seconds(waited)} s (frozen or overloaded?)")
    return BrokerError(Kind.TIMEOUT, f"broker {ep.host}:{ep.port} did not answer within the timeout while {stage_text}")


def _seconds(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".") or "0"


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
