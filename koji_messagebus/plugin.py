"""The koji glue: hub callbacks, decorated with koji.plugin's decorators.

The hub loads `messagebus.py` from its PluginPath; that file imports the callbacks below, and
the hub registers every callable with a `callbacks` attribute.  Messages of a request live in
koji's thread-local `context` (cleared by the hub for every request); no exception ever
leaves a callback.
"""

from __future__ import annotations

import atexit
import threading

from koji.context import context
from koji.plugin import callback, ignore_error
from koji.plugin import callbacks as HUB_CALLBACKS

from koji_messagebus.format.messages import CALLBACK_TYPES
from koji_messagebus.format.values import safe_repr
from koji_messagebus.format.wire import Unsendable
from koji_messagebus.log import log
from koji_messagebus.runtime import RequestBatch, Runtime

#: only the event callbacks this hub knows (registering an unknown one fails the hub's load)
EVENT_CALLBACKS = tuple(cb for cb in CALLBACK_TYPES if cb in HUB_CALLBACKS)

_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    """The process's Runtime, created (and the config read) on first use."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = Runtime()
    return _runtime


def shutdown(*args, **kwargs) -> None:
    """Process exit: the Runtime's clean exit (bounded by [broker] timeout).  Registered with atexit and,
    under mod_wsgi, with `mod_wsgi.subscribe_shutdown` (mod_wsgi 4.9.1+ may skip the interpreter's
    destruction, and with it atexit); called with that hook's (event, **kwargs), runs once."""
    current = _runtime
    if current is not None:
        current.shutdown()


def _register_exit_hooks() -> None:
    atexit.register(shutdown)
    try:
        import mod_wsgi  # type: ignore[import-not-found]  # only inside Apache's mod_wsgi
    except ImportError:
        return
    subscribe = getattr(mod_wsgi, "subscribe_shutdown", None)  # mod_wsgi >= 4.8; the PyPI package lacks it
    if subscribe is not None:
        try:
            subscribe(shutdown)
        except Exception:  # noqa: BLE001 - outside a running mod_wsgi: atexit still applies
            log.debug("mod_wsgi.subscribe_shutdown failed", exc_info=True)


_register_exit_hooks()


def reset(new: Runtime | None = None) -> None:
    """Replace the process's Runtime (tests, config reload)."""
    global _runtime
    with _runtime_lock:
        if _runtime is not None:
            _runtime.close()
        _runtime = new


def _current_batch() -> RequestBatch | None:
    """The request's batch, if an event of it was collected."""
    return getattr(context, "messagebus_batch", None)


def _batch() -> RequestBatch:
    """The request's batch, made at its first event."""
    batch = _current_batch()
    if batch is None:
        batch = context.messagebus_batch = RequestBatch()
    return batch


@callback(*EVENT_CALLBACKS)
@ignore_error
def messagebus_collect(cbtype, *args, **kws):
    """post* event: format the message and keep it with the request.  Not @convert_datetime: koji
    would deep-copy the kwargs outside any guard (a cycle, deep nesting or a datetime map key
    then raises into the hub); the encoder converts datetimes the same way, in its one pass."""
    try:
        runtime().collect(_batch(), CALLBACK_TYPES[cbtype], kws, getattr(context, "cnx", None),
                          getattr(context, "method", None), getattr(context, "params", None))
    except Unsendable as exc:
        log.error("lost: %s", exc)
    except Exception as exc:  # noqa: BLE001 - values cannot get here (built with placeholders): a bug
        log.error("lost: could not build the %s message: %s", cbtype, safe_repr(exc).replace("\n", " "))
        log.debug("could not build the %s message", cbtype, exc_info=True)


@callback("preCommit")
@ignore_error
def messagebus_store(cbtype, *args, **kws):
    """Before COMMIT: drop what the hub rolled back (multicall), store the rest in the outbox (when enabled)."""
    batch = _current_batch()
    if batch is None or not batch.messages:
        return
    try:
        runtime().pre_commit(batch, getattr(context, "cnx", None))
    except Exception:  # noqa: BLE001 - no exception escapes a callback (logged with its traceback)
        log.exception("preCommit failed; messages will be sent directly")


@callback("postCommit")
@ignore_error
def messagebus_send(cbtype, *args, **kws):
    """After COMMIT: send the request's messages and wait for the broker (bounded)."""
    batch = _current_batch() or RequestBatch()
    try:
        context.messagebus_batch = None
        runtime().post_commit(batch, getattr(context, "cnx", None))
    except Exception:  # noqa: BLE001 - no exception escapes a callback (logged with its traceback)
        log.exception("postCommit failed")
