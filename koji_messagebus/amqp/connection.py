"""One AMQP 1.0 connection and session, driven synchronously with proton's engine API.

We own the socket and the I/O loop (no reactor, no thread) so that every step is bounded by a
deadline and every broker-side failure is seen the moment the broker reports it: an ended
session (RabbitMQ 3.x, missing exchange), a refused link, failed SASL or TLS, a closed socket.
Links (sender.Sender, receiver.Receivers, management.Management) live on a connection and get
their deliveries through `register()`; the connection never knows what they are for.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from proton import (
    SASL,
    SSL,
    Collector,
    Delivery,
    Endpoint,
    Event,
    Link,
    Session,
    SSLDomain,
    SSLException,
    Transport,
)
from proton import Connection as ProtonConnection

from koji_messagebus import kerberos
from koji_messagebus.amqp import diagnose
from koji_messagebus.amqp.errors import BrokerError, Kind
from koji_messagebus.config.sections import BrokerSettings, ExchangeSettings
from koji_messagebus.config.sections import Endpoint as BrokerEndpoint
from koji_messagebus.config.security import (
    SaslMechanisms,
    default_cafile,
    explain_files,
    explain_handshake,
    has_cyrus_sasl,
    uses_password,
    warn_unverified,
)

_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)

#: the shortest idle time-out we advertise (proton advertises half of `idle_timeout`): RabbitMQ 4.x
#: refuses less than 1000 ms
MIN_ADVERTISED_IDLE = 1.0


class LinkHandler(Protocol):
    """What a link registered on a connection is told about."""

    def on_delivery(self, dlv: Delivery) -> None: ...


@dataclass(frozen=True)
class BrokerInfo:
    """The broker as its open frame announced it (empty strings when it did not say)."""

    product: str = ""
    version: str = ""
    platform: str = ""

    @property
    def major(self) -> int | None:
        head = self.version.split(".", 1)[0]
        return int(head) if head.isdigit() else None

    def __str__(self) -> str:
        return f"{self.product or 'unknown broker'} {self.version}".strip()


def cafile(broker: BrokerSettings) -> str:
    """The CA bundle the broker's certificate is verified with: cacert, or the system bundle."""
    return broker.cacert or default_cafile()


def kerberos_ticket(broker: BrokerSettings, endpoint: BrokerEndpoint) -> None:
    """auth = GSSAPI: a ticket from the keytab in the plugin's own credential cache, made the
    default of this thread for proton's Cyrus SASL; BrokerError(auth) saying why not."""
    where = f"auth = GSSAPI to broker {endpoint.host}:{endpoint.port}"
    if not has_cyrus_sasl():
        raise BrokerError(Kind.AUTH, f"{where}: this python-qpid-proton has no Cyrus SASL "
                          "(proton.SASL.extended() is False), so it cannot do GSSAPI; reinstall it "
                          "with libsasl2-dev present (pip install --force-reinstall --no-cache-dir python-qpid-proton)")
    try:
        kerberos.obtain_ticket(broker.principal, broker.keytab)
    except kerberos.KerberosError as exc:
        raise BrokerError(Kind.AUTH, f"{where}: {exc}") from None


class Connection:
    """A connection and one session.  `open()` connects and authenticates; links attach on
    `session`; `wait()` and `process()` run the I/O loop; `healthy()` and `close()` as named."""

    def __init__(self, broker: BrokerSettings, exchange: ExchangeSettings, endpoint: BrokerEndpoint):
        self.settings = broker
        #: the [exchange] settings (the sender link's declare hints)
        self.exchange_settings = exchange
        self.endpoint = endpoint
        self.opened_at = 0.0
        #: the AMQP container id (default: host and pid); a durable subscription names its own
        self.container_id: str | None = None
        #: how error texts name the exchange (the sender sets the address it chose)
        self.exchange = diagnose.Exchange(exchange.name, exchange.type,
                                          bool(exchange.durable), exchange.target_address())
        self._open_deadline = 0.0
        self._wake_at = 0.0
        self._sock: socket.socket | None = None
        self._error: BrokerError | None = None
        self._heard = 0.0  # when bytes from the broker were last read (heartbeats included)
        self._collector = Collector()
        self._conn = ProtonConnection()
        self._transport = Transport(Transport.CLIENT)
        self._sasl: SASL | None = None
        self._mechs = SaslMechanisms()
        self._session: Session | None = None
        self._handlers: dict[str, LinkHandler] = {}

    # ---- opening -------------------------------------------------------------------------
    def start(self, deadline: float) -> None:
        """Connect the socket and queue the AMQP open and begin frames (nothing waits for the
        broker yet, so links attached now go out in the same round trip)."""
        ep, cfg = self.endpoint, self.settings
        self._open_deadline = deadline
        try:
            sock = socket.create_connection((ep.host, ep.port), timeout=max(0.001, deadline - time.monotonic()))
        except socket.timeout:
            raise BrokerError(Kind.UNREACHABLE, f"broker {ep.host}:{ep.port} unreachable: no TCP connection "
                              f"within {cfg.connect_timeout}s") from None
        except socket.gaierror as exc:
            raise BrokerError(Kind.UNREACHABLE, f"broker {ep.host}:{ep.port} unreachable: cannot resolve "
                              f"host ({exc.strerror})") from None
        except OSError as exc:
            raise BrokerError(Kind.UNREACHABLE, f"broker {ep.host}:{ep.port} unreachable: "
                              f"{exc.strerror or exc}") from None
        self._sock = sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._setup_engine()
        self.opened_at = time.monotonic()

    def open(self, deadline: float) -> None:
        """Connect, authenticate and wait for the broker's open frame; BrokerError on failure."""
        self.start(deadline)
        self.wait(self.remote_open, deadline, "opening the AMQP connection")

    def remote_open(self) -> bool:
        return bool(self._conn.state & Endpoint.REMOTE_ACTIVE)

    def _setup_engine(self) -> None:
        cfg, ep = self.settings, self.endpoint
        conn = self._conn
        conn.container = self.container_id or f"koji-messagebus-{socket.gethostname()}-{os.getpid()}"
        vhost = cfg.vhost
        conn.hostname = f"vhost:{vhost}" if vhost else ep.host
        auth = cfg.auth
        if uses_password(auth):  # PLAIN, SCRAM-SHA-256, ...
            conn.user = cfg.username
            conn.password = cfg.password
        elif auth == "GSSAPI":
            try:
                kerberos_ticket(cfg, ep)
            except BrokerError as exc:
                self._error = exc
                raise
            conn.user = cfg.principal
        heartbeat = cfg.heartbeat
        if heartbeat:
            self._transport.idle_timeout = max(float(heartbeat), 2 * MIN_ADVERTISED_IDLE)
        self._sasl = self._transport.sasl()
        self._sasl.allowed_mechs(auth)  # only the configured mechanism is ever used
        if auth == "PLAIN" and not ep.tls:
            self._sasl.allow_insecure_mechs = True  # warned about by the config check
        self._mechs.attach(self._transport)  # what the broker offers, for error messages
        if ep.tls:
            ssl = SSL(self._transport, self._ssl_domain())
            ssl.peer_hostname = ep.host  # checked against the certificate (VERIFY_PEER_NAME)
        self._transport.bind(conn)
        conn.collect(self._collector)
        conn.open()
        self._session = conn.session()
        self._session.open()

    def _ssl_domain(self) -> SSLDomain:
        """TLS settings: the broker's certificate and host name verified against cacert (default: the
        system CA bundle) unless ssl_verify = false (then a WARNING at every connect); the client
        certificate from cert + key, or one PEM holding both."""
        cfg, ep = self.settings, self.endpoint
        domain = SSLDomain(SSLDomain.MODE_CLIENT)
        cacert = cafile(cfg)
        cert = cfg.cert
        key = cfg.key or cert
        try:
            if cfg.ssl_verify:
                if not cacert:
                    self._error = BrokerError(Kind.TLS, f"TLS to {ep.host}:{ep.port}: no system CA bundle found "
                                              "to verify the broker's certificate with; set cacert")
                    raise self._error
                domain.set_trusted_ca_db(cacert)
                domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME, cacert)
            else:
                warn_unverified(ep)
                domain.set_peer_authentication(SSLDomain.ANONYMOUS_PEER)
            if cert:
                domain.set_credentials(cert, key, None)
        except SSLException:
            self._error = BrokerError(Kind.TLS, f"TLS setup for {ep.host}:{ep.port} failed: "
                                      f"{explain_files(cacert, cert, key)}")
            raise self._error from None
        return domain

    # ---- what links and callers see -----------------------------------------------------
    @property
    def session(self) -> Session:
        assert self._session is not None, "start() first"
        return self._session

    def register(self, link: Link, handler: LinkHandler) -> None:
        """Deliveries on `link` go to `handler.on_delivery`."""
        self._handlers[link.name] = handler

    @property
    def broker(self) -> BrokerInfo:
        """The broker's product and version as it announced them in its open frame."""
        props: dict[Any, Any] = self._conn.remote_properties or {}
        info = {str(k): str(v) for k, v in props.items()}
        return BrokerInfo(info.get("product", ""), info.get("version", ""), info.get("platform", ""))

    @property
    def remote_properties(self) -> dict[str, Any]:
        return {str(k): v for k, v in (self._conn.remote_properties or {}).items()}

    @property
    def mechanism(self) -> str | None:
        """The SASL mechanism used (None before SASL ran)."""
        return self._sasl.mech if self._sasl is not None else None

    @property
    def offered_mechanisms(self) -> tuple[str, ...] | None:
        """The SASL mechanisms the broker offered, as its sasl-mechanisms frame listed them."""
        return self._mechs.offered

    @property
    def error(self) -> BrokerError | None:
        """Why the connection is unusable, or None."""
        return self._error

    def fail(self, error: BrokerError) -> BrokerError:
        """Mark the connection unusable (the first error is kept) and return the error kept."""
        if self._error is None:
            self._error = error
        return self._error

    def wake_by(self, when: float) -> None:
        """Have the running wait() re-check its condition no later than the monotonic time `when`."""
        if when > 0 and (not self._wake_at or when < self._wake_at):
            self._wake_at = when

    # ---- the I/O loop ----------------------------------------------------------------------
    def process(self, until: float, done: Callable[[], bool] = lambda: False) -> bool:
        """Run the I/O loop until `done()` (True) or the monotonic time `until` (False); raise
        BrokerError as soon as the connection fails."""
        while True:
            self._io()
            self._dispatch()
            if not self._error and self._sasl is not None and self._sasl.outcome not in (None, SASL.OK):
                self._transport_failed()  # the outcome is final; do not wait for the close
            if self._error:
                raise self._error
            if done():
                self._io()  # flush what the events produced (settlements, flow)
                self._dispatch()  # and handle what that read: nothing may wait in the collector
                return True
            now = time.monotonic()
            if now >= until:
                self._io()
                self._dispatch()
                return False
            wake = until
            tick = self._transport.tick(now)
            if tick:
                wake = min(wake, tick)
            if self._wake_at:
                wake = min(wake, self._wake_at)
                if self._wake_at <= now:
                    self._wake_at = 0.0
            wants_write = self._transport.pending() > 0
            assert self._sock is not None
            select.select([self._sock], [self._sock] if wants_write else [], [], max(0.0, wake - now))

    def wait(self, done: Callable[[], bool], deadline: float, doing: str) -> None:
        """Run the I/O loop until `done()`; BrokerError(timeout) naming `doing` at `deadline`."""
        if not self.process(deadline, done):
            raise self.fail(diagnose.timed_out(self.endpoint, self._stage(doing), heard=self._heard > 0,
                                               waited=time.monotonic() - self.opened_at))

    def fileno(self) -> int:
        """The socket, for callers that run their own select() (-1 when closed)."""
        return self._sock.fileno() if self._sock is not None else -1

    def wants_write(self) -> bool:
        """Frames are queued for the broker (select() for writability too)."""
        return self._transport.pending() > 0

    def flush(self) -> None:
        """Write what is queued (frames produced outside the loop) without waiting."""
        if self._sock is not None and not self._error:
            self._io()

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
            heartbeat = self.settings.heartbeat
            silent = now - max(self._heard, self.opened_at)
            if heartbeat and not self._error and silent > heartbeat:
                ep = self.endpoint
                self.fail(BrokerError(Kind.CONNECTION_LOST, f"connection to {ep.host}:{ep.port} is dead: no "
                                      f"frame from the broker for {silent:.0f}s (heartbeat = {heartbeat}s)"))
        except BrokerError as exc:
            self.fail(exc)
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
                self.wait(lambda: bool(self._conn.state & Endpoint.REMOTE_CLOSED), time.monotonic() + wait,
                          "closing")
        except Exception:  # noqa: BLE001 - closing must never raise
            pass
        try:
            self._sock.close()
        finally:
            self._sock = None

    def _stage(self, doing: str) -> str:
        return diagnose.stage(doing, self._sasl.outcome if self._sasl is not None else None,
                              self._sasl is not None, self._transport.frames_input, self.remote_open(),
                              self.settings.auth)

    def _io(self) -> None:
        sock, t = self._sock, self._transport
        assert sock is not None
        while True:
            pending = t.pending()
            if pending <= 0:
                break
            data = t.peek(pending)
            if not data:
                break
            try:
                sent = sock.send(data, _NOSIGNAL)  # no SIGPIPE where it is not ignored
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
        ep = self.endpoint
        self.fail(BrokerError(Kind.CONNECTION_LOST, f"connection to {ep.host}:{ep.port} lost: {why}"))

    def _dispatch(self) -> None:
        collector = self._collector
        while True:
            event = collector.peek()
            if event is None:
                return
            kind = event.type
            link, session, connection = event.link, event.session, event.connection
            if kind == Event.DELIVERY and link is not None and event.delivery is not None:
                handler = self._handlers.get(link.name)
                if handler is not None:
                    handler.on_delivery(event.delivery)
            elif kind == Event.LINK_REMOTE_CLOSE and link is not None:
                self._remote_closed("the broker closed the link to", link.remote_condition)
            elif kind == Event.SESSION_REMOTE_CLOSE and session is not None:
                self._remote_closed("the broker ended the session for", session.remote_condition)
            elif kind == Event.CONNECTION_REMOTE_CLOSE and connection is not None:
                self._remote_closed("the broker closed the connection to", connection.remote_condition)
            elif kind in (Event.TRANSPORT_ERROR, Event.TRANSPORT_CLOSED):
                self._transport_failed()
            collector.pop()

    def _remote_closed(self, what: str, condition: Any) -> None:
        if self._error:
            return
        name = condition.name if condition else ""
        desc = (condition.description if condition else "") or ""
        self.fail(diagnose.remote_closed(what, name or "", desc, self.endpoint, self.exchange))

    def _transport_failed(self) -> None:
        if self._error:
            return
        ep, cfg = self.endpoint, self.settings
        cond = self._transport.condition
        auth = diagnose.Auth(cfg.auth, cfg.username or "",
                             cfg.cert or "", cfg.principal or "")

        def explain_tls(desc: str) -> str:
            budget = max(0.05, min(5.0, self._open_deadline - time.monotonic()))  # what remains of connect_timeout
            return explain_handshake(desc, ep.host, ep.port, cafile(cfg), cfg.cert,
                                     bool(cfg.ssl_verify), budget)

        self.fail(diagnose.transport_failed(
            ep, auth, (cond.name if cond else "") or "", (cond.description if cond else "") or "",
            self._sasl.outcome if self._sasl is not None else None, self.mechanism, self._mechs.offered,
            explain_tls))
