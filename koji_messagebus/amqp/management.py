"""Request/response with a broker's management node, over the plugin's own connection.

- RabbitMQ 4.x, HTTP over AMQP: a sender and a receiver, both named alike and marked `paired`, on
  `/management`; a request's `subject` is the HTTP method, `to` the path (`/exchanges/NAME`,
  `/queues/NAME`, `/bindings`), `reply_to` is `$me`; the answer's `subject` is the HTTP status.
- Qpid Broker-J, AMQP management (draft): requests to `$management` with application-properties
  `operation`, `type`, `name`, answers on a dynamic reply queue with `statusCode`.

Both speak through `Management.request()`; `ensure_exchange()` and the queue helpers are the few
operations the plugin and `listen` need.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from proton import Delivery, Endpoint, Link, Message, symbol

from koji_messagebus.amqp.address import encode_segment, flavour
from koji_messagebus.amqp.connection import BrokerInfo, Connection
from koji_messagebus.amqp.errors import BrokerError, Kind
from koji_messagebus.amqp.failover import connect_first
from koji_messagebus.config.sections import BrokerSettings, ExchangeSettings
from koji_messagebus.config.sections import Endpoint as BrokerEndpoint
from koji_messagebus.rabbitmq import declare_command

RABBITMQ_NODE = "/management"
BROKERJ_NODE = "$management"
#: an amqp-value section holding null
AMQP_VALUE_NULL = b"\x00\x53\x77\x40"
BROKERJ_TYPES = {"topic": "org.apache.qpid.TopicExchange", "headers": "org.apache.qpid.HeadersExchange"}


@dataclass(frozen=True)
class Response:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        """The status and what the broker said about it, on one line."""
        body = self.body
        if isinstance(body, (bytes, bytearray)):
            body = bytes(body).decode("utf-8", "replace")
        if isinstance(body, dict):
            body = body.get("message") or body.get("error") or body
        return f"{self.status} {body}" if body not in (None, "", {}) else str(self.status)


class Management:
    """A request/response link pair on `conn` (dialect `rabbitmq` or `brokerj`)."""

    def __init__(self, conn: Connection, dialect: str = "rabbitmq"):
        self.conn = conn
        self.dialect = dialect
        self._name = f"koji-messagebus-management-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._ids = itertools.count(1)
        self._answers: dict[str, Response] = {}
        self._sender: Link | None = None
        self._receiver: Link | None = None

    def attach(self) -> None:
        session = self.conn.session
        if self.dialect == "rabbitmq":
            snd = session.sender(self._name)
            snd.target.address = RABBITMQ_NODE
            snd.snd_settle_mode = Link.SND_SETTLED
            snd.rcv_settle_mode = Link.RCV_FIRST
            snd.properties = {symbol("paired"): True}
            rcv = session.receiver(self._name)
            rcv.source.address = RABBITMQ_NODE
            rcv.snd_settle_mode = Link.SND_SETTLED
            rcv.rcv_settle_mode = Link.RCV_FIRST
            rcv.properties = {symbol("paired"): True}
        else:
            snd = session.sender(self._name + "-req")
            snd.target.address = BROKERJ_NODE
            rcv = session.receiver(self._name + "-reply")
            rcv.source.dynamic = True
        self.conn.register(rcv, self)
        self.conn.register(snd, self)
        snd.open()
        rcv.open()
        rcv.flow(10)
        self._sender, self._receiver = snd, rcv

    def attached(self) -> bool:
        links = (self._sender, self._receiver)
        if not all(link is not None and link.state & Endpoint.REMOTE_ACTIVE for link in links):
            return False
        assert self._receiver is not None
        return self.dialect == "rabbitmq" or bool(self._receiver.remote_source.address)

    def open(self, deadline: float) -> None:
        self.attach()
        self.conn.wait(self.attached, deadline, f"attaching to the broker's management node ({self.dialect})")

    def on_delivery(self, dlv: Delivery) -> None:
        link = dlv.link
        if not link.is_receiver:
            if dlv.remote_state or dlv.settled:
                dlv.settle()
            return
        if not dlv.readable or dlv.partial:
            return
        data = link.recv(dlv.pending) or b""
        link.advance()
        dlv.update(Delivery.ACCEPTED)
        dlv.settle()
        link.flow(1)
        msg = Message()
        msg.decode(data)
        key = str(msg.correlation_id)
        if self.dialect == "rabbitmq":
            status = int(msg.subject) if msg.subject and str(msg.subject).isdigit() else 0
        else:
            props: dict[str, Any] = dict(msg.properties or {})
            status = int(props.get("statusCode", 0))
        self._answers[key] = Response(status, msg.body)

    def request(self, deadline: float, method: str = "GET", path: str = "", body: Any = None,
                properties: dict[str, Any] | None = None) -> Response:
        """Send one request and wait for its answer (BrokerError(timeout) at `deadline`)."""
        assert self._sender is not None and self._receiver is not None, "open() first"
        msg_id = f"kmb-{next(self._ids)}"
        msg: Any = Message(id=msg_id, body=body)  # proton's setters are typed narrower than they accept
        if self.dialect == "rabbitmq":
            msg.subject = method
            msg.address = path
            msg.reply_to = "$me"
        else:
            msg.properties = properties or {}
            msg.reply_to = self._receiver.remote_source.address
            msg.correlation_id = msg_id
        payload = msg.encode()
        if body is None:
            payload += AMQP_VALUE_NULL  # proton leaves the body out; RabbitMQ wants an amqp-value (null)
        dlv = self._sender.delivery(msg_id)
        self._sender.send(payload)
        self._sender.advance()
        if self.dialect == "rabbitmq":
            dlv.settle()  # the node takes requests pre-settled
        self.conn.wait(lambda: msg_id in self._answers, deadline,
                       f"waiting for the management node's answer to {method} {path}".rstrip())
        return self._answers.pop(msg_id)


def exchange_fix(name: str, ex_type: str, durable: bool) -> str:
    return (f"declare it ({declare_command(name, ex_type, durable)}) or give the plugin's user the configure "
            "permission on it")


def ensure_exchange(mgmt: Management, name: str, ex_type: str, durable: bool, deadline: float) -> str:
    """Create the exchange if it is missing; return what happened (created, exists) or raise
    BrokerError(not-found) naming the exchange, the broker and the fix."""
    conn = mgmt.conn
    where = f"{conn.broker} at {conn.endpoint.host}:{conn.endpoint.port}"
    if mgmt.dialect == "brokerj":
        answer = mgmt.request(deadline, "CREATE", name, {"name": name, "durable": durable},
                              {"operation": "CREATE", "type": BROKERJ_TYPES[ex_type], "name": name})
        if answer.ok:
            return "created"
        if answer.status == 409:
            return "exists"
        raise BrokerError(Kind.NOT_FOUND, f"exchange '{name}' could not be created on {where}: {answer.text()}; "
                          "create it, or give the plugin's user the right to")
    path = f"/exchanges/{encode_segment(name)}"
    answer = mgmt.request(deadline, "PUT", path, {"type": ex_type, "durable": durable, "auto_delete": False,
                                                  "internal": False, "arguments": {}})
    if answer.ok:
        return "declared"
    refused = answer
    # 4.0 has no GET /exchanges/NAME: a sender attached to the exchange's v2 address tells (a missing
    # exchange ends the session on 4.0/4.1, refuses the link on 4.2+)
    try:
        probe_exchange(conn, path, deadline)
    except BrokerError as exc:
        if exc.kind != Kind.NOT_FOUND:
            raise
        raise BrokerError(Kind.NOT_FOUND, f"exchange '{name}' does not exist on {where} and the plugin could not "
                          f"create it (PUT {path}: {refused.text()}): {exchange_fix(name, ex_type, durable)}") from None
    return f"exists (not declared: PUT {path} answered {refused.text()})"


def probe_exchange(conn: Connection, address: str, deadline: float) -> None:
    """Attach a sender to `address` (and leave it): BrokerError(not-found) if the broker has no such node."""
    link = conn.session.sender(f"koji-messagebus-probe-{uuid.uuid4().hex[:6]}")
    link.target.address = address
    link.source.address = link.name
    link.open()
    conn.wait(lambda: bool(link.state & Endpoint.REMOTE_ACTIVE) and link.remote_target.address is not None,
              deadline, f"attaching to {address}")


def declare_queue(mgmt: Management, name: str, deadline: float, exclusive: bool = True,
                  durable: bool = False) -> Response:
    """A queue on RabbitMQ 4.x: exclusive (this connection's, deleted with it) and non-durable, or
    durable (kept, collecting messages, until deleted)."""
    settings = ({"durable": True, "exclusive": False, "auto_delete": False} if durable else
                {"durable": False, "exclusive": exclusive, "auto_delete": not exclusive})
    return mgmt.request(deadline, "PUT", f"/queues/{encode_segment(name)}", {**settings, "arguments": {}})


def bind_queue(mgmt: Management, queue: str, exchange: str, key: str, arguments: dict[str, Any],
               deadline: float) -> Response:
    return mgmt.request(deadline, "POST", "/bindings", {"source": exchange, "destination_queue": queue,
                                                        "binding_key": key, "arguments": arguments})


def delete_queue(mgmt: Management, name: str, deadline: float) -> Response:
    return mgmt.request(deadline, "DELETE", f"/queues/{encode_segment(name)}")


def prepare_exchange(broker: BrokerSettings, exchange: ExchangeSettings,
                     endpoints: Sequence[BrokerEndpoint]) -> tuple[BrokerInfo, str]:
    """Connect to the first endpoint that works, create the configured exchange where the broker
    lets a client (RabbitMQ 4.x, Broker-J) and say what happened; "" where the broker has no way
    (RabbitMQ 3.x: over AMQP 0-9-1 only) or needs none (Artemis: addresses on demand)."""
    conn, _ = connect_first(endpoints, broker.connect_timeout, lambda ep: Connection(broker, exchange, ep))
    try:
        info = conn.broker
        kind = flavour(info)
        if kind not in ("rabbitmq4", "brokerj"):
            return info, ""
        deadline = time.monotonic() + broker.connect_timeout
        mgmt = Management(conn, "rabbitmq" if kind == "rabbitmq4" else "brokerj")
        mgmt.open(deadline)
        state = ensure_exchange(mgmt, exchange.name, exchange.type, bool(exchange.durable), deadline)
        return info, state
    finally:
        conn.close()
