"""The package's errors: one base class, one family per part that fails (as fedora-messaging's
exceptions.py), so that a caller can catch a family or everything of ours, and `first_line`, the
one way a log line or a command's message shows an exception."""

from __future__ import annotations


class MessagebusError(Exception):
    """Base of every error koji-messagebus raises on purpose."""


class SettingsError(MessagebusError):
    """A config (messagebus.conf, hub.conf) that cannot be used."""


class BusError(MessagebusError):
    """Talking to the broker failed (connect, TLS, SASL/Kerberos, send, declare)."""


class OutboxError(MessagebusError):
    """The outbox table is missing or cannot be used."""


class MessageError(MessagebusError):
    """A message or its schema: no schema for a type, no validator installed."""


class CommandError(MessagebusError):
    """An expected failure of a command-line command."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (not a DETAIL that may hold a row's bytes), or its
    class name when the text is empty."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
