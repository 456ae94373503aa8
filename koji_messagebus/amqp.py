"""One AMQP 1.0 connection driven synchronously with proton's engine API.

We own the socket and the I/O loop (no reactor, no thread) so that every step is bounded by a
deadline and every broker-side failure is seen the moment the broker reports it: an ended
session (RabbitMQ 3.x, missing exchange), a refused link, failed SASL or TLS, a closed socket.
"""

from __future__ import annotations

import itertools
import os
import select
import socket
import time
from dataclasses import dataclass, field

from proton import (
    SASL,
    SSL,
    Collector,
    Connection,
    Data,
    Delivery,
    Endpoint,
    Event,
    SSLDomain,
    SSLException,
    Transport,
    symbol,
)

from .config import Config, default_cafile
from .config import Endpoint as BrokerEndpoint
from .wire import Outgoing

OUTCOMES = {
    Delivery.ACCEPTED: "accepted",
    Delivery.REJECTED: "rejected",
    Delivery.RELEASED: "released",
    Delivery.MODIFIED: "modified",
}


class BrokerError(Exception):
    """A failure talking to the broker.  `kind` is one of: unreachable, tls, auth, not-found,
    refused, timeout, connection-lost, breaker-open, protocol."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


@dataclass
class BatchOutcome:
    """What became of each message of a batch on one connection."""

    accepted: list[Outgoing] = field(default_factory=list)
    lost: list[tuple[Outgoing, str]] = field(default_factory=list)
    unsettled: list[Outgoing] = field(default_factory=list)
    error: BrokerError | None = None


class AmqpConnection:
    """A connection, a session and one sender link to the configured exchange."""

    def __init__(self, config: Config, endpoint: BrokerEndpoint):
        self.config = config
        self.endpoint = endpoint
        self.opened_at = 0.0
        self.last_used = 0.0
        self._sock: socket.socket | None = None
        self._error: BrokerError | None = None
        self._tags = itertools.count(1)
        self._inflight: dict[str, Outgoing] = {}
        self._outcomes: dict[str, int] = {}
        self._collector = Collector()
        self._conn = Connection()
        self._transport = Transport(Transport.CLIENT)
        self._sasl: SASL | None = None
        self._session = None
        self._sender = None

    # ---- opening -------------------------------------------------------------------------
    def open(self, deadline: float) -> None:
        """Connect, authenticate, attach the sender; raise BrokerError on any failure."""
        ep, cfg = self.endpoint, self.config
        try:
            self._sock = socket.create_connection((ep.host, ep.port), timeout=max(0.001, deadline - time.monotonic()))
        except socket.timeout:
            raise BrokerError("unreachable", f"broker {ep.host}:{ep.port} unreachable: no TCP connection "
                              f"within {cfg.get('broker', 'connect_timeout')}s") from None
        except socket.gaierror as exc:
            raise BrokerError("unreachable", f"broker {ep.host}:{ep.port} unreachable: cannot resolve "
                              f"host ({exc.strerror})") from None
        except OSError as exc:
            raise BrokerError("unreachable", f"broker {ep.host}:{ep.port} unreachable: "
                              f"{exc.strerror or exc}") from None
        self._sock.setblocking(False)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._setup_engine()
        self._pump(lambda: bool(self._sender.state & Endpoint.REMOTE_ACTIVE), deadline, "attaching to the exchange")
        self.opened_at = self.last_used = time.monotonic()

    def _setup_engine(self) -> None:
        cfg, ep = self.config, self.endpoint
        conn = self._conn
        conn.container = f"koji-messagebus-{socket.gethostname()}-{os.getpid()}"
        vhost = cfg.get("broker", "vhost")
        conn.hostname = f"vhost:{vhost}" if vhost else ep.host
        auth = cfg.get("broker", "auth")
        if auth == "PLAIN":
            conn.user = cfg.get("broker", "username")
            conn.password = cfg.get("broker", "password")
        elif auth == "GSSAPI":
            conn.user = cfg.get("broker", "principal")
        heartbeat = cfg.get("broker", "heartbeat")
        if heartbeat:
            self._transport.idle_timeout = float(heartbeat)
        self._sasl = self._transport.sasl()
        self._sasl.allowed_mechs(auth)
        if auth == "PLAIN" and not ep.tls:
            self._sasl.allow_insecure_mechs = True
        if ep.tls:
            ssl = SSL(self._transport, self._ssl_domain())
            ssl.peer_hostname = ep.host
        self._transport.bind(conn)
        conn.collect(self._collector)
        conn.open()
        self._session = conn.session()
        self._session.open()
        self._sender = self._session.sender(f"koji-messagebus-{os.getpid()}")
        target = self._sender.target
        address = cfg.target_address()
        if address is None:
            target.address = None  # anonymous relay: each message carries its own `to`
        else:
            target.address = address
            _declare_exchange_hints(target, cfg)
        self._sender.source.address = self._sender.name
        self._sender.open()

    def _ssl_domain(self) -> SSLDomain:
        cfg = self.config
        domain = SSLDomain(SSLDomain.MODE_CLIENT)
        try:
            cacert = cfg.get("broker", "cacert") or default_cafile()
            if cacert:
                domain.set_trusted_ca_db(cacert)
            if cfg.get("broker", "ssl_verify"):
                domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME, cacert or None)
            else:
                domain.set_peer_authentication(SSLDomain.ANONYMOUS_PEER)
            cert = cfg.get("broker", "cert")
            if cert:
                domain.set_credentials(cert, cfg.get("broker", "key") or cert, None)
        except SSLException as exc:
            raise BrokerError("tls", f"TLS setup failed for {self.endpoint}: {exc} (check cacert, cert "
                              "and key)") from None
        return domain

    # ---- sending -------------------------------------------------------------------------
    def send(self, batch: list[Outgoing], deadline: float) -> BatchOutcome:
        """Send every message, then wait for all settlements together (pipelined)."""
        sender = self._sender
        tags = []
        for msg in batch:
            tag = str(next(self._tags))
            sender.delivery(tag)
            sender.send(msg.payload)
            sender.advance()
            self._inflight[tag] = msg
            tags.append(tag)
        outcome = BatchOutcome()
        try:
            self._pump(lambda: all(t in self._outcomes for t in tags), deadline, "waiting for settlement")
        except BrokerError as exc:
            outcome.error = exc
        for tag in tags:
            msg = self._inflight.pop(tag)
            state = self._outcomes.pop(tag, None)
            if state is None:
                outcome.unsettled.append(msg)
            elif state == Delivery.ACCEPTED:
                outcome.accepted.append(msg)
            else:
                outcome.lost.append((msg, OUTCOMES.get(state, f"outcome {state}")))
        self.last_used = time.monotonic()
        return outcome

    def healthy(self) -> bool:
        """Process whatever the broker sent while idle; False if the connection is gone."""
        if self._error or self._sock is None:
            return False
        try:
            self._io()
            self._dispatch()
        except BrokerError as exc:
            self._error = exc
        return self._error is None

    def close(self) -> None:
        """Close politely if possible, without waiting; always release the socket."""
        if self._sock is None:
            return
        try:
            if not self._error:
                self._conn.close()
                self._io()
        except Exception:  # noqa: BLE001 - closing must never raise
            pass
        try:
            self._sock.close()
        finally:
            self._sock = None

    # ---- the I/O loop ----------------------------------------------------------------------
    def _pump(self, done, deadline: float, doing: str) -> None:
        while True:
            self._io()
            self._dispatch()
            if not self._error and self._sasl is not None and self._sasl.outcome not in (None, SASL.OK):
                self._transport_failed()  # the outcome is final; do not wait for the close
            if self._error:
                raise self._error
            if done():
                self._io()  # flush what the events produced (settlements, flow)
                return
            now = time.monotonic()
            if now >= deadline:
                self._error = BrokerError("timeout", f"broker {self.endpoint.host}:{self.endpoint.port} did "
                                          f"not answer within the timeout while {self._stage(doing)}")
                raise self._error
            wake = deadline
            tick = self._transport.tick(now)
            if tick:
                wake = min(wake, tick)
            wants_write = self._transport.pending() > 0
            select.select([self._sock], [self._sock] if wants_write else [], [], max(0.0, wake - now))

    def _stage(self, doing: str) -> str:
        """Where a connection got stuck, for timeout messages."""
        if self._sasl is not None and self._sasl.outcome is None:
            auth = self.config.get("broker", "auth")
            if self._transport.frames_input:
                return (f"authenticating with {auth} (no SASL outcome; RabbitMQ delays refusing wrong "
                        "credentials by several seconds: check username and password)")
            return "waiting for the AMQP/TLS handshake (is this an AMQP 1.0 port?)"
        if not self._conn.state & Endpoint.REMOTE_ACTIVE:
            return "opening the AMQP connection"
        return doing

    def _io(self) -> None:
        sock, t = self._sock, self._transport
        while True:
            pending = t.pending()
            if pending <= 0:
                break
            try:
                sent = sock.send(t.peek(pending))
            except BlockingIOError:
                break
            except OSError as exc:
                t.close_head()
                self._lost(f"write failed: {exc.strerror or exc}")
                return
            t.pop(sent)
        while True:
            capacity = t.capacity()
            if capacity <= 0:
                break
            try:
                data = sock.recv(capacity)
            except BlockingIOError:
                break
            except OSError as exc:
                t.close_tail()
                self._lost(f"read failed: {exc.strerror or exc}")
                return
            if not data:
                t.close_tail()
                break
            t.push(data)

    def _lost(self, why: str) -> None:
        if not self._error:
            self._error = BrokerError("connection-lost", f"connection to {self.endpoint.host}:"
                                      f"{self.endpoint.port} lost: {why}")

    def _dispatch(self) -> None:
        collector = self._collector
        while True:
            event = collector.peek()
            if event is None:
                return
            kind = event.type
            if kind == Event.DELIVERY:
                dlv = event.delivery
                if dlv.remote_state or dlv.settled:
                    self._outcomes[dlv.tag] = dlv.remote_state
                    dlv.settle()
            elif kind == Event.LINK_REMOTE_CLOSE:
                self._remote_closed("the broker closed the link to", event.link.remote_condition)
            elif kind == Event.SESSION_REMOTE_CLOSE:
                self._remote_closed("the broker ended the session for", event.session.remote_condition)
            elif kind == Event.CONNECTION_REMOTE_CLOSE:
                self._remote_closed("the broker closed the connection to", event.connection.remote_condition)
            elif kind in (Event.TRANSPORT_ERROR, Event.TRANSPORT_CLOSED):
                self._transport_failed()
            collector.pop()

    def _remote_closed(self, what: str, condition) -> None:
        if self._error:
            return
        ep, cfg = self.endpoint, self.config
        name = condition.name if condition else ""
        desc = condition.description if condition else ""
        target = cfg.target_address() or "(per-message addresses)"
        if name in ("amqp:not-found", "amqp:resource-deleted") or "no exchange" in (desc or ""):
            hint = ""
            if cfg.target_address() and cfg.target_address().startswith("/exchange/"):
                hint = (" RabbitMQ 3.x cannot create exchanges over AMQP 1.0; declare it, e.g. "
                        f"rabbitmqadmin declare exchange name={cfg.exchange} type={cfg.get('exchange', 'type')} "
                        f"durable={str(cfg.get('exchange', 'durable')).lower()}")
            self._error = BrokerError("not-found", f"exchange '{cfg.exchange}' (address {target}) does not exist "
                                      f"on broker {ep.host}:{ep.port}: {desc or name}.{hint}")
        elif name == "amqp:unauthorized-access":
            self._error = BrokerError("refused", f"broker {ep.host}:{ep.port} refused access to exchange "
                                      f"'{cfg.exchange}' for this user: {desc or name}")
        else:
            self._error = BrokerError("refused", f"{what} {target} on {ep.host}:{ep.port}: "
                                      f"{name or 'no reason given'} {desc or ''}".rstrip())

    def _transport_failed(self) -> None:
        if self._error:
            return
        ep, cfg = self.endpoint, self.config
        cond = self._transport.condition
        name = cond.name if cond else ""
        desc = (cond.description if cond else "") or ""
        auth = cfg.get("broker", "auth")
        sasl_failed = self._sasl is not None and self._sasl.outcome not in (None, SASL.OK)
        if name == "amqp:unauthorized-access" or sasl_failed:
            who = f" as user '{cfg.get('broker', 'username')}'" if auth == "PLAIN" else ""
            self._error = BrokerError("auth", f"authentication with {auth}{who} failed at broker {ep.host}:"
                                      f"{ep.port}: {desc or name or 'refused'}")
        elif "SSL" in desc or "TLS" in desc or "certificate" in desc.lower():
            self._error = BrokerError("tls", f"TLS handshake with {ep.host}:{ep.port} failed: {desc}")
        else:
            self._error = BrokerError("connection-lost", f"connection to {ep.host}:{ep.port} closed: "
                                      f"{(name + ' ' + desc).strip() or 'by the peer'}")


def _declare_exchange_hints(target, cfg: Config) -> None:
    """Ask brokers that can (Qpid C++) to create the exchange on demand; others ignore it."""
    caps: Data = target.capabilities
    caps.put_array(False, Data.SYMBOL)
    caps.enter()
    caps.put_symbol(symbol("topic"))
    caps.put_symbol(symbol("create-on-demand"))
    caps.exit()
    props: Data = target.properties
    props.put_dict({symbol("exchange-type"): cfg.get("exchange", "type"),
                    symbol("durable"): bool(cfg.get("exchange", "durable"))})
