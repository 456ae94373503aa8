"""A Koji hub for mod_wsgi in the Apache tests: kojixmlrpc's `application`, with two hub calls.

What kojihub/kojixmlrpc.py (Koji 1.35) does, kept here: `server_setup` once per process at the
first request (hub.conf from `koji.hub.ConfigFile`, logging to stderr = Apache's error log, the
plugins loaded with koji's `PluginTracker` from PluginPath and their callbacks registered as
`HandlerRegistry.register_plugin` does); per request `context._threadclear()`,
`commit_pending = False`, the thread's database connection (kojihub.db.connect keeps one per
thread), the XML-RPC body parsed with koji's parser, `_dispatch` setting `context.method` and
`context.params`, `multiCall` with `SAVEPOINT multiCall_loop` and `ROLLBACK TO` on a fault; then a
rollback if the call failed, else preCommit, COMMIT, postCommit; finally `cnx.close()` (a raw
ROLLBACK) and `_threadclear()`.  Not kept: sessions, policy, uploads (the plugin uses none).

The calls (the hub table `apache_ledger` is the test's ledger of committed calls):
- `tagBuild(seq)`: inserts `seq` (and this process's PID) in the hub's transaction, takes an event
  id, fires `postTag` with recorded kwargs whose build id is `seq`;
- `failTag(seq)`: the same, then fails: the hub rolls it back, so its message must not arrive.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import threading
import time
from typing import Any

import koji
import koji.plugin
import psycopg2
from koji.context import context
from koji.xmlrpcplus import Fault, dumps, getparser

from devkit.recorded import first
from koji_messagebus import testing
from tests.support.hub import DBWrapper, dml, get_event

LEDGER_SCHEMA = """\
CREATE TABLE IF NOT EXISTS apache_ledger (seq INTEGER PRIMARY KEY, pid INTEGER NOT NULL,
                                          event_id INTEGER NOT NULL);
"""

_setup_lock = threading.Lock()
_setup: dict[str, Any] = {}
_db = threading.local()
_POST_TAG = first("postTag")


def _fire_tag(seq: int) -> None:
    kwargs = copy.deepcopy(_POST_TAG)
    kwargs["build"]["id"] = kwargs["build"]["build_id"] = seq
    dml("INSERT INTO apache_ledger (seq, pid, event_id) VALUES (%(seq)s, %(pid)s, %(event)s)",
        {"seq": seq, "pid": os.getpid(), "event": get_event()})
    koji.plugin.run_callbacks("postTag", **kwargs)


def tagBuild(seq: int) -> int:  # noqa: N802 - a hub method name
    _fire_tag(seq)
    return seq


def failTag(seq: int) -> int:  # noqa: N802 - a hub method name
    _fire_tag(seq)
    raise koji.GenericError(f"failTag {seq}: refused after its callback ran")


def slowTag(seq: int, seconds: float) -> int:  # noqa: N802 - a hub method name
    """A long hub call: its event is collected, then the call goes on (a slow query) before its COMMIT."""
    _fire_tag(seq)
    time.sleep(seconds)
    return seq


HANDLERS = {"tagBuild": tagBuild, "failTag": failTag, "slowTag": slowTag}


def _server_setup(environ: dict) -> None:
    """kojixmlrpc.server_setup: config, logging, plugins; once per process."""
    handler = logging.StreamHandler(sys.stderr)  # stderr is Apache's error log
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] p=%(process)s %(name)s: %(message)s"))
    logger = logging.getLogger("koji")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logging.getLogger("koji.plugin").setLevel(logging.INFO)
    cf = environ.get("koji.hub.ConfigFile", "/etc/koji-hub/hub.conf")
    config = koji.read_config_files([(cf, True)], raw=True)
    dsn = config.get("hub", "DBConnectionString")
    # the plugin reads its config at load time: where the hub's would be, or this instance's
    if environ.get("koji.messagebus.ConfigFile"):
        os.environ["KOJI_MESSAGEBUS_CONFIG"] = environ["koji.messagebus.ConfigFile"]
    plugin = koji.plugin.PluginTracker(path=[testing.PLUGIN_DIR]).load("messagebus")
    for value in vars(plugin).values():  # HandlerRegistry.register_plugin
        if isinstance(value, type) or not callable(value):
            continue
        for cbtype in getattr(value, "callbacks", None) or ():
            koji.plugin.register_callback(cbtype, value)
    # last, as kojixmlrpc clears `firstcall` only after server_setup returned: another thread that
    # saw _setup filled in earlier would run requests before the plugin's callbacks are registered
    _setup["dsn"] = dsn


def _connect() -> DBWrapper:
    """kojihub.db.connect: the thread's connection, reused; DBWrapper.close() ended the last
    transaction with a raw ROLLBACK that psycopg2 did not see, so reset its idea of it."""
    raw = getattr(_db, "raw", None)
    if raw is None or raw.closed:
        raw = _db.raw = psycopg2.connect(_setup["dsn"])
        raw.set_client_encoding("UTF8")
    else:
        raw.cursor().execute("BEGIN")
        raw.rollback()
    return DBWrapper(raw)


def _dispatch(method: str, params: tuple | list) -> Any:
    context.method = method
    context.params = params
    if method in ("multiCall", "system.multicall"):
        return _multicall(params[0])
    func = HANDLERS.get(method)
    if func is None:
        raise koji.GenericError(f"Invalid method: {method}")
    return func(*params)


def _multicall(calls: list[dict]) -> list[Any]:
    results: list[Any] = []
    for call in calls:
        dml("SAVEPOINT multiCall_loop")  # koji.db.Savepoint('multiCall_loop')
        try:
            # call['params'] as it is, an XML-RPC array (a list), as kojixmlrpc passes it
            results.append([_dispatch(call["methodName"], call["params"])])
        except Exception as exc:  # noqa: BLE001 - kojixmlrpc turns every exception into a fault
            dml("ROLLBACK TO SAVEPOINT multiCall_loop")
            results.append({"faultCode": getattr(exc, "faultCode", 1), "faultString": str(exc)})
        if hasattr(context, "event_id"):  # subsequent calls should not recycle event ids
            del context.event_id
    return results


def application(environ: dict, start_response) -> list[bytes]:
    """kojixmlrpc.application."""
    if not _setup:
        with _setup_lock:
            if not _setup:
                _server_setup(environ)
    if environ["REQUEST_METHOD"] != "POST":
        start_response("405 Method Not Allowed", [("Allow", "POST"), ("Content-Type", "text/plain")])
        return [b"This is an XML-RPC server. Only POST requests are accepted.\n"]
    context._threadclear()
    context.commit_pending = False
    context.environ = environ
    try:
        context.cnx = _connect()
        failed = False
        try:
            parser, unmarshaller = getparser()
            parser.feed(environ["wsgi.input"].read())
            parser.close()
            params, method = unmarshaller.close(), unmarshaller.getmethodname()
            response = dumps((_dispatch(method, params),), methodresponse=1)
        except Exception as exc:  # noqa: BLE001 - a fault to the client, as kojixmlrpc does
            failed = True
            response = dumps(Fault(getattr(exc, "faultCode", 1), str(exc)))
        body = response.encode()
        start_response("200 OK", [("Content-Length", str(len(body))), ("Content-Type", "text/xml")])
        if failed:
            context.cnx.rollback()
        elif context.commit_pending:
            koji.plugin.run_callbacks("preCommit")
            context.cnx.commit()
            koji.plugin.run_callbacks("postCommit")
    finally:
        if hasattr(context, "cnx"):
            try:
                context.cnx.close()
            except Exception:  # noqa: BLE001 - as kojixmlrpc
                pass
        context._threadclear()
    return [body]
