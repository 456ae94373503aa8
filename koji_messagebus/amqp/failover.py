"""Endpoint failover, written once: the first endpoint of `[broker] urls` that works."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from koji_messagebus.amqp.errors import BrokerError
from koji_messagebus.config.sections import Endpoint as BrokerEndpoint


class Openable(Protocol):
    def open(self, deadline: float) -> None: ...

    def close(self, wait: float = ...) -> None: ...


T = TypeVar("T", bound=Openable)


def connect_first(endpoints: Sequence[BrokerEndpoint], connect_timeout: float,
                  make: Callable[[BrokerEndpoint], T],
                  clock: Callable[[], float] = time.monotonic) -> tuple[T, list[BrokerError]]:
    """Open `make(endpoint)` for each endpoint in order, each with its own connect_timeout (so a
    silent first host does not hide the next); return the first that opened and the errors of
    those before it.  A final error (the broker's verdict: missing exchange, no right) stops the
    search, as another node of the same cluster would say the same.  Raise the error when none
    opened (several: joined in one message, with the last one's kind)."""
    errors: list[BrokerError] = []
    for endpoint in endpoints:
        conn = make(endpoint)
        try:
            conn.open(clock() + connect_timeout)
        except BrokerError as exc:
            conn.close()
            errors.append(exc)
            if exc.final:
                break
            continue
        return conn, errors
    if len(errors) == 1:
        raise errors[0]
    raise BrokerError(errors[-1].kind, "; ".join(str(e) for e in errors))
