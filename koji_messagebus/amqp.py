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

from . import kerberos
from .config import Config, default_cafile
from .config import Endpoint as BrokerEndpoint
from .security import SaslMechanisms, auth_failure, explain_files, explain_handshake, warn_unverified
from .wire import Outgoing

OUTCOMES = {
    Delivery.ACCEPTED: "accepted",
    Delivery.REJECTED: "rejected",
    Delivery.RELEASED: "released",
    Delivery.MODIFIED: "modified",
}


_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)


#: seconds to wait for the detach that follows an attach with a null target
NULL_TARGET_GRACE = 0.5


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
        self._open_deadline = 0.0
        self._null_target_since = 0.0
        self._sock: socket.socket | None = None
        self._error: BrokerError | None = None
        self._tags = itertools.count(1)
        self._inflight: dict[str, Outgoing] = {}
        self._outcomes: dict[str, int] = {}
        self._heard = 0.0  # when bytes from the broker were last read (heartbeats included)
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
        self._open_deadline = deadline
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
        self._pump(self._attached, deadline, "attaching to the exchange")
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
            self._kerberos_ticket()
            conn.user = cfg.get("broker", "principal")
        heartbeat = cfg.get("broker", "heartbeat")
        if heartbeat:
            self._transport.idle_timeout = float(heartbeat)
        self._sasl = self._transport.sasl()
        self._sasl.allowed_mechs(auth)  # only the configured mechanism is ever used
        if auth == "PLAIN" and not ep.tls:
            self._sasl.allow_insecure_mechs = True  # warned about by the config check
        self._mechs = SaslMechanisms()
        self._mechs.attach(self._transport)  # what the broker offers, for error messages
        if ep.tls:
            ssl = SSL(self._transport, self._ssl_domain())
            ssl.peer_hostname = ep.host  # checked against the certificate (VERIFY_PEER_NAME)
        self._transport.bind(conn)
        conn.collect(self._collector)
        conn.open()
        self._session = conn.session()
        self._session.open()
        self._open_links()

    def _open_links(self) -> None:
        """Attach the sender to the exchange (listener.Listener attaches receivers instead)."""
        cfg = self.config
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

    def _attached(self) -> bool:
        """The broker attached the sender.  An attach that names no target when we asked for one
        means the broker refuses the link (AMQP 1.0 2.6.3) and its detach with the reason follows;
        a peer that never sends that detach (some simple servers) is taken as attached after
        NULL_TARGET_GRACE seconds."""
        sender = self._sender
        if not sender.state & Endpoint.REMOTE_ACTIVE:
            return False
        if self.config.target_address() is None or sender.remote_target.address is not None:
            return True
        now = time.monotonic()
        if not self._null_target_since:
            self._null_target_since = now
        return now - self._null_target_since >= NULL_TARGET_GRACE

    def _ssl_domain(self) -> SSLDomain:
        """TLS settings: the broker's certificate and host name verified against cacert (default: the
        system CA bundle) unless ssl_verify = false (then a WARNING at every connect); the client
        certificate from cert + key, or one PEM holding both."""
        cfg, ep = self.config, self.endpoint
        domain = SSLDomain(SSLDomain.MODE_CLIENT)
        cacert = cfg.get("broker", "cacert") or default_cafile()
        cert = cfg.get("broker", "cert")
        key = cfg.get("broker", "key") or cert
        try:
            if cfg.get("broker", "ssl_verify"):
                if not cacert:
                    self._error = BrokerError("tls", f"TLS to {ep.host}:{ep.port}: no system CA bundle found to "
                                              "verify the broker's certificate with; set cacert")
                    raise self._error
                domain.set_trusted_ca_db(cacert)
                domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME, cacert)
            else:
                warn_unverified(ep)
                domain.set_peer_authentication(SSLDomain.ANONYMOUS_PEER)
            if cert:
                domain.set_credentials(cert, key, None)
        except SSLException:
            self._error = BrokerError("tls", f"TLS setup for {ep.host}:{ep.port} failed: "
                                      f"{explain_files(cacert, cert, key)}")
            raise self._error from None
        return domain

    def _kerberos_ticket(self) -> None:
        """auth = GSSAPI: a ticket from the keytab in the plugin's own credential cache, made the
        default of this thread for proton's Cyrus SASL."""
        cfg, ep = self.config, self.endpoint
        where = f"auth = GSSAPI to broker {ep.host}:{ep.port}"
        if not SASL.extended():
            self._error = BrokerError("auth", f"{where}: this python-qpid-proton has no Cyrus SASL "
                                      "(proton.SASL.extended() is False), so it cannot do GSSAPI; reinstall it "
                                      "with libsasl2-dev present (scripts/setup.sh does)")
            raise self._error
        try:
            kerberos.obtain_ticket(cfg.get("broker", "principal"), cfg.get("broker", "keytab"))
        except kerberos.KerberosError as exc:
            self._error = BrokerError("auth", f"{where}: {exc}")
            raise self._error from None

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

    @property
    def error(self) -> BrokerError | None:
        """Why the connection is unusable, or None."""
        return self._error

    def healthy(self) -> bool:
        """Process whatever the broker sent while idle (a close, an EOF, heartbeats); False if the
        connection is gone.  We advertise `heartbeat` as our idle timeout, so a live broker sends a
        frame at least every heartbeat/2 seconds: nothing to read after longer than `heartbeat`
        means the peer vanished without closing (a crash, a dropped NAT entry)."""
        if self._error or self._sock is None:
            return False
        try:
            self._io()
            now = time.monotonic()
            self._transport.tick(now)
            self._dispatch()
            if self._transport.pending() > 0:
                self._io()  # our heartbeat, if one is due
            heartbeat = self.config.get("broker", "heartbeat")
            silent = now - max(self._heard, self.opened_at)
            if heartbeat and not self._error and silent > heartbeat:
                ep = self.endpoint
                self._error = BrokerError("connection-lost", f"connection to {ep.host}:{ep.port} is dead: no frame "
                                          f"from the broker for {silent:.0f}s (heartbeat = {heartbeat}s)")
        except BrokerError as exc:
            self._error = exc
        return self._error is None

    def close(self, wait: float = 1.0) -> None:
        """Close politely if the connection is healthy, waiting at most `wait` seconds for the
        broker's close (RabbitMQ 3.x over TLS leaks a channel when a client just drops the
        socket); always release the socket."""
        if self._sock is None:
            return
        try:
            if not self._error:
                self._conn.close()
                self._pump(lambda: bool(self._conn.state & Endpoint.REMOTE_CLOSED), time.monotonic() + wait,
                           "closing")
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
            if self._null_target_since:
                wake = min(wake, self._null_target_since + NULL_TARGET_GRACE)
            wants_write = self._transport.pending() > 0
            select.select([self._sock], [self._sock] if wants_write else [], [], max(0.0, wake - now))

    def _diagnosis_budget(self) -> float:
        """Time left for a diagnostic TLS probe: what remains of connect_timeout (at least 50 ms)."""
        return max(0.05, min(5.0, self._open_deadline - time.monotonic()))

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
                sent = sock.send(t.peek(pending), _NOSIGNAL)  # no SIGPIPE where it is not ignored
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
            self._heard = time.monotonic()

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
                self._delivery(event.delivery)
            elif kind == Event.LINK_REMOTE_CLOSE:
                self._remote_closed("the broker closed the link to", event.link.remote_condition)
            elif kind == Event.SESSION_REMOTE_CLOSE:
                self._remote_closed("the broker ended the session for", event.session.remote_condition)
            elif kind == Event.CONNECTION_REMOTE_CLOSE:
                self._remote_closed("the broker closed the connection to", event.connection.remote_condition)
            elif kind in (Event.TRANSPORT_ERROR, Event.TRANSPORT_CLOSED):
                self._transport_failed()
            collector.pop()

    def _delivery(self, dlv: Delivery) -> None:
        """A settlement of a sent message (listener.Listener overrides this to receive)."""
        if dlv.remote_state or dlv.settled:
            self._outcomes[dlv.tag] = dlv.remote_state
            dlv.settle()

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
        """One BrokerError line for a failed transport: `auth` (SASL refused, mechanism not offered),
        `tls` (certificate not trusted, wrong host name, client certificate refused, not TLS) or
        `connection-lost`."""
        if self._error:
            return
        ep, cfg = self.endpoint, self.config
        cond = self._transport.condition
        name = cond.name if cond else ""
        desc = (cond.description if cond else "") or ""
        auth = cfg.get("broker", "auth")
        outcome = self._sasl.outcome if self._sasl is not None else None
        if name == "amqp:unauthorized-access" or outcome not in (None, SASL.OK):
            mechs = getattr(self, "_mechs", None)
            why = auth_failure(auth, outcome, self._sasl.mech if self._sasl is not None else None,
                               mechs.offered if mechs else None, desc,
                               cert=cfg.get("broker", "cert"),
                               principal=cfg.get("broker", "principal"))
            who = f" as user '{cfg.get('broker', 'username')}'" if auth == "PLAIN" else ""
            self._error = BrokerError("auth", f"authentication with {auth}{who} failed at broker "
                                      f"{ep.host}:{ep.port}: {why}")
        elif ep.tls and ("SSL" in desc or "TLS" in desc or "certificate" in desc.lower()):
            why = explain_handshake(desc, ep.host, ep.port, cfg.get("broker", "cacert") or default_cafile(),
                                    cfg.get("broker", "cert"), bool(cfg.get("broker", "ssl_verify")),
                                    self._diagnosis_budget())
            self._error = BrokerError("tls", f"TLS handshake with {ep.host}:{ep.port} failed: {why}")
        else:
            hint = ""
            if not ep.tls and "\\x15\\x03" in desc:
                hint = " (the broker answered with TLS: set ssl = true or use an amqps:// URL)"
            self._error = BrokerError("connection-lost", f"connection to {ep.host}:{ep.port} closed: "
                                      f"{(name + ' ' + desc).strip() or 'by the peer'}{hint}")

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
