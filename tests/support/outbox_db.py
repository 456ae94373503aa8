"""A private PostgreSQL schema per pytest process for the outbox tests (so parallel runs and the
benchmark never share an outbox table or its drain lock), with the hub's own table beside it."""

from __future__ import annotations

import os

import psycopg2
import pytest

from koji_messagebus.transaction import outbox
from tests.support.hub import DSN

SCHEMA = f"kmb_reliability_{os.getpid()}"


def connect_db(schema: str = SCHEMA):
    cnx = psycopg2.connect(DSN, options=f"-c search_path={schema}")
    cnx.set_client_encoding("UTF8")
    return cnx


def sql(statement: str, params=None, schema: str = SCHEMA):
    """Run one statement in a schema (default: this process's), committed; return its rows (or None)."""
    cnx = connect_db(schema)
    try:
        with cnx.cursor() as cur:
            cur.execute(statement, params)
            rows = cur.fetchall() if cur.description else None
        cnx.commit()
        return rows
    finally:
        cnx.close()


@pytest.fixture(scope="module")
def schema():
    """This process's schema, dropped at the end."""
    yield SCHEMA
    admin = psycopg2.connect(DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    admin.close()


@pytest.fixture
def db(schema):
    """The private schema: the hub's own table and a clean outbox."""
    admin = psycopg2.connect(DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        cur.execute(f"SET search_path = {SCHEMA}")
        cur.execute(f"DROP TABLE IF EXISTS {outbox.TABLE}")
        cur.execute(outbox.SCHEMA)
        cur.execute("DROP TABLE IF EXISTS hub_rows")
        cur.execute("CREATE TABLE hub_rows (id SERIAL PRIMARY KEY, note TEXT NOT NULL)")
    yield admin
    admin.close()
