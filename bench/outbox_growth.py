"""Table growth with [outbox] keep: bytes per kept message, and per million, measured in PostgreSQL.

    .venv/bin/python bench/outbox_growth.py [--rows 20000] [--steady WINDOW] [--unmarked]

Stores ROWS messages (the built-in examples of every message type, in turn: the typical mix of a
hub's events) the way the plugin does (outbox.store), marks them sent as a kept row is, VACUUMs,
and prints the heap, TOAST and index sizes of the table divided by the rows, and that times a
million.  Uses a schema of its own in KOJI_MESSAGEBUS_TEST_DSN (default: dbname=test on loopback),
dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import sys

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from koji_messagebus.cli import examples
from koji_messagebus.delivery import outbox_rows
from koji_messagebus.format.messages import MESSAGE_TYPES, format_event
from koji_messagebus.format.wire import encode
from koji_messagebus.transaction import outbox

DSN = os.environ.get("KOJI_MESSAGEBUS_TEST_DSN", "dbname=test host=127.0.0.1 user=postgres")
SCHEMA = f"kmb_growth_{os.getpid()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--steady", type=int, default=0, metavar="WINDOW",
                        help="keep only the newest WINDOW rows (older ones removed as the drain does, then a "
                        "VACUUM as autovacuum would): the size a table settles at")
    parser.add_argument("--unmarked", action="store_true",
                        help="leave the rows unsent (the live data alone, without the mark's old row versions)")
    args = parser.parse_args()
    events = [format_event(t, examples.example(t), "koji.event") for t in MESSAGE_TYPES]
    admin = psycopg2.connect(DSN)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE SCHEMA {SCHEMA}")
    try:
        cnx = psycopg2.connect(DSN, options=f"-c search_path={SCHEMA}")
        cur = cnx.cursor()
        cur.execute(outbox.SCHEMA)
        cnx.commit()
        payload = 0
        for start in range(0, args.rows, 500):
            batch = [encode(events[i % len(events)]) for i in range(start, min(args.rows, start + 500))]
            payload += sum(len(m.payload) for m in batch)
            ids = outbox.store(cnx, batch)
            cnx.commit()
            if not args.unmarked:
                outbox_rows.delete(cnx, ids, keep=3600)  # kept: marked sent, as the sender's batched deletes do
            if args.steady and start + 500 > args.steady:
                cur.execute(f"DELETE FROM {outbox.TABLE} WHERE id <= %s", (ids[-1] - args.steady,))
                cnx.commit()
                admin.cursor().execute(f"VACUUM {SCHEMA}.{outbox.TABLE}")
        cnx.close()
        admin.cursor().execute(f"VACUUM ANALYZE {SCHEMA}.{outbox.TABLE}")
        cur = admin.cursor()
        cur.execute(f"SELECT pg_relation_size('{SCHEMA}.{outbox.TABLE}'), pg_table_size('{SCHEMA}.{outbox.TABLE}'), "
                    f"pg_indexes_size('{SCHEMA}.{outbox.TABLE}'), pg_total_relation_size('{SCHEMA}.{outbox.TABLE}')")
        heap, table, indexes, total = cur.fetchone()
    finally:
        admin.cursor().execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        admin.close()
    rows = min(args.rows, args.steady) if args.steady else args.rows
    what = "unsent" if args.unmarked else "kept"
    print(f"{rows} {what} rows, the examples of {len(events)} message types in turn; payload "
          f"{payload / args.rows:.0f} bytes/message on average")
    print(f"heap {heap / rows:.0f} B/row, heap+TOAST {table / rows:.0f} B/row, indexes {indexes / rows:.0f} B/row, "
          f"total {total / rows:.0f} B/row")
    print(f"per million kept messages: {total / rows * 1e6 / 2**30:.2f} GiB (table {table / rows * 1e6 / 2**30:.2f} "
          f"GiB + indexes {indexes / rows * 1e6 / 2**30:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
