"""A Koji hub request cycle without a hub, shipped for the demo and for tests.

The plugin is loaded with koji's own `PluginTracker` from the shipped shim directory, its
callbacks registered as the hub registers them, and each request runs through koji's
`run_callbacks` with koji's `context`, in kojixmlrpc's order: the callbacks, preCommit, COMMIT,
postCommit.  Kojihub itself is not on PyPI; only koji (the client library) is needed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from koji_messagebus import hub as _shim_pkg

PLUGIN_DIR = os.path.dirname(_shim_pkg.__file__)
MODULE = "_koji_plugin__messagebus"

Event = tuple[str, dict[str, Any]]
Callbacks = list[tuple[str, Any]]


def load_plugin(plugin_dir: str = PLUGIN_DIR) -> tuple[Any, Callbacks]:
    """Load `messagebus` as the hub does and register its callbacks with koji.plugin; returns the
    module and the (callback type, function) pairs registered, for `unload_plugin`."""
    import koji.plugin

    from koji_messagebus import plugin as mb_plugin

    mb_plugin.reset(None)  # a fresh Runtime: reads $KOJI_MESSAGEBUS_CONFIG on first use
    sys.modules.pop(MODULE, None)
    module = koji.plugin.PluginTracker(path=[plugin_dir]).load("messagebus")
    registered: Callbacks = []
    for value in vars(module).values():
        if isinstance(value, type) or not callable(value):
            continue
        for cbtype in getattr(value, "callbacks", None) or ():
            koji.plugin.register_callback(cbtype, value)
            registered.append((cbtype, value))
    return module, registered


def unload_plugin(registered: Callbacks) -> None:
    """Undo `load_plugin`: only the callbacks it registered are removed."""
    import koji.plugin

    from koji_messagebus import plugin as mb_plugin

    for cbtype, func in registered:
        with contextlib.suppress(ValueError):
            koji.plugin.callbacks[cbtype].remove(func)
    mb_plugin.reset(None)
    sys.modules.pop(MODULE, None)


def finish_request(cnx: Any, on_commit: Callable[[], None] | None = None) -> dict[str, float]:
    """What kojixmlrpc does once a handler returned without a fault: if the request wrote
    (`context.commit_pending`), preCommit, COMMIT (of `cnx`, when there is one), postCommit.
    Returns the seconds spent in preCommit (inside the hub's transaction) and in postCommit."""
    import koji.plugin
    from koji.context import context

    phases = {"preCommit": 0.0, "postCommit": 0.0}
    if not context.commit_pending:
        return phases
    start = time.perf_counter()
    koji.plugin.run_callbacks("preCommit")
    phases["preCommit"] = time.perf_counter() - start
    if cnx is not None:
        cnx.commit()
    if on_commit:
        on_commit()
    start = time.perf_counter()
    koji.plugin.run_callbacks("postCommit")
    phases["postCommit"] = time.perf_counter() - start
    return phases


class _Collect(logging.Handler):
    """Keeps the first line of each warning or error the plugin logs during a request."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, (record.getMessage().splitlines() or [""])[0]))


class HubSimulator:
    """The plugin loaded as the hub loads it, and hub requests run as kojixmlrpc runs them.

    `cnx` is the database connection the hub would hold (needed by the outbox; None without).
    With `echo_log` the plugin's log also propagates (to stderr under `--debug`)."""

    def __init__(self, cnx: Any = None, echo_log: bool = False, plugin_dir: str = PLUGIN_DIR):
        self.module, self.registered = load_plugin(plugin_dir)
        self.cnx = cnx
        self._log = logging.getLogger("koji.plugin")
        self._collector = _Collect()
        self._echo = echo_log

    def describe(self) -> str:
        names = sorted({f.__name__ for _, f in self.registered})
        types = len({cb for cb, _ in self.registered})
        return f"{self.module.__file__} -> {', '.join(names)} for {types} callback types"

    def request(self, method: str, events: list[Event]) -> tuple[float, list[tuple[int, str]]]:
        """One hub request; returns the seconds spent in postCommit and the plugin's warnings and
        errors as (level, first line)."""
        import koji.plugin
        from koji.context import context

        self._collector.lines.clear()
        propagate = self._log.propagate
        self._log.addHandler(self._collector)
        self._log.propagate = self._echo
        context._threadclear()
        try:
            context.method = method
            context.commit_pending = True
            context.cnx = self.cnx
            for cbtype, kwargs in events:
                koji.plugin.run_callbacks(cbtype, **kwargs)
            seconds = finish_request(self.cnx)["postCommit"]
        finally:
            context._threadclear()
            self._log.removeHandler(self._collector)
            self._log.propagate = propagate
        return seconds, list(self._collector.lines)

    def close(self) -> None:
        """Unregister the plugin; the connection, if any, is the caller's."""
        unload_plugin(self.registered)
        self.registered = []
