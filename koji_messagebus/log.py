"""The plugin's logger: `koji.plugin.messagebus`, so that the hub's logging config applies to it.

The hub's log lines carry no plugin name of their own, so each message is prefixed
"messagebus: " here, once, instead of in every call.  The prefix is part of the message
itself (`record.getMessage()`), so handlers, filters and tests see the same text as before.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

LOGGER_NAME = "koji.plugin.messagebus"
PREFIX = "messagebus: "


class PrefixedLog(logging.LoggerAdapter):  # type: ignore[type-arg]  # generic only in typeshed
    """A logger adapter that puts `PREFIX` in front of every message."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{PREFIX}{msg}", kwargs


log = PrefixedLog(logging.getLogger(LOGGER_NAME), {})
"""Use as `from .log import log`; `log.info("sent %d", n)` logs "messagebus: sent 1"."""


def log_cause(cause: str, level: int, text: str, *args: Any) -> None:
    """Log a recurring problem at most once per cause per minute, with counts (issue 18).

    `cause` groups the lines ("outbox-locked", "resend", ...); `text` % `args` is one occurrence.
    Stub for now: logs every occurrence; the throttle is being written."""
    log.log(level, text, *args)
