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
