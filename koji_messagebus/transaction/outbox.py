"""The transactional outbox: messages stored in the hub's database, sent after commit.

SQL only, against any DB-API connection whose cursors take `execute(sql, dict)` with
`%(name)s` placeholders (koji's `context.cnx` wrapper, or psycopg2 for the command line).
Some calls send two statements in one `execute` to save a round trip (psycopg2 allows it and
returns the last statement's rows).

A request stores its messages (`store_request`) in the hub's transaction; after its commit the
process's sender sends them from memory and the settled rows are deleted in batches (`delete`);
`drain` (advisory lock, oldest first, in batches) takes whatever else is left: run by the
process's drainer and by `koji-messagebus outbox flush`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from koji_messagebus.errors import OutboxError, first_line
from koji_messagebus.format.wire import Outgoing
from koji_messagebus.log import log
from koji_messagebus.transaction.subcalls import ABORTED, MARKS_NOW, execute_quietly, parse_marks

TABLE = "messagebus_outbox"
#: pg advisory lock key: only one process drains the backlog at a time ('kojimbus'); combined (XOR)
#: with the table's oid, so that outbox tables in other schemas of the database are drained independently
DRAIN_LOCK = 0x6B6F6A696D627573
#: pg advisory lock key of the elected drainer ('kojimbul'), held at session level by the one hub process
#: that looks for rows left to the drain (drainer.py); combined with the table's oid as DRAIN_LOCK is
LEAD_LOCK = 0x6B6F6A696D62756C
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
#: prefixed to the first statement of each transaction after commit (SET LOCAL: this transaction only)
AFTER_COMMIT = (f"SET LOCAL synchronous_commit TO off; SET LOCAL lock_timeout = '{AFTER_LOCK_TIMEOUT_MS}ms'; "
                f"SET LOCAL statement_timeout = '{AFTER_STATEMENT_MS}ms'; ")


def is_timeout(exc: BaseException) -> bool:
    """A lock_timeout or statement_timeout of ours: the rows stay for later, nothing is broken."""
    return getattr(exc, "pgcode", None) in TIMEOUT_CODES

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

#: true when the outbox table has the owner_pid column (tables made before it: `outbox init` adds it)
_HAS_OWNER = (f"EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{TABLE}'::regclass "
              "AND attname = 'owner_pid' AND NOT attisdropped)")
#: a row whose storing backend is gone: no process is sending it any more (pg_stat_activity lists
#: every backend's pid to every role, no grant needed); NULL (an old row) is not "gone"
_OWNER_GONE = "(owner_pid IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = owner_pid))"
_said_no_owner = False
#: true when the outbox table has the sent_at column ([outbox] keep; `outbox init` adds it)
_HAS_SENT = (f"EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{TABLE}'::regclass "
             "AND attname = 'sent_at' AND NOT attisdropped)")
#: rows older than keep that were sent, removed by the drain this many at a time
KEPT_BATCH = 5000

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
    table is missing or not writable (stop trying for a while)."""

    ids: list[int] | None
    survivors: frozenset[str] | None
    problem: str | None = None
    back_off: bool = False


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
        f"SELECT current_setting('koji_messagebus.ids'), {MARKS_NOW}"
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
        ids_text, marks_text = cur.fetchone()
    except Exception as exc:  # noqa: BLE001 - every failure is classified below
        return _store_failed(cur, exc)
    ids = [int(x) for x in ids_text.split(",") if x] if ids_text else []
    return Stored(ids, parse_marks(marks_text))


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
                      "init`", back_off=True)
    if code == INSUFFICIENT_PRIVILEGE:
        return Stored(None, alive, f"cannot write to outbox table {TABLE}: {first}; the hub's database "
                      f"user needs: {' '.join(grants('<hub db user>').split())}", back_off=True)
    if code in TIMEOUT_CODES:
        what = "is locked" if code == "55P03" else "took too long"
        return Stored(None, alive, f"the insert into outbox table {TABLE} {what} (lock_timeout {LOCK_TIMEOUT_MS} ms, "
                      f"statement_timeout {STORE_TIMEOUT_MS} ms + {STORE_MS_PER_MB} ms/MB: {first})")
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


@dataclass
class DrainResult:
    sent: int = 0
    lost: int = 0
    left: bool = False
    expired: int = 0
    locked_out: bool = False
    removed: int = 0  # sent rows older than keep, removed


def try_lead(cnx: Any) -> bool:
    """Try to become the outbox's elected drainer: a session advisory lock, held until this
    connection closes (PostgreSQL frees it when the process dies).  True when this connection holds it."""
    cur = cnx.cursor()
    cur.execute(f"SELECT pg_try_advisory_lock(%(key)s::bigint # '{TABLE}'::regclass::oid::bigint)",
                {"key": LEAD_LOCK})
    (won,) = cur.fetchone()
    cnx.commit()
    return bool(won)


def _rows_to_messages(rows: Iterable[tuple]) -> dict[int, Outgoing]:
    return {row[0]: Outgoing(row[1], row[2], row[3], row[4], bytes(row[5])) for row in rows}


def _select(cur, where: str, params: dict, limit: int, prefix: str = "") -> dict[int, Outgoing]:
    cur.execute(prefix + f"SELECT id, msg_id, created, msg_type, routing_key, payload FROM {TABLE} WHERE {where} "
                f"ORDER BY id LIMIT {int(limit)} FOR UPDATE SKIP LOCKED", params)
    return _rows_to_messages(cur.fetchall())


def _delete(cur, ids: list[int], keep: float = 0.0) -> None:
    if ids:
        # a tuple, not a list: koji's cursor turns lists into tuples, psycopg2 renders (1, 2, 3)
        cur.execute(_done_sql(keep), {"ids": tuple(ids)})


def _done_sql(keep: float) -> str:
    """The statement that retires sent rows `%(ids)s`: deleted, or with `keep` marked sent."""
    if keep > 0:
        return f"UPDATE {TABLE} SET sent_at = clock_timestamp() WHERE id IN %(ids)s AND sent_at IS NULL"
    return f"DELETE FROM {TABLE} WHERE id IN %(ids)s"


def delete(cnx, ids: list[int], keep: float = 0.0) -> int:
    """Delete settled rows (the sender's batched deletes; with `keep`, mark them sent) in a
    transaction of their own, without waiting for the WAL flush: a delete lost in a database crash
    means a resend, which at-least-once allows.  Returns how many rows went."""
    if not ids:
        return 0
    cur = cnx.cursor()
    cur.execute(AFTER_COMMIT + _done_sql(keep), {"ids": tuple(int(i) for i in ids)})
    count = cur.rowcount or 0
    cnx.commit()
    return count


def expire(cur, max_age: float, has_sent: bool = False) -> int:
    """Drop unsent rows older than max_age seconds; return how many."""
    cur.execute(f"DELETE FROM {TABLE} WHERE stored < clock_timestamp() - %(age)s * interval '1 second'"
                + (" AND sent_at IS NULL" if has_sent else ""), {"age": float(max_age)})
    return cur.rowcount or 0


def remove_kept(cur, keep: float, limit: int = KEPT_BATCH) -> int:
    """Remove up to `limit` sent rows stored more than `keep` seconds ago (keep 0: every sent row,
    after keep was turned off); returns how many."""
    cur.execute(f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} WHERE sent_at IS NOT NULL AND "
                f"stored < clock_timestamp() - %(keep)s * interval '1 second' LIMIT {int(limit)})",
                {"keep": float(keep)})
    return cur.rowcount or 0


class Sent(Protocol):
    """A send's outcome (publisher.SendResult): `split()` gives (done, unsent), `lost` the refused."""

    lost: list[tuple[Outgoing, str]]

    def split(self) -> tuple[list[Outgoing], list[Outgoing]]: ...


#: sends a batch and tells what it did
SendFn = Callable[[list[Outgoing]], Sent]


def drain(cnx, send: SendFn, batch_size: int, own_ids: list[int] | None = None,
          max_age: float | None = None, max_batches: int = 1, min_age: float = 0.0,
          keep: float = 0.0) -> DrainResult:
    """Send what the outbox holds, oldest first, in its own transaction(s) on `cnx`.

    With the advisory lock (one drainer per outbox table) the oldest rows are sent; without it only
    `own_ids` (this request's rows).  Rows are locked FOR UPDATE SKIP LOCKED, so two drainers
    never send the same row; `min_age` leaves younger rows to the process that stored them (its
    sender sends them without a row lock, see drainer.py), unless that process's database backend
    is gone (`owner_pid` not in pg_stat_activity: the process died), whatever their age.
    `send(batch)` returns (done, failed): done rows (accepted or finally refused) are deleted;
    failed ones stay for later.  Commits after each batch.  `lost` counts the rows the broker refused for good.
    With `keep` (and the sent_at column) sent rows are marked, not deleted, and the drain removes a
    batch of those older than `keep` each time.
    """
    aged = "stored < clock_timestamp() - %(min_age)s * interval '1 second'"
    params: dict[str, Any] = {"min_age": float(min_age)}
    result = DrainResult()
    cur = cnx.cursor()
    for _ in range(max_batches):
        cur.execute(AFTER_COMMIT + f"SELECT pg_try_advisory_xact_lock(%(key)s::bigint # "
                    f"'{TABLE}'::regclass::oid::bigint), {_HAS_OWNER}, {_HAS_SENT}", {"key": DRAIN_LOCK})
        locked, has_owner, has_sent = cur.fetchone()
        unsent = " AND sent_at IS NULL" if has_sent else ""
        if keep > 0 and not has_sent:
            raise OutboxUnavailable(f"[outbox] keep = {keep:g} needs the sent_at column of {TABLE}: run "
                                    "`koji-messagebus outbox init`")
        if locked:
            if max_age is not None:
                result.expired += expire(cur, max_age, bool(has_sent))
            if has_sent:
                result.removed += remove_kept(cur, keep)
            batch = _select(cur, _drainable(min_age, bool(has_owner), aged) + unsent, params, batch_size)
        elif own_ids:
            result.locked_out = True
            batch = _select(cur, "id IN %(ids)s" + unsent, {"ids": tuple(own_ids)}, batch_size)
        else:
            result.locked_out = True
            cnx.rollback()
            return result
        if not batch:
            cnx.commit()
            return result
        if _send_and_delete(cnx, cur, batch, send, result, keep):
            result.left = True
            return result
        if not locked or len(batch) < batch_size:
            return result
    result.left = True
    return result


def _drainable(min_age: float, has_owner: bool, aged: str) -> str:
    """The drain's WHERE: every row (min_age 0), else rows older than min_age and, when the table
    records owners, rows whose owner's backend is gone (a dead hub process) at any age."""
    global _said_no_owner
    if min_age <= 0:
        return "TRUE"
    if has_owner:
        return f"({aged} OR {_OWNER_GONE})"
    if not _said_no_owner:
        _said_no_owner = True
        log.info("outbox table %s has no owner_pid column: rows of a dead hub process wait until they are "
                 "%gs old; `koji-messagebus outbox init` adds the column", TABLE, min_age)
    return aged


def drain_ids(cnx, ids: list[int], send: SendFn, keep: float = 0.0) -> DrainResult:
    """Send the given rows (a process's own, given up by its sender) under row locks: FOR UPDATE
    SKIP LOCKED, so a row another drainer holds is left to it; sent rows deleted; one commit."""
    result = DrainResult()
    if not ids:
        return result
    cur = cnx.cursor()
    where = "id IN %(ids)s" + (" AND sent_at IS NULL" if keep > 0 else "")
    batch = _select(cur, where, {"ids": tuple(ids)}, len(ids), prefix=AFTER_COMMIT)
    if not batch:
        cnx.commit()
        return result
    result.left = _send_and_delete(cnx, cur, batch, send, result, keep)
    return result


def _send_and_delete(cnx, cur, batch: dict[int, Outgoing], send: SendFn, result: DrainResult,
                     keep: float = 0.0) -> bool:
    """Send the locked rows of `batch`, delete the done ones (accepted or finally refused) and
    commit; count them in `result`.  True if some failed (they stay for later)."""
    outcome = send(list(batch.values()))
    done, failed = outcome.split()
    done_ids = {m.msg_id for m in done}
    _delete(cur, [rid for rid, m in batch.items() if m.msg_id in done_ids], keep)
    cnx.commit()
    result.sent += len(done)
    result.lost += len(outcome.lost)
    return bool(failed)


def status(cnx) -> tuple[int, float | None]:
    """(rows waiting to be sent, age in seconds of the oldest of them or None)."""
    rows, age, _kept = status_kept(cnx)
    return rows, age


def has_sent_column(cnx) -> bool:
    """Whether the table has the sent_at column [outbox] keep needs (`outbox init` adds it)."""
    cur = cnx.cursor()
    cur.execute(f"SELECT {_HAS_SENT}", {})
    found = bool(cur.fetchone()[0])
    cnx.rollback()
    return found


def status_kept(cnx) -> tuple[int, float | None, float | None]:
    """(unsent rows, age of the oldest unsent or None, age of the oldest sent row kept for replay or None)."""
    has_sent = has_sent_column(cnx)
    cur = cnx.cursor()
    # only the unsent rows are counted (the partial index); kept rows may be millions
    cur.execute(f"SELECT count(*), extract(epoch FROM clock_timestamp() - min(stored)) FROM {TABLE}"
                + (" WHERE sent_at IS NULL" if has_sent else ""), {})
    count, age = cur.fetchone()
    kept = None
    if has_sent:
        cur.execute(f"SELECT extract(epoch FROM clock_timestamp() - min(stored)) FROM {TABLE} "
                    "WHERE sent_at IS NOT NULL", {})
        kept = cur.fetchone()[0]
    cnx.rollback()
    return int(count), (float(age) if age is not None else None), (float(kept) if kept is not None else None)


def purge(cnx, older_than: float) -> int:
    """Delete rows older than `older_than` seconds; return how many."""
    cur = cnx.cursor()
    n = expire(cur, older_than)
    cnx.commit()
    return n


#: (what, SQL returning one boolean) for each privilege the plugin uses, tested as the connected user
_PRIVILEGES = (
    ("INSERT on the table (store)", f"has_table_privilege('{TABLE}', 'INSERT')"),
    ("SELECT on the table (send, drain, status)", f"has_table_privilege('{TABLE}', 'SELECT')"),
    ("UPDATE on the table (the row locks of FOR UPDATE SKIP LOCKED)", f"has_table_privilege('{TABLE}', 'UPDATE')"),
    ("DELETE on the table (sent and expired rows)", f"has_table_privilege('{TABLE}', 'DELETE')"),
    (f"USAGE on the sequence {TABLE}_id_seq (new row ids)",
     f"has_sequence_privilege(pg_get_serial_sequence('{TABLE}', 'id'), 'USAGE')"),
    ("EXECUTE on pg_try_advisory_xact_lock(bigint) (one drainer at a time)",
     "has_function_privilege('pg_try_advisory_xact_lock(bigint)', 'EXECUTE')"),
)


def check_privileges(cnx: Any) -> list[str]:
    """The privileges the plugin needs on the outbox that the connected user lacks (empty: all
    there), without changing any data: the has_*_privilege functions, then the statements that
    need them, with nothing to act on (LIMIT 0, no row), in a transaction rolled back at the end.
    A missing table raises (pgcode 42P01) as every other outbox call does."""
    cur = cnx.cursor()
    missing: list[str] = []
    try:
        cur.execute("SELECT " + ", ".join(sql for _, sql in _PRIVILEGES), {})
        flags = cur.fetchone()
        missing = [what for (what, _), ok in zip(_PRIVILEGES, flags) if not ok]
        if not missing:  # what the checks above cannot see (a row-level policy, a column grant)
            for statement in (f"SELECT id FROM {TABLE} LIMIT 0 FOR UPDATE SKIP LOCKED",
                              f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} WHERE FALSE "
                              "FOR UPDATE SKIP LOCKED)",
                              f"SELECT pg_try_advisory_xact_lock(%(key)s::bigint # '{TABLE}'::regclass::oid::bigint)"):
                cur.execute("SAVEPOINT koji_messagebus_check", {})
                try:
                    cur.execute(statement, {"key": DRAIN_LOCK})
                except Exception as exc:  # noqa: BLE001 - reported
                    cur.execute("ROLLBACK TO SAVEPOINT koji_messagebus_check", {})
                    missing.append(f"{statement.split()[0]} refused: {first_line(exc)}")
    finally:
        cnx.rollback()
    return missing
