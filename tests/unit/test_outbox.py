"""transaction.outbox's error classification (pure: exceptions as psycopg2 raises them)."""

from __future__ import annotations

import psycopg2

from koji_messagebus.transaction.outbox import is_connection_lost, is_timeout


class Coded(Exception):
    def __init__(self, text: str, pgcode: str):
        super().__init__(text)
        self.pgcode = pgcode


def test_a_restart_or_a_cut_is_a_lost_connection():
    for text in ("SSL SYSCALL error: EOF detected\n",
                 "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally\n",
                 "terminating connection due to administrator command\nSSL connection has been closed unexpectedly\n",
                 'connection to server at "127.0.0.1", port 5432 failed: Connection refused\n'
                 "\tIs the server running on that host and accepting TCP/IP connections?\n",
                 "connection already closed"):
        assert is_connection_lost(psycopg2.OperationalError(text)), text
    assert is_connection_lost(psycopg2.InterfaceError("connection already closed"))
    assert is_connection_lost(Coded("terminating connection due to administrator command", "57P01"))
    assert is_connection_lost(Coded("the database system is starting up", "57P03"))


def test_a_wrapped_connect_failure_counts_by_its_context():
    try:
        try:
            raise psycopg2.OperationalError("connection to server failed: Connection refused")
        except psycopg2.Error:
            raise RuntimeError("cannot connect to the hub database (...)") from None
    except RuntimeError as exc:
        assert is_connection_lost(exc)


def test_other_errors_are_not():
    assert not is_connection_lost(Coded("canceling statement due to lock timeout", "55P03"))
    assert is_timeout(Coded("canceling statement due to lock timeout", "55P03"))
    assert not is_connection_lost(Coded('relation "messagebus_outbox" does not exist', "42P01"))
    assert not is_connection_lost(psycopg2.OperationalError('FATAL:  password authentication failed for user "koji"'))
    assert not is_connection_lost(ValueError("A string literal cannot contain NUL (0x00) characters."))
