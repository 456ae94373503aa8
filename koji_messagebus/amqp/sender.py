"""The sender link to the exchange: pipelined sends, settlements as they arrive.

Two ways to use it:
- `send(batch, deadline) -> BatchOutcome`: send every message, then wait for all settlements
  together (what the quarantine's probe does, one message at a time);
- non-blocking: `start(msg) -> tag` queues a message (frames go out at the next `flush()` or
  I/O loop run), `Connection.process(until, done)` runs the loop, and each settlement is in
  `settlements[tag]` (and given to `on_settled(tag, settlement)`) as soon as the broker sends it.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proton import Data, Delivery, Endpoint, symbol
from proton import Sender as ProtonSender

from koji_messagebus.amqp import address as addressing
from koji_messagebus.amqp import diagnose, management
from koji_messagebus.amqp.connection import BrokerInfo, Connection
from koji_messagebus.amqp.errors import BrokerError
from koji_messagebus.config.sections import BrokerSettings, ExchangeSettings
from koji_messagebus.config.sections import Endpoint as BrokerEndpoint
from koji_messagebus.format.wire import Outgoing
from koji_messagebus.log import log, log_cause

OUTCOMES = {
    Delivery.ACCEPTED: "accepted",
    Delivery.REJECTED: "rejected",
    Delivery.RELEASED: "released",
    Delivery.MODIFIED: "modified",
}

#: seconds to wait for the detach that follows an attach with a null target
NULL_TARGET_GRACE = 0.5


@dataclass(frozen=True)
class Settlement:
    """How the broker settled one message: `outcome` is accepted, rejected, released or modified;
    a rejection may carry the broker's error condition and description."""

    outcome: str
    condition: str = ""
    description: str = ""

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"

    @property
    def unroutable(self) -> bool:
        """`released` by an exchange: no queue is bound for the message (RabbitMQ 4.x); not an error."""
        return self.outcome == "released"

    @property
    def lost(self) -> str | None:
        """Why the message is lost for good (the text logs show), or None: accepted or unroutable
        (for those call `UNROUTABLE.note(exchange, msgs)`)."""
        return None if self.accepted or self.unroutable else str(self)

    def __str__(self) -> str:
        why = ": ".join(p for p in (self.condition, self.description) if p)
        return f"{self.outcome} ({why})" if why else self.outcome


@dataclass
class BatchOutcome:
    """What became of each message of a batch on one connection."""

    accepted: list[Outgoing] = field(default_factory=list)  # unroutable (released) ones too: not resent
    lost: list[tuple[Outgoing, str]] = field(default_factory=list)
    unsettled: list[Outgoing] = field(default_factory=list)
    error: BrokerError | None = None
    unroutable: list[Outgoing] = field(default_factory=list)  # released: no queue bound for them


class UnroutableLog:
    """Counts messages no queue was bound for and says so at INFO, one line a minute with the
    count (log.log_cause, cause "unroutable")."""

    def __init__(self) -> None:
        self.total = 0
        self._lock = threading.Lock()

    def note(self, exchange: str, msgs: list[Outgoing]) -> None:
        if not msgs:
            return
        with self._lock:
            self.total += len(msgs)
            total = self.total
        log_cause("unroutable", logging.INFO, "the broker answered released, not an error: nobody subscribed to "
                  "e.g. %s; %d so far", msgs[-1].routing_key, total, count=len(msgs),
                  counted=f"message(s) went to exchange '{exchange}' with no queue bound for them")


UNROUTABLE = UnroutableLog()


def settlement_of(dlv: Delivery) -> Settlement:
    state = dlv.remote_state
    outcome = OUTCOMES.get(state) or f"outcome {state}"  # type: ignore[call-overload]
    cond = dlv.remote.condition if state == Delivery.REJECTED else None
    if cond is None:
        return Settlement(outcome)
    return Settlement(outcome, str(cond.name or ""), str(cond.description or ""))


class Sender:
    """One sender link on a connection.  `address` is the link's target; None attaches an
    anonymous-relay link (each message carries its own `to`)."""

    def __init__(self, conn: Connection, address: str | None, hints: bool = True, name: str | None = None,
                 route: addressing.Route | None = None):
        self.conn = conn
        self.address = address
        self.hints = hints
        #: per-message `to` and target capabilities (None: payloads go as they are)
        self.route = route
        self.name: str = name or f"koji-messagebus-{os.getpid()}"
        self.settlements: dict[str, Settlement] = {}
        #: called with (tag, settlement) as each settlement arrives (inside the I/O loop)
        self.on_settled: Callable[[str, Settlement], None] | None = None
        self._tags = itertools.count(1)
        self._link: ProtonSender | None = None
        self._null_target_since = 0.0
        self._unsettled = 0

    def attach(self) -> None:
        """Queue the attach (sent with the next I/O)."""
        link = self.conn.session.sender(self.name)
        target: Any = link.target  # proton types `address` as str, None (anonymous relay) included
        target.address = self.address
        if self.address is not None and self.hints:
            _declare_exchange_hints(target, self.conn.exchange_settings)
        elif self.address is not None and self.route is not None and self.route.capabilities:
            target.capabilities.put_array(False, Data.SYMBOL)
            target.capabilities.enter()
            for cap in self.route.capabilities:
                target.capabilities.put_symbol(symbol(cap))
            target.capabilities.exit()
        link.source.address = link.name
        self.conn.register(link, self)
        link.open()
        self._link = link

    def attached(self) -> bool:
        """The broker attached the link.  An attach that names no target when we asked for one
        means the broker refuses the link (AMQP 1.0 2.6.3) and its detach with the reason follows;
        a peer that never sends that detach (some simple servers) is taken as attached after
        NULL_TARGET_GRACE seconds."""
        link = self._link
        if link is None or not link.state & Endpoint.REMOTE_ACTIVE:
            return False
        if self.address is None or link.remote_target.address is not None:
            return True
        now = time.monotonic()
        if not self._null_target_since:
            self._null_target_since = now
        self.conn.wake_by(self._null_target_since + NULL_TARGET_GRACE)
        return now - self._null_target_since >= NULL_TARGET_GRACE

    def open(self, deadline: float) -> None:
        self.attach()
        self.conn.wait(self.attached, deadline, "attaching to the exchange")

    # ---- pipelined ----------------------------------------------------------------------------
    def start(self, payload: bytes) -> str:
        """Queue one encoded message without waiting; returns its delivery tag.  Where the route
        addresses each message (RabbitMQ 4.x, Artemis) its `to` is set from its subject."""
        route = self.route
        if route is not None and route.to is not None:
            payload = addressing.with_to(payload, route.to_for(addressing.subject_of(payload) or "") or "")
        return self._start(payload)

    def _start(self, payload: bytes) -> str:
        link = self._link
        assert link is not None, "attach() first"
        tag = str(next(self._tags))
        link.delivery(tag)
        link.send(payload)
        link.advance()
        self._unsettled += 1
        return tag

    def start_message(self, msg: Outgoing) -> str:
        """Queue one message, addressed for this broker (its `to` set where the route says)."""
        route = self.route
        if route is not None and route.to is not None:
            return self._start(addressing.with_to(msg.payload, route.to_for(msg.routing_key) or ""))
        return self._start(msg.payload)

    @property
    def credit(self) -> int:
        return self._link.credit if self._link is not None else 0

    def on_delivery(self, dlv: Delivery) -> None:
        """A settlement of a sent message."""
        if dlv.remote_state or dlv.settled:
            settlement = settlement_of(dlv)
            self.settlements[dlv.tag] = settlement
            self._unsettled -= 1
            dlv.settle()
            if self.on_settled is not None:
                self.on_settled(dlv.tag, settlement)

    # ---- one batch --------------------------------------------------------------------------
    def send(self, batch: list[Outgoing], deadline: float) -> BatchOutcome:
        """Send every message, then wait for all settlements together (pipelined)."""
        tags = [self.start_message(msg) for msg in batch]
        outcome = BatchOutcome()
        settled = self.settlements
        try:
            self.conn.wait(lambda: all(t in settled for t in tags), deadline, "waiting for settlement")
        except BrokerError as exc:
            outcome.error = exc
        for tag, msg in zip(tags, batch):
            state = settled.pop(tag, None)
            if state is None:
                outcome.unsettled.append(msg)
            elif state.accepted:
                outcome.accepted.append(msg)
            elif state.unroutable:
                outcome.accepted.append(msg)
                outcome.unroutable.append(msg)
            else:
                outcome.lost.append((msg, str(state)))
        UNROUTABLE.note(self.conn.exchange.name, outcome.unroutable)
        return outcome


class AmqpConnection:
    """A connection with one sender link to the configured exchange: what the sender thread keeps
    warm.  Opening reads the broker's open frame, picks the address (`address.route`), creates
    the exchange where the broker lets a client (RabbitMQ 4.x, Broker-J) and attaches the
    sender.  `connection`, `sender` and `route` are the parts, for callers that drive them."""

    def __init__(self, broker: BrokerSettings, exchange: ExchangeSettings, endpoint: BrokerEndpoint):
        self.exchange = exchange
        self.endpoint = endpoint
        self.connection = Connection(broker, exchange, endpoint)
        #: made now (so callers can set `on_settled` before open()); attached by open() to the route chosen
        self.sender = Sender(self.connection, exchange.target_address())
        self.route: addressing.Route | None = None
        self.exchange_state = ""  # created, exists, ... (what the management node said), "" when not asked

    def open(self, deadline: float) -> None:
        """Connect, authenticate, pick the address, make sure of the exchange, attach the sender;
        raise BrokerError on any failure."""
        conn, cfg = self.connection, self.exchange
        conn.open(deadline)
        route = self.route = addressing.route(cfg, conn.broker)
        addressing.log_choice_once(str(self.endpoint), route)
        conn.exchange = diagnose.Exchange(cfg.name, cfg.type,
                                          bool(cfg.durable), route.target)
        if route.creates:
            self.exchange_state = self._ensure_exchange(route, deadline)
        sender = self.sender
        sender.address, sender.hints, sender.route = route.target, route.hints, route
        sender.open(deadline)

    def _ensure_exchange(self, route: addressing.Route, deadline: float) -> str:
        cfg, conn = self.exchange, self.connection
        mgmt = management.Management(conn, "brokerj" if route.creates == "amqp-management" else "rabbitmq")
        mgmt.open(deadline)
        state = management.ensure_exchange(mgmt, cfg.name, cfg.type,
                                           bool(cfg.durable), deadline)
        if state.startswith("exists ("):
            log.info("exchange '%s' on %s %s; using it as it is", cfg.name,
                     conn.broker, state)
        else:
            log.debug("exchange '%s' on %s: %s", cfg.name, conn.broker, state)
        return state

    def send(self, batch: list[Outgoing], deadline: float) -> BatchOutcome:
        return self.sender.send(batch, deadline)

    @property
    def opened_at(self) -> float:
        return self.connection.opened_at

    @property
    def error(self) -> BrokerError | None:
        return self.connection.error

    @property
    def broker(self) -> BrokerInfo:
        return self.connection.broker

    def healthy(self) -> bool:
        return self.connection.healthy()

    def close(self, wait: float = 1.0) -> None:
        self.connection.close(wait)


def _declare_exchange_hints(target, cfg: ExchangeSettings) -> None:
    """Ask brokers that can (Qpid C++) to create the exchange on demand; others ignore it."""
    caps: Data = target.capabilities
    caps.put_array(False, Data.SYMBOL)
    caps.enter()
    caps.put_symbol(symbol("topic"))
    caps.put_symbol(symbol("create-on-demand"))
    caps.exit()
    props: Data = target.properties
    props.put_dict({symbol("exchange-type"): cfg.type,
                    symbol("durable"): bool(cfg.durable)})
