"""Which of a request's sub-calls the hub kept: a message is published iff its change committed.

Koji's multiCall runs each sub-call after `SAVEPOINT multiCall_loop` and, on a fault, runs
`ROLLBACK TO SAVEPOINT multiCall_loop` and goes on; the request still commits, and no callback
says that a sub-call failed.  So the first time a sub-call fires an event, the plugin marks it
inside the hub's transaction, in a transaction-local setting (`set_config(..., true)`):
PostgreSQL reverts a setting changed after a savepoint when the transaction rolls back to that
savepoint, exactly like the sub-call's rows.  At preCommit the marks still set are the sub-calls
that survived (no table, no lock, no WAL; nothing that can fail on data).

Only a multicall's sub-calls are marked: kojixmlrpc's multiCall is the only caller that rolls
back to a savepoint, and a request outside one pays no round trip for the marks (`in_multicall`).
Its aborted transaction is told from the client library's own state (`aborted`), no round trip.

One mark per sub-call: should a sub-call itself roll back to an inner savepoint of its own that
precedes its first event, and then go on and succeed, its later messages would be dropped with
the rest (kojihub's calls use no inner savepoints; only multiCall does).

The mark runs under its own savepoint, released at once: if the statement fails (a cancel, a
tiny statement_timeout) the hub's transaction is rolled back to it, unharmed; if the hub's
transaction is already aborted, the SAVEPOINT itself is refused and nothing changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from koji_messagebus.errors import first_line
from koji_messagebus.log import log, log_cause

GUC = "koji_messagebus.marks"
#: the marks set now in the hub's transaction (NULL or '' before the first)
MARKS_NOW = f"current_setting('{GUC}', true)"
_SAVEPOINT = "koji_messagebus_mark"
MARK_SQL = (f"SAVEPOINT {_SAVEPOINT}; SELECT set_config('{GUC}', coalesce({MARKS_NOW}, '') || ',' || %(mark)s, true); "
            f"RELEASE SAVEPOINT {_SAVEPOINT}")
_UNDO_SQL = f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}; RELEASE SAVEPOINT {_SAVEPOINT}"
IN_FAILED_TRANSACTION = "25P02"
#: a message's mark when its event fired in an aborted transaction: its change cannot have committed
#: unless the hub rolled back past it, so it is not published
ABORTED = ""
_NO_SUBCALL = object()


#: psycopg2.extensions.TRANSACTION_STATUS_INERROR (libpq's PQTRANS_INERROR)
_STATUS_INERROR = 3


def in_multicall(params: Any) -> bool:
    """Whether an event comes from a multicall's sub-call, told from koji's `context.params`: a
    request's own params are the XML-RPC unmarshaller's tuple; kojixmlrpc's multiCall dispatches
    each sub-call with `call['params']`, an XML-RPC array, a list.  Anything else (no params at
    all): treated as a sub-call, marked."""
    return not isinstance(params, tuple)


def aborted(cnx: Any) -> bool:
    """Whether the hub's transaction is aborted (its COMMIT rolls back), from the connection's own
    state (psycopg2's get_transaction_status, through koji's DBWrapper): no round trip.  False
    when the connection cannot say."""
    try:
        return bool(cnx.get_transaction_status() == _STATUS_INERROR)
    except Exception:  # noqa: BLE001 - not psycopg2: unknown, as before the marks
        return False


def parse_marks(text: str | None) -> frozenset[str]:
    return frozenset(part for part in (text or "").split(",") if part)


@dataclass
class SubcallMarks:
    """The marks of one request: `of[i]` is message i's mark (None: not checked, always published)."""

    of: list[str | None] = field(default_factory=list)
    _subcall: Any = _NO_SUBCALL
    _method: Any = None
    _mark: str | None = None
    _count: int = 0

    def add(self, cnx: Any, method: Any, params: Any) -> None:
        """Record the mark of the message just collected; mark its sub-call on its first event.
        A new sub-call is a new `context.params` object (kojixmlrpc's _dispatch sets it per call);
        outside a multicall nothing is marked (`in_multicall`)."""
        if params is not self._subcall or method != self._method or self._mark is None:
            self._subcall, self._method = params, method
            self._mark = self._set(cnx) if cnx is not None and in_multicall(params) else None
        self.of.append(self._mark)
        if self._mark == ABORTED:
            self._mark = None  # try again at this sub-call's next event

    def _set(self, cnx: Any) -> str | None:
        self._count += 1
        mark = str(self._count)
        cur = None
        try:
            cur = cnx.cursor()
            execute_quietly(cur, MARK_SQL, {"mark": mark})
            return mark
        except Exception as exc:  # noqa: BLE001 - classified; never raised into the hub
            if getattr(exc, "pgcode", None) == IN_FAILED_TRANSACTION:
                return ABORTED  # the SAVEPOINT was refused: nothing changed
            if getattr(exc, "pgcode", None) is not None and cur is not None:
                try:
                    execute_quietly(cur, _UNDO_SQL, {})
                except Exception:  # noqa: BLE001 - the connection is gone; the hub's COMMIT fails too
                    log.debug("undoing a sub-call mark failed", exc_info=True)
            log_cause("subcall-mark", logging.WARNING, "could not mark the sub-call (%s); its messages are "
                      "published unchecked", first_line(exc), counted="sub-call(s) not marked")
            return None

    def checked(self) -> bool:
        return any(mark is not None for mark in self.of)


def split(messages: list[Any], marks: list[str | None], alive: frozenset[str] | None) -> tuple[list[Any], list[Any]]:
    """(kept, dropped): a message is kept if it was not checked or its sub-call's mark is alive;
    `alive` None (the hub's transaction is aborted, its COMMIT rolls back) drops every message."""
    if alive is None:
        return [], list(messages)
    kept: list[Any] = []
    dropped: list[Any] = []
    for i, msg in enumerate(messages):
        mark = marks[i] if i < len(marks) else None
        (kept if mark is None or mark in alive else dropped).append(msg)
    return kept, dropped


def execute_quietly(cur: Any, sql: str, params: dict[str, Any]) -> None:
    """cur.execute without kojihub's CursorWrapper logging an expected failure at ERROR."""
    try:
        import psycopg2.extensions
        raw = isinstance(cur, psycopg2.extensions.cursor)
    except ImportError:  # pragma: no cover - koji's hub runs on psycopg2
        raw = True
    if raw:
        cur.execute(sql, params)
        return
    try:
        cur.execute(sql, params, log_errors=False)
    except TypeError as exc:  # a cursor without kojihub's log_errors: refused before sending anything
        if "log_errors" not in str(exc):
            raise
        cur.execute(sql, params)


def rollback_quietly(cnx: Any) -> None:
    """Roll back after a failed statement; a connection too broken for that is the caller's next error."""
    try:
        cnx.rollback()
    except Exception:  # noqa: BLE001 - nothing more to do
        log.debug("rollback failed", exc_info=True)
