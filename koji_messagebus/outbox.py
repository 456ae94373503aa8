"""The transactional outbox: messages stored in the hub's database, sent after commit.

SQL only, against any DB-API connection whose cursors take `execute(sql, dict)` with
`%(name)s` placeholders (koji's `context.cnx` wrapper, or psycopg2 for the command line).
Some calls send two statements in one `execute` to save a round trip (psycopg2 allows it and
returns the last statement's rows).

A request stores its messages (`store`) and, after its commit, sends just those rows
(`send_own`); `drain` (advisory lock, oldest first, in batches) takes whatever else is left: run
by a request now and then and after failures, and by `koji-messagebus outbox flush`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .wire import Outgoing

log = logging.getLogger("koji.plugin.messagebus")

TABLE = "messagebus_outbox"
#: pg advisory lock key: only one process drains the backlog at a time ('kojimbus'); combined (XOR)
#: with the table's oid, so that outbox tables in other schemas of the database are drained independently
DRAIN_LOCK = 0x6B6F6A696D627573
SAVEPOINT = "messagebus_outbox"
UNDEFINED_TABLE = "42P01"

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
    payload BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS {TABLE}_stored ON {TABLE} (stored);
"""


class OutboxUnavailable(Exception):
    """The outbox table is missing or cannot be written; the message says which.  `table_broken`
    is False when only this batch was refused (a data or constraint error), True otherwise."""

    def __init__(self, message: str, table_broken: bool = True):
        super().__init__(message)
        self.table_broken = table_broken


def is_undefined_table(exc: BaseException) -> bool:
    return getattr(exc, "pgcode", None) == UNDEFINED_TABLE


def _batch_specific(exc: BaseException) -> bool:
    """SQLSTATE class 22 (data exception) or 23 (integrity constraint): this batch, not the table."""
    code = getattr(exc, "pgcode", None) or ""
    return code[:2] in ("22", "23")


def store(cnx, messages: list[Outgoing]) -> list[int]:
    """Insert the request's messages inside the hub's open transaction, under a SAVEPOINT:
    a failure rolls back to the savepoint (the hub's own changes stay) and raises
    OutboxUnavailable.  Returns the new row ids."""
    cur = cnx.cursor()
    params: dict[str, object] = {}
    rows = []
    for i, msg in enumerate(messages):
        rows.append(f"(%(i{i})s, %(c{i})s, %(t{i})s, %(k{i})s, %(p{i})s)")
        params.update({f"i{i}": msg.msg_id, f"c{i}": msg.created, f"t{i}": msg.type,
                       f"k{i}": msg.routing_key, f"p{i}": msg.payload})
    try:
        # one round trip: the savepoint and the insert (psycopg2 returns the last statement's rows)
        cur.execute(f"SAVEPOINT {SAVEPOINT}; INSERT INTO {TABLE} (msg_id, created, msg_type, routing_key, payload) "
                    "VALUES " + ", ".join(rows) + " RETURNING id", params)
        ids = [row[0] for row in cur.fetchall()]
    except Exception as exc:
        cur.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}", {})
        cur.execute(f"RELEASE SAVEPOINT {SAVEPOINT}", {})
        if is_undefined_table(exc):
            raise OutboxUnavailable(f"outbox table {TABLE} does not exist; create it with "
                                    "psql -f conf/messagebus-schema.sql (sending directly meanwhile)") from None
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # not DETAIL: the row's bytes
        raise OutboxUnavailable(f"cannot write to outbox table {TABLE}: {first_line}",
                                table_broken=not _batch_specific(exc)) from None
    cur.execute(f"RELEASE SAVEPOINT {SAVEPOINT}", {})
    return ids


@dataclass
class DrainResult:
    sent: int = 0
    lost: int = 0
    left: bool = False
    expired: int = 0
    locked_out: bool = False


def _rows_to_messages(rows: Iterable[tuple]) -> dict[int, Outgoing]:
    return {row[0]: Outgoing(row[1], row[2], row[3], row[4], bytes(row[5])) for row in rows}


def _select(cur, where: str, params: dict, limit: int) -> dict[int, Outgoing]:
    cur.execute(f"SELECT id, msg_id, created, msg_type, routing_key, payload FROM {TABLE} WHERE {where} "
                f"ORDER BY id LIMIT {int(limit)} FOR UPDATE SKIP LOCKED", params)
    return _rows_to_messages(cur.fetchall())


def _delete(cur, ids: list[int]) -> None:
    if ids:
        # a tuple, not a list: koji's cursor turns lists into tuples, psycopg2 renders (1, 2, 3)
        cur.execute(f"DELETE FROM {TABLE} WHERE id IN %(ids)s", {"ids": tuple(ids)})


def expire(cur, max_age: float) -> int:
    """Drop rows older than max_age seconds; return how many."""
    cur.execute(f"DELETE FROM {TABLE} WHERE stored < clock_timestamp() - %(age)s * interval '1 second'",
                {"age": float(max_age)})
    return cur.rowcount or 0


SendFn = Callable[[list[Outgoing]], tuple[list[Outgoing], list[Outgoing]]]


#: delete the given rows unless another transaction holds them; returns (id, msg_id) of those deleted
_TAKE_ROWS = (f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} WHERE id IN %(ids)s FOR UPDATE SKIP LOCKED) "
              "RETURNING id, msg_id")


def send_own(cnx, ids: list[int], messages: list[Outgoing], send: SendFn) -> DrainResult:
    """Send a request's own rows right after its commit (the steady state), in two round trips.

    One statement locks and deletes the rows (FOR UPDATE SKIP LOCKED: a row another drainer holds
    is left to it); the request's `messages` (still in memory) are sent; COMMIT once the broker has
    settled them.  If some were not sent, ROLLBACK brings every row back and the settled ones are
    deleted again, so only the unsent rows stay for a later drain.  The commit does not wait for
    the WAL flush: a delete lost in a database crash means a resend, which at-least-once allows.
    """
    result = DrainResult()
    cur = cnx.cursor()
    cur.execute("SET LOCAL synchronous_commit TO off; " + _TAKE_ROWS, {"ids": tuple(ids)})
    taken = {msg_id: row_id for row_id, msg_id in cur.fetchall()}
    batch = [m for m in messages if m.msg_id in taken]
    if not batch:
        cnx.commit()
        return result
    done, failed = send(batch)
    result.sent = len(done)
    if not failed:
        cnx.commit()
        return result
    cnx.rollback()
    result.left = True
    if done:  # never wait here: a row a drainer took meanwhile is its to send (again, with the same id)
        cur.execute(_TAKE_ROWS, {"ids": tuple(taken[m.msg_id] for m in done)})
        cnx.commit()
    return result


def drain(cnx, send: SendFn, batch_size: int, own_ids: list[int] | None = None,
          max_age: float | None = None, max_batches: int = 1) -> DrainResult:
    """Send what the outbox holds, oldest first, in its own transaction(s) on `cnx`.

    With the advisory lock (one drainer per outbox table) the oldest rows are sent; without it only
    `own_ids` (this request's rows).  Rows are locked FOR UPDATE SKIP LOCKED, so two processes
    never send the same row.  `send(batch)` returns (done, failed): done rows (accepted or
    finally refused) are deleted; failed ones stay for later.  Commits after each batch.
    """
    result = DrainResult()
    cur = cnx.cursor()
    for _ in range(max_batches):
        cur.execute(f"SELECT pg_try_advisory_xact_lock(%(key)s::bigint # '{TABLE}'::regclass::oid::bigint)",
                    {"key": DRAIN_LOCK})
        locked = bool(cur.fetchone()[0])
        if locked:
            if max_age is not None:
                result.expired += expire(cur, max_age)
            batch = _select(cur, "TRUE", {}, batch_size)
        elif own_ids:
            result.locked_out = True
            batch = _select(cur, "id IN %(ids)s", {"ids": tuple(own_ids)}, batch_size)
        else:
            result.locked_out = True
            cnx.rollback()
            return result
        if not batch:
            cnx.commit()
            return result
        done, failed = send(list(batch.values()))
        done_ids = {m.msg_id for m in done}
        _delete(cur, [rid for rid, m in batch.items() if m.msg_id in done_ids])
        cnx.commit()
        result.sent += len(done)
        if failed:
            result.left = True
            return result
        if not locked or len(batch) < batch_size:
            return result
    result.left = True
    return result


def status(cnx) -> tuple[int, float | None]:
    """(rows, age in seconds of the oldest row or None)."""
    cur = cnx.cursor()
    cur.execute(f"SELECT count(*), extract(epoch FROM clock_timestamp() - min(stored)) FROM {TABLE}", {})
    count, age = cur.fetchone()
    cnx.rollback()
    return int(count), (float(age) if age is not None else None)


def purge(cnx, older_than: float) -> int:
    """Delete rows older than `older_than` seconds; return how many."""
    cur = cnx.cursor()
    n = expire(cur, older_than)
    cnx.commit()
    return n
