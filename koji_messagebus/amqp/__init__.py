"""AMQP 1.0 transport: proton's engine driven synchronously, one module per job.  It takes the
typed sections it needs (`config.broker`, `config.exchange`, `config.topic`, the endpoints), never
the whole Config.

- `connection.Connection(broker, exchange, endpoint)`: socket, TLS, SASL (Kerberos), one session and the
  I/O loop.  `open(deadline)` connects and waits for the broker's open frame (`start(deadline)`
  only queues it, so links attached next go out in the same round trip); `broker` is what the
  open frame announced (`BrokerInfo(product, version)`); `process(until, done)` runs the loop
  until `done()` or `until` (False), `wait(done, deadline, doing)` the same but raises
  BrokerError(timeout); `flush()` writes queued frames; `healthy()`, `close()`, `endpoint`,
  `error`.  Every failure becomes one `BrokerError` whose `kind` (`errors.Kind`) says what
  failed and whether it is `final`.
- `sender.Sender(conn, address)`: one sender link.  `send(batch, deadline) -> BatchOutcome`
  sends and waits for every settlement; pipelined: `start(payload) -> tag` (or
  `start_message(msg)`) without waiting, then `conn.process(...)` (`conn.fileno()` and
  `conn.wants_write()` for a caller's own select()); each settlement lands in
  `settlements[tag]` (a `Settlement`: outcome, condition, description; `.lost` is the reason
  a message is gone for good, None when accepted or `.unroutable`) and is passed to
  `on_settled(tag, settlement)`.  Unroutable (released) messages are counted and said at INFO
  at most once a minute by `sender.UNROUTABLE`.
- `sender.AmqpConnection(broker, exchange, endpoint)`: a connection plus the sender to the configured
  exchange, what the sender thread keeps warm (`open`, `send`, `healthy`, `close`, `broker`,
  `route`).  Opening reads the open frame, picks the address (`address.route`: `[exchange]
  address = auto` per broker, or the template as written), creates the exchange where the
  broker lets a client, then attaches the sender.
- `address`: the per-broker address table, percent-encoding (`encode_segment`) and setting
  `to` in an already encoded message (`with_to`).
- `management.Management(conn, dialect)`: request/response with RabbitMQ 4.x's `/management`
  (HTTP over AMQP) or Broker-J's `$management`; `ensure_exchange`, queue helpers,
  `prepare_exchange(broker, exchange, endpoints)`.
- `receiver.Receivers` / `receiver.Listener` / `receiver.open_listener`: consumers; given
  binding keys, the Listener subscribes the broker's own way (no deprecated features).
- `diagnose`: pure functions turning broker conditions and transport failures into errors.
- `failover.connect_first(endpoints, connect_timeout, make)`: the first endpoint that opens, written once.
"""

from koji_messagebus.amqp.connection import BrokerInfo, Connection
from koji_messagebus.amqp.errors import BrokerError, Kind
from koji_messagebus.amqp.failover import connect_first
from koji_messagebus.amqp.sender import NULL_TARGET_GRACE, OUTCOMES, AmqpConnection, BatchOutcome, Sender, Settlement

__all__ = ["OUTCOMES", "NULL_TARGET_GRACE", "AmqpConnection", "BatchOutcome", "BrokerError", "BrokerInfo",
           "Connection", "Kind", "Sender", "Settlement", "connect_first"]
