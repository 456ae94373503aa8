"""A small AMQP 1.0 broker stand-in (proton's own server side) for what RabbitMQ 3.10 cannot show:
messages rejected, released or modified, a link refused with amqp:not-found (RabbitMQ 4.2+,
qpidd), anonymous-relay links with per-message `to` (RabbitMQ 4.x addresses), the target
capabilities a qpidd would use to create the exchange.  It runs in a thread on 127.0.0.1 and
records what it saw.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

from proton import Condition, Delivery
from proton.handlers import MessagingHandler
from proton.reactor import ApplicationEvent, Container, EventInjector

OUTCOMES = {"accept": Delivery.ACCEPTED, "reject": Delivery.REJECTED, "release": Delivery.RELEASED,
            "modify": Delivery.MODIFIED}


@dataclass
class Seen:
    targets: list[str | None] = field(default_factory=list)
    capabilities: list[list[str]] = field(default_factory=list)
    properties: list[dict] = field(default_factory=list)
    messages: list[tuple[str | None, str | None, str | None]] = field(default_factory=list)  # subject, to, id


class Peer(MessagingHandler):
    """`outcome`: how every message is settled (accept, reject, release, modify);
    `reject_condition`: (condition, description) a rejection carries;
    `refuse_link`: an AMQP error condition name to close each sender link with."""

    def __init__(self, outcome: str = "accept", refuse_link: str | None = None,
                 reject_condition: tuple[str, str] | None = None):
        super().__init__(auto_accept=False, auto_settle=False)
        self.outcome = outcome
        self.reject_condition = reject_condition
        self.refuse_link = refuse_link
        self.seen = Seen()
        self.port = _free_port()
        self._connections: list = []
        self._refused: list = []
        self._ready = threading.Event()
        self._injector = EventInjector()
        self._container = Container(self)
        self._container.selectable(self._injector)
        self._thread = threading.Thread(target=self._container.run, daemon=True)

    def __enter__(self) -> Peer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the AMQP test peer did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._injector.trigger(ApplicationEvent("stop"))
        self._thread.join(10)

    def on_start(self, event):
        self._acceptor = event.container.listen(f"127.0.0.1:{self.port}")
        self._ready.set()

    def on_stop(self, event):
        """The ApplicationEvent "stop" from __exit__: close everything so the container ends."""
        self._acceptor.close()
        for conn in self._connections:
            conn.close()
        self._injector.close()
        self._container.stop()  # do not wait for clients to answer the close

    def on_connection_opening(self, event):
        self._connections.append(event.connection)

    def on_link_opening(self, event):
        link = event.link
        if not link.is_receiver:
            return
        target = link.remote_target
        self.seen.targets.append(target.address)
        caps = target.capabilities
        caps.rewind()
        self.seen.capabilities.append([str(c) for c in (caps.get_object() or [])] if caps.next() else [])
        props = target.properties
        props.rewind()
        self.seen.properties.append({str(k): v for k, v in (props.get_object() or {}).items()}
                                    if props.next() else {})
        if self.refuse_link:  # as RabbitMQ 4.2 and qpidd do: attach with a null target, then detach
            link.target.address = None
            link.source.address = link.remote_source.address
            link.condition = Condition(self.refuse_link, f"no such node: {target.address}")
            link.open()
            self._refused.append(link)
            return
        link.target.address = target.address
        link.open()
        link.flow(1000)

    def on_link_opened(self, event):
        if event.link in self._refused:
            event.link.close()

    def on_message(self, event):
        if self.refuse_link:
            return
        msg = event.message
        self.seen.messages.append((msg.subject, msg.address, msg.id))
        dlv = event.delivery
        if self.outcome == "reject" and self.reject_condition:
            dlv.local.condition = Condition(*self.reject_condition)
        dlv.update(OUTCOMES[self.outcome])
        dlv.settle()



def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
