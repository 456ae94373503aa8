"""kojihub's database wrappers over a real psycopg2 connection (kojihub itself is not on PyPI):
`DBWrapper`/`CursorWrapper` as the plugin sees them, list parameters become tuples, `close()`
issues a raw ROLLBACK.  Used by the tests' hub request cycle and by the benchmarks."""

from __future__ import annotations

import os
import re

import psycopg2

DSN = os.environ.get("KOJI_MESSAGEBUS_TEST_DSN", "dbname=test host=127.0.0.1 user=postgres")
_NAMED = re.compile(r"%\(([^\)]+)\)[a-z]")


class CursorWrapper:
    """Behaves like kojihub.db.CursorWrapper for the calls a plugin makes."""

    def __init__(self, cursor):
        self.cursor = cursor

    def __getattr__(self, key):
        return getattr(self.cursor, key)

    def execute(self, operation, parameters=(), log_errors=True):
        operation = _NAMED.sub(r"%(\1)s", operation)
        if isinstance(parameters, dict):
            parameters = {k: tuple(v) if isinstance(v, list) else v for k, v in parameters.items()}
        return self.cursor.execute(operation, parameters)


class DBWrapper:
    """Behaves like kojihub.db.DBWrapper."""

    def __init__(self, cnx):
        self.cnx = cnx

    def __getattr__(self, key):
        return getattr(self.cnx, key)

    def cursor(self, *args, **kw):
        return CursorWrapper(self.cnx.cursor(*args, **kw))

    def close(self):
        self.cnx.cursor().execute("ROLLBACK")
        self.cnx = None


def db_connect():
    cnx = psycopg2.connect(DSN)
    cnx.set_client_encoding("UTF8")
    return cnx
