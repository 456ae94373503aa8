"""Typed broker errors: one exception class whose `kind` says what failed and whether it is final."""

from __future__ import annotations

from enum import Enum

from koji_messagebus.errors import BusError


class Kind(str, Enum):
    """What went wrong.  A str, so `error.kind == "auth"` keeps working; `final` kinds are the
    broker's verdict (another endpoint of the same cluster would say the same)."""

    UNREACHABLE = "unreachable"
    TLS = "tls"
    AUTH = "auth"
    NOT_FOUND = "not-found"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    CONNECTION_LOST = "connection-lost"
    BREAKER_OPEN = "breaker-open"
    PROTOCOL = "protocol"

    @property
    def final(self) -> bool:
        return self in (Kind.NOT_FOUND, Kind.REFUSED)

    def __str__(self) -> str:
        return self.value


class BrokerError(BusError):
    """A failure talking to the broker; `kind` is a `Kind` (given as one or as its text)."""

    def __init__(self, kind: Kind | str, message: str):
        self.kind = Kind(kind)
        super().__init__(message)

    @property
    def final(self) -> bool:
        """True when trying another endpoint or resending cannot help (missing exchange, no right)."""
        return self.kind.final
