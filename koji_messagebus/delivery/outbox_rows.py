"""The outbox's rows after the hub's COMMIT: retire the ones the broker settled (`delete`), send
the ones a process gave up under row locks (`drain_ids`), and the drain (`drain`: advisory lock,
oldest first, in batches, FOR UPDATE SKIP LOCKED) that takes whatever else is left.  Each in a
transaction of its own that never waits long for a lock (AFTER_COMMIT)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from koji_messagebus.format.wire import Outgoing
from koji_messagebus.log import log
from koji_messagebus.transaction.outbox import AFTER_LOCK_TIMEOUT_MS, AFTER_STATEMENT_MS, TABLE, OutboxUnavailable

#: pg advisory lock key: only one process drains the backlog at a time ('kojimbus'); combined (XOR)
#: with the table's oid, so that outbox tables in other schemas of the database are drained independently
DRAIN_LOCK = 0x6B6F6A696D627573
#: pg advisory lock key of the elected drainer ('kojimbul'), held at session level by the one hub process
#: that looks for rows left to the drain (drainer.py); combined with the table's oid as DRAIN_LOCK is
LEAD_LOCK = 0x6B6F6A696D62756C
#: prefixed to the first statement of each transaction after commit (SET LOCAL: this transaction only)
AFTER_COMMIT = (f"SET LOCAL synchronous_commit TO off; SET LOCAL lock_timeout = '{AFTER_LOCK_TIMEOUT_MS}ms'; "
                f"SET LOCAL statement_timeout = '{AFTER_STATEMENT_MS}ms'; ")
#: true when the outbox table has the owner_pid column (tables made before it: `outbox init` adds it)
_HAS_OWNER = (f"EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{TABLE}'::regclass "
              "AND attname = 'owner_pid' AND NOT attisdropped)")
#: first key of the shared advisory locks (two-int form, the second key a backend pid) by which a live
#: process claims the backends that stored the rows its sender holds ('kmbo'; `claim_owners`)
OWNER_CLAIM = 0x6B6D626F
#: a row whose storing backend is gone and that no live process claims: nobody is sending it any
#: more (pg_stat_activity and pg_locks list every backend's pid and lock to every role, no grant
#: needed); NULL (an old row) is not "gone".  The claim covers a hub process whose database
#: connection closed (a PostgreSQL restart, an idle-session limit, its exit) while its sender still
#: holds the rows: without it the drain sent them too (a duplicate).
_OWNER_GONE = ("(owner_pid IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = owner_pid) "
               "AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 2 "
               f"AND l.classid = {OWNER_CLAIM}::oid AND l.objid = owner_pid::oid AND l.granted "
               "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())))")
_said_no_owner = False
#: true when the outbox table has the sent_at column ([outbox] keep; `outbox init` adds it)
_HAS_SENT = (f"EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{TABLE}'::regclass "
             "AND attname = 'sent_at' AND NOT attisdropped)")
#: rows older than keep that were sent, removed by the drain this many at a time
KEPT_BATCH = 5000


@dataclass
class DrainResult:
    sent: int = 0
    lost: int = 0
    left: bool = False
    expired: int = 0
    locked_out: bool = False
    removed: int = 0  # sent rows older than keep, removed
    #: rows selected and sent that the broker did not settle (they stay in the table, unlocked)
    unsent_ids: list[int] = field(default_factory=list)


def try_lead(cnx: Any) -> bool:
    """Try to become the outbox's elected drainer: a session advisory lock, held until this
    connection closes (PostgreSQL frees it when the process dies).  True when this connection holds it."""
    cur = cnx.cursor()
    cur.execute(f"SELECT pg_try_advisory_lock(%(key)s::bigint # '{TABLE}'::regclass::oid::bigint)",
                {"key": LEAD_LOCK})
    (won,) = cur.fetchone()
    cnx.commit()
    return bool(won)


def claim_owners(cnx: Any, pids: list[int]) -> None:
    """Claim the storing backends `pids` for this connection's life: shared session advisory locks,
    never waited for, freed by PostgreSQL when the connection closes (the process died or exited).
    While claimed, the drain does not take their rows as a dead process's (`_OWNER_GONE`)."""
    if not pids:
        return
    cur = cnx.cursor()
    cur.execute(AFTER_COMMIT + f"SELECT pg_try_advisory_lock_shared({OWNER_CLAIM}, p) "
                "FROM unnest(string_to_array(%(pids)s, ',')::int[]) AS p",
                {"pids": ",".join(str(int(p)) for p in pids)})
    cnx.commit()


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
    """A send's outcome (result.SendResult): `split()` gives (done, unsent), `lost` the refused."""

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
    result.unsent_ids += [rid for rid, m in batch.items() if m.msg_id not in done_ids]
    return bool(failed)
