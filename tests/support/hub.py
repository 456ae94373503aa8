"""A Koji hub request cycle for tests on the real PostgreSQL, as kojixmlrpc runs it.

The plugin is loaded by koji_messagebus.testing (the one implementation, shipped for the demo and
`send`), with koji's own `PluginTracker`; callbacks run through koji's own
`koji.plugin.run_callbacks`.  What tests need on top of the public simulator is here.
The database connection is a real psycopg2 connection wrapped like kojihub's
`DBWrapper`/`CursorWrapper` (kojihub itself is not on PyPI): list parameters become tuples,
`close()` issues a raw ROLLBACK.

`Hub.multicall` runs kojixmlrpc's `multiCall` loop as kojihub 1.35 does: per sub-call
`SAVEPOINT multiCall_loop` (koji.db.Savepoint, which also sets commit_pending), `context.method`
and `context.params` set by `_dispatch`, `ROLLBACK TO SAVEPOINT multiCall_loop` on a fault, and
`del context.event_id` after each sub-call; the request then commits (preCommit, COMMIT,
postCommit) even if every sub-call failed.  `get_event()` is koji.db.get_event: one `events` row
per transaction (per sub-call in a multicall), created by the first versioned write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import koji
import koji.plugin
from koji.context import context

from devkit.hubdb import DSN, CursorWrapper, DBWrapper, db_connect
from koji_messagebus import testing

__all__ = ["DSN", "CursorWrapper", "DBWrapper", "Fault", "Hub", "db_connect", "dml", "fire", "get_event",
           "load_plugin", "unload_plugin", "HUB_SCHEMA"]

def load_plugin() -> Any:
    """koji_messagebus.testing.load_plugin (the one implementation), after dropping every callback
    an earlier test left registered; returns the module."""
    unload_plugin()
    module, _ = testing.load_plugin()
    return module


def unload_plugin() -> None:
    """Drop every registered callback, then koji_messagebus.testing.unload_plugin's reset."""
    for cbs in koji.plugin.callbacks.values():
        cbs.clear()
    testing.unload_plugin([])


#: what kojihub's schema defines for events (schema.sql: events, get_event())
HUB_SCHEMA = """\
CREATE TABLE IF NOT EXISTS events (id SERIAL PRIMARY KEY, time TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION get_event() RETURNS INTEGER AS
    'INSERT INTO events (time) VALUES (clock_timestamp()); SELECT currval(''events_id_seq'')::INTEGER'
    LANGUAGE SQL;
"""


def get_event() -> int:
    """koji.db.get_event: the transaction's event id, created on first use and kept in context."""
    if hasattr(context, "event_id"):
        return context.event_id
    cur = context.cnx.cursor()
    cur.execute("SELECT get_event()", {})
    context.event_id = cur.fetchone()[0]
    return context.event_id


def dml(sql: str, values: dict | None = None) -> int:
    """koji.db._dml: run a write and mark the request for commit."""
    cur = context.cnx.cursor()
    cur.execute(sql, values or {})
    context.commit_pending = True
    return cur.rowcount


class Fault(koji.GenericError):
    """A sub-call's failure (kojihub raises koji.GenericError subclasses)."""


SubCall = Callable[[Any], Any]


class Hub:
    """Runs hub requests: a handler that writes to the database and fires callbacks."""

    def __init__(self, raw_cnx=None):
        self._raw = raw_cnx or db_connect()
        self.phases: dict[str, float] = {}

    def _begin(self, method: str, params: Any) -> None:
        # as kojihub.db.connect() does when it reuses the process's connection: DBWrapper.close()
        # ended the last transaction with a raw ROLLBACK that psycopg2 did not see
        self._raw.cursor().execute("BEGIN")
        self._raw.rollback()
        context._threadclear()
        context.commit_pending = False
        context.cnx = DBWrapper(self._raw)
        context.method = method
        context.params = params

    def _finish(self, on_commit=None) -> None:
        """kojixmlrpc.application after the handler returned without a fault (testing.finish_request);
        `self.phases` keeps the seconds spent in preCommit and postCommit."""
        self.phases = testing.finish_request(context.cnx, on_commit)

    def multicall(self, calls: list[SubCall | tuple[str, SubCall]], on_commit=None) -> list[Any]:
        """One multiCall request; each call is handler(cursor) or (method name, handler).  Returns
        kojixmlrpc's results: [result] or {'faultCode', 'faultString'} per call."""
        named = [c if isinstance(c, tuple) else (getattr(c, "__name__", "call"), c) for c in calls]
        results: list[Any] = []
        self._begin("multiCall", ([{"methodName": n, "params": [i]} for i, (n, _) in enumerate(named)],))
        try:
            for i, (name, handler) in enumerate(named):
                dml("SAVEPOINT multiCall_loop")  # koji.db.Savepoint('multiCall_loop')
                context.method = name  # ModXMLRPCRequestHandler._dispatch
                context.params = [i]  # a new object per sub-call, as the XML-RPC unmarshaller gives
                try:
                    results.append([handler(context.cnx.cursor())])
                except Exception as exc:  # noqa: BLE001 - kojixmlrpc turns every exception into a fault
                    dml("ROLLBACK TO SAVEPOINT multiCall_loop")
                    results.append({"faultCode": getattr(exc, "faultCode", 1), "faultString": str(exc)})
                if hasattr(context, "event_id"):  # subsequent calls should not recycle event ids
                    del context.event_id
            self._finish(on_commit)
        finally:
            context.cnx.close()
            context._threadclear()
        return results

    def request(self, handler: Callable[[Any], None], fail: bool = False, on_commit=None) -> None:
        """One request: handler(cursor) writes and fires callbacks; then, as kojixmlrpc does,
        preCommit, COMMIT, postCommit — or a rollback if the handler raised or `fail`."""
        self._begin("test", ())  # a request's params: the XML-RPC unmarshaller's tuple
        try:
            try:
                handler(context.cnx.cursor())
                context.commit_pending = True
                if fail:
                    raise koji.GenericError("the call failed")
            except Exception:
                self._raw.rollback()
                if fail:
                    return
                raise
            self._finish(on_commit)
        finally:
            context.cnx.close()
            context._threadclear()

    def close(self):
        self._raw.close()


def fire(cbtype: str, kwargs: dict) -> Callable[[Any], None]:
    """A handler that runs one callback with the given kwargs."""
    def handler(cursor):
        koji.plugin.run_callbacks(cbtype, **kwargs)
    return handler
