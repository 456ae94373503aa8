"""`koji-messagebus outbox` administration: what waits and how old it is, purge, and whether the
connected user has exactly the privileges the plugin needs."""

from __future__ import annotations

from typing import Any

from koji_messagebus.delivery.outbox_rows import _HAS_SENT, DRAIN_LOCK, expire
from koji_messagebus.errors import first_line
from koji_messagebus.transaction.outbox import TABLE


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
