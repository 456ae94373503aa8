"""AMQP 1.0 transport: proton's engine driven synchronously, one module per job.

- `connection.Connection(config, endpoint)`: socket, TLS, SASL (Kerberos), one session and the
  I/O loop.  `open(deadline)` connects and waits for the broker's open frame (`start(deadline)`
  only queues it, so links attached next go out in the same round trip); `broker` is what the
  open frame announced (`BrokerInfo(product, version)`); `process(until, done)` runs the loop
  until `done()` or `until` (False), `wait(done, deadline, doing)` the same but raises
  BrokerError(timeout); `flush()` writes queued frames; `healthy()`, `close()`, `endpoint`,
  `error`.  Every failure becomes one `BrokerError` whose `kind` (`errors.Kind`) says what
  failed and whether it is `final`.
- `sender.Sender(conn, address)`: one sender link.  `send(batch, deadline) -> BatchOutcome`
  sends and waits for every settlement; pipelined: `start(payload) -> tag` without waiting,
  then `conn.process(...)`; each settlement lands in `settlements[tag]` (a `Settlement` with
  outcome, condition, description) and is passed to `on_settled(tag, settlement)`.
- `sender.AmqpConnection(config, endpoint)`: a connection plus the sender to the configured
  exchange, what the publisher keeps warm (`open`, `send`, `healthy`, `close`, `broker`).
- `receiver.Receivers` / `receiver.Listener` / `receiver.open_listener`: consumers.
- `diagnose`: pure functions turning broker conditions and transport failures into errors.
- `failover.connect_first(config, make)`: the first endpoint that opens, written once.
"""

from .connection import BrokerInfo, Connection
from .errors import BrokerError, Kind
from .failover import connect_first
from .sender import NULL_TARGET_GRACE, OUTCOMES, AmqpConnection, BatchOutcome, Sender, Settlement

__all__ = ["OUTCOMES", "NULL_TARGET_GRACE", "AmqpConnection", "BatchOutcome", "BrokerError", "BrokerInfo",
           "Connection", "Kind", "Sender", "Settlement", "connect_first"]
