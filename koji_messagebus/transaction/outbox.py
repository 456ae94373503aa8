"""The transactional outbox's table and its store: messages stored in the hub's database inside
the hub's own transaction (`store_request`), one round trip, never aborting it.

SQL only, against any DB-API connection whose cursors take `execute(sql, dict)` with `%(name)s`
placeholders (koji's `context.cnx` wrapper, or psycopg2 for the command line); some calls send
several statements in one `execute` to save a round trip.  After the COMMIT the rows are sent
and retired by the delivery side (delivery/outbox_rows.py); `koji-messagebus outbox` administers
them (cli/outbox_admin.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from koji_messagebus.errors import OutboxError, first_line
from koji_messagebus.format.wire import Outgoing
from koji_messagebus.log import log
from koji_messagebus.transaction.subcalls import ABORTED, MARKS_NOW, execute_quietly, parse_marks

TABLE = "messagebus_outbox"
#: our savepoint in the hub's transaction; a name the hub never uses (a ROLLBACK TO it must never
#: reach a savepoint of the hub's)
SAVEPOINT = "koji_messagebus_store"
UNDEFINED_TABLE = "42P01"
INSUFFICIENT_PRIVILEGE = "42501"
IN_FAILED_TRANSACTION = "25P02"
#: lock_not_available (lock_timeout), query_canceled (statement_timeout): this request only
TIMEOUT_CODES = ("55P03", "57014")
#: the plugin's store in the hub's transaction waits at most this long for a lock (a migration or
#: a backup holding the table delays a hub request by this, never more) ...
LOCK_TIMEOUT_MS = 300
#: ... and runs at most this long in all (a lock wait is reported as such, before this) ...
STORE_TIMEOUT_MS = 500
#: ... plus this much per MB of payload (a 20 MB message takes PostgreSQL a while)
STORE_MS_PER_MB = 100
#: every statement after the hub's commit (deletes, the drain's row locks, expiry) waits at most this
#: long for a table lock and runs at most AFTER_STATEMENT_MS: a lock held on the table (a migration, a
#: backup) then costs a request or the drainer this, the rows simply stay (sent again later at worst)
AFTER_LOCK_TIMEOUT_MS = 300
AFTER_STATEMENT_MS = 5000


def is_timeout(exc: BaseException) -> bool:
    """A lock_timeout or statement_timeout of ours: the rows stay for later, nothing is broken."""
    return getattr(exc, "pgcode", None) in TIMEOUT_CODES


#: admin_shutdown (a restart, pg_terminate_backend), crash_shutdown, cannot_connect_now (starting up)
GONE_CODES = ("57P01", "57P02", "57P03")
#: libpq's words for a connection that broke or cannot be made (psycopg2 gives these no SQLSTATE)
GONE_TEXTS = ("server closed the connection", "ssl syscall error", "ssl connection has been closed",
              "terminating connection", "connection already closed", "could not receive data",
              "could not send data", "connection refused", "could not connect", "the database system is",
              "timeout expired", "no route to host", "connection reset", "connection timed out")


def is_connection_lost(exc: BaseException) -> bool:
    """The database connection is gone or cannot be made (a PostgreSQL restart, a cut, the server
    down): a connection-exception (08xxx) or shutdown (57P0x) SQLSTATE, or libpq's words for it
    without one ("server closed the connection unexpectedly", "SSL SYSCALL error: EOF detected",
    "Connection refused").  An error raised while handling one (`__context__`, e.g. hubconf's
    "cannot connect" raised `from None`) counts as it.  Nothing of ours is lost by it."""
    for err in (exc, exc.__context__):
        if err is None:
            continue
        code = getattr(err, "pgcode", None) or ""
        if code[:2] == "08" or code in GONE_CODES:
            return True
        text = str(err).lower()
        if not code and any(t in text for t in GONE_TEXTS):
            return True
    return False


SCHEMA = f"""\
-- koji-messagebus outbox: messages committed with the hub's transaction, sent after commit.
-- Idempotent: psql -f messagebus-schema.sql koji
CREATE TABLE IF NOT EXISTS {TABLE} (
    id BIGSERIAL PRIMARY KEY,
    msg_id TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    stored TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    msg_type TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    payload BYTEA NOT NULL,
    owner_pid INTEGER DEFAULT pg_backend_pid()
);
CREATE INDEX IF NOT EXISTS {TABLE}_stored ON {TABLE} (stored);
-- the storing connection's backend: a row whose backend is gone (its hub process died) is sent at
-- once by another process; rows stored before this column existed keep NULL (the age rule)
ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS owner_pid INTEGER;
ALTER TABLE {TABLE} ALTER COLUMN owner_pid SET DEFAULT pg_backend_pid();
-- [outbox] keep > 0: a sent row is marked sent (kept for `koji-messagebus replay`) instead of deleted,
-- and removed once older than keep; the partial index keeps the drain's look for unsent rows cheap
ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS sent_at TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS {TABLE}_unsent ON {TABLE} (id) WHERE sent_at IS NULL;
"""

#: exactly the privileges the plugin and `koji-messagebus outbox` need, for the hub's database user
#: (`{role}`) when another role owns the table: INSERT (store), SELECT + UPDATE (the row locks of
#: SELECT/DELETE ... FOR UPDATE SKIP LOCKED), DELETE (sent rows), USAGE on the id sequence (nextval).
#: The advisory lock function is executable by PUBLIC in every PostgreSQL.  Outside the `public`
#: schema the role also needs USAGE on that schema.
GRANTS = (f"GRANT SELECT, INSERT, UPDATE, DELETE ON {TABLE} TO {{role}};\n"
          f"GRANT USAGE ON SEQUENCE {TABLE}_id_seq TO {{role}};\n")


def grants(role: str = "koji") -> str:
    """The GRANT statements for the hub's database user `role`."""
    return GRANTS.format(role=role)


class OutboxUnavailable(OutboxError):
    """The outbox table is missing or cannot be written; the message says which.  `table_broken`
    is False when only this batch was refused (a data or constraint error, a time-out), True otherwise."""

    def __init__(self, message: str, table_broken: bool = True):
        super().__init__(message)
        self.table_broken = table_broken


def is_undefined_table(exc: BaseException) -> bool:
    return getattr(exc, "pgcode", None) == UNDEFINED_TABLE


def _batch_specific(exc: BaseException) -> bool:
    """SQLSTATE class 22 (data exception), 23 (integrity constraint) or a time-out: this batch, not the table."""
    code = getattr(exc, "pgcode", None) or ""
    return code[:2] in ("22", "23") or code in TIMEOUT_CODES


def _text(value: object) -> str:
    """A text column's value that PostgreSQL always takes (no NUL, no lone surrogate): the text
    columns are informational, the payload is what is sent."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:  # noqa: BLE001 - a hostile __str__: the column only informs
        text = "?"
    if text.isascii() and "\x00" not in text:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _float(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return number if number == number and abs(number) != float("inf") else 0.0


@dataclass
class Stored:
    """What `store_request` did.  `ids`: the new rows (None: nothing stored, send directly);
    `survivors`: the sub-call marks still set in the hub's transaction (None: the transaction is
    aborted, the hub's COMMIT will roll back); `problem`: why nothing was stored; `back_off`: the
    table is missing or not writable (stop trying for a while); `backend`: the database backend
    that stored the rows (their owner_pid), so that the process can claim it while it holds them
    (drainer.py)."""

    ids: list[int] | None
    survivors: frozenset[str] | None
    problem: str | None = None
    back_off: bool = False
    #: the kind of problem, for `log_cause` (one line a minute per kind): outbox-locked, outbox-slow,
    #: outbox-missing, outbox-denied or outbox-store (the rest)
    cause: str = "outbox-store"
    backend: int | None = None


def _store_sql(count: int) -> str:
    rows = ", ".join(f"(%(m{i})s, %(i{i})s, %(c{i})s, %(t{i})s, %(k{i})s, %(p{i})s::bytea)" for i in range(count))
    restore = "current_setting('koji_messagebus.restore')"
    # One round trip, all inside our savepoint: save the hub's time-outs and set short ones, insert
    # the rows whose sub-call survived (their mark is still set, see subcalls.py), restore the
    # time-outs, release, and return the new ids and the surviving marks.
    return (
        f"SAVEPOINT {SAVEPOINT}; "
        "SELECT set_config('koji_messagebus.restore', "
        "current_setting('lock_timeout') || '|' || current_setting('statement_timeout'), true); "
        "SELECT set_config('lock_timeout', %(lock_timeout)s, true), "
        "set_config('statement_timeout', %(statement_timeout)s, true); "
        f"WITH ins AS (INSERT INTO {TABLE} (msg_id, created, msg_type, routing_key, payload) "
        "SELECT v.i, v.c, v.t, v.k, v.p FROM (VALUES " + rows + ") AS v(m, i, c, t, k, p) "
        f"WHERE v.m IS NULL OR v.m = ANY(string_to_array({MARKS_NOW}, ',')) RETURNING id) "
        "SELECT set_config('koji_messagebus.ids', coalesce(string_agg(id::text, ','), ''), true) FROM ins; "
        f"SELECT set_config('lock_timeout', split_part({restore}, '|', 1), true), "
        f"set_config('statement_timeout', split_part({restore}, '|', 2), true); "
        f"RELEASE SAVEPOINT {SAVEPOINT}; "
        f"SELECT current_setting('koji_messagebus.ids'), {MARKS_NOW}, pg_backend_pid()"
    )


def store_request(cnx: Any, messages: list[Outgoing], marks: list[str | None] | None = None,
                  timeout_ms: int = STORE_TIMEOUT_MS) -> Stored:
    """Insert a request's messages inside the hub's open transaction; never raises, never leaves the
    hub's transaction aborted or changed (on any failure our savepoint is rolled back, which also
    restores the time-outs).  `marks[i]` is message i's sub-call mark (None: no check); a message
    whose mark the hub rolled back is not stored."""
    marks = list(marks or []) + [None] * (len(messages) - len(marks or []))
    rows = [(mark, msg) for mark, msg in zip(marks, messages) if mark != ABORTED]
    size_mb = sum(len(msg.payload) for _, msg in rows) / 1e6
    params: dict[str, Any] = {"lock_timeout": f"{int(min(LOCK_TIMEOUT_MS, timeout_ms))}ms",
                              "statement_timeout": f"{int(timeout_ms + STORE_MS_PER_MB * size_mb)}ms"}
    for i, (mark, msg) in enumerate(rows):
        params.update({f"m{i}": mark, f"i{i}": _text(msg.msg_id), f"c{i}": _float(msg.created),
                       f"t{i}": _text(msg.type), f"k{i}": _text(msg.routing_key), f"p{i}": bytes(msg.payload)})
    cur = cnx.cursor()
    if not rows:
        return Stored([], survivors(cur))
    try:
        execute_quietly(cur, _store_sql(len(rows)), params)
        ids_text, marks_text, backend = cur.fetchone()
    except Exception as exc:  # noqa: BLE001 - every failure is classified below
        return _store_failed(cur, exc)
    ids = [int(x) for x in ids_text.split(",") if x] if ids_text else []
    return Stored(ids, parse_marks(marks_text), backend=int(backend))


def _store_failed(cur: Any, exc: Exception) -> Stored:
    code = getattr(exc, "pgcode", None)
    first = first_line(exc)  # not DETAIL: the row's bytes
    if code == IN_FAILED_TRANSACTION:
        # our SAVEPOINT was refused: the hub's transaction was aborted before we came; its COMMIT rolls back
        return Stored(None, None, "the hub's transaction is already aborted")
    if code is None:
        # a client-side error (nothing was sent) or a lost connection (the hub's COMMIT fails too)
        return Stored(None, survivors(cur), f"cannot write to outbox table {TABLE}: {first}")
    try:  # the savepoint exists (only an aborted transaction refuses it, see above): back to it
        execute_quietly(cur, f"ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}; "
                        f"SELECT {MARKS_NOW}", {})
        alive = parse_marks(cur.fetchone()[0])
    except Exception:  # noqa: BLE001 - the connection is gone: the hub's COMMIT fails as well
        log.debug("rollback to savepoint failed", exc_info=True)
        return Stored(None, None, f"cannot write to outbox table {TABLE}: {first}")
    if code == UNDEFINED_TABLE:
        return Stored(None, alive, f"outbox table {TABLE} does not exist; create it with `koji-messagebus outbox "
                      "init`", back_off=True, cause="outbox-missing")
    if code == INSUFFICIENT_PRIVILEGE:
        return Stored(None, alive, f"cannot write to outbox table {TABLE}: {first}; the hub's database "
                      f"user needs: {' '.join(grants('<hub db user>').split())}", back_off=True, cause="outbox-denied")
    if code == "55P03":
        return Stored(None, alive, f"the outbox table {TABLE} is locked (by a migration, a backup or a LOCK TABLE; "
                      f"the insert waited lock_timeout {LOCK_TIMEOUT_MS} ms)", cause="outbox-locked")
    if code in TIMEOUT_CODES:
        return Stored(None, alive, f"the insert into outbox table {TABLE} took too long (statement_timeout "
                      f"{STORE_TIMEOUT_MS} ms + {STORE_MS_PER_MB} ms/MB: {first})", cause="outbox-slow")
    return Stored(None, alive, f"cannot write to outbox table {TABLE}: {first}",
                  back_off=not _batch_specific(exc))


def survivors(cur: Any) -> frozenset[str] | None:
    """The sub-call marks still set in the hub's transaction; None when it is aborted (or gone)."""
    try:
        execute_quietly(cur, f"SELECT {MARKS_NOW}", {})
        return parse_marks(cur.fetchone()[0])
    except Exception:  # noqa: BLE001 - a plain SELECT fails only in an aborted transaction
        return None


def store(cnx: Any, messages: list[Outgoing]) -> list[int]:
    """Insert messages (no sub-call check) inside the open transaction; returns the new row ids or
    raises OutboxUnavailable (the transaction is left as it was)."""
    result = store_request(cnx, messages)
    if result.ids is None:
        raise OutboxUnavailable(result.problem or "not stored", table_broken=result.back_off)
    return result.ids
