"""The sub-call marks' bookkeeping (subcalls.py) without a database: when a new mark is set,
what a failed or refused mark means, and which messages survive.  The statements' effect on a
real PostgreSQL is tested in tests/integration/test_multicall.py."""

from __future__ import annotations

import psycopg2
import psycopg2.errors

from koji_messagebus.transaction import subcalls
from koji_messagebus.transaction.subcalls import ABORTED, SubcallMarks, parse_marks, split


class Cursor:
    """Records statements; raises `error` (once per statement) when set."""

    def __init__(self, log: list[str], errors: list[BaseException | None]):
        self.log, self.errors = log, errors

    def execute(self, sql, params=None, log_errors=True):
        self.log.append(sql.split(";")[0] + (f" {params['mark']}" if params and "mark" in params else ""))
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error


class Cnx:
    def __init__(self, *errors: BaseException | None):
        self.log: list[str] = []
        self.errors = list(errors)

    def cursor(self):
        return Cursor(self.log, self.errors)


def pg_error(cls: type, code: str) -> BaseException:
    exc = cls("refused")
    # psycopg2's errors carry pgcode as a read-only attribute; a subclass instance with it set
    return type(cls.__name__, (cls,), {"pgcode": code})("refused") if exc.pgcode != code else exc


def test_one_mark_per_sub_call_by_params_identity():
    cnx, marks = Cnx(), SubcallMarks()
    first, second = [1], [1]  # equal but distinct: two sub-calls
    marks.add(cnx, "tagBuild", first)
    marks.add(cnx, "tagBuild", first)
    marks.add(cnx, "tagBuild", second)
    marks.add(cnx, "untagBuild", second)
    assert marks.of == ["1", "1", "2", "3"]
    assert [line for line in cnx.log] == ["SAVEPOINT koji_messagebus_mark 1", "SAVEPOINT koji_messagebus_mark 2",
                                          "SAVEPOINT koji_messagebus_mark 3"]
    assert marks.checked()


def test_no_cnx_means_unchecked():
    marks = SubcallMarks()
    marks.add(None, "m", None)
    marks.add(None, "m", None)
    assert marks.of == [None, None] and not marks.checked()


def test_a_refused_mark_in_an_aborted_transaction_is_tried_again_at_the_next_event():
    cnx, marks = Cnx(pg_error(psycopg2.errors.InFailedSqlTransaction, "25P02")), SubcallMarks()
    params = [1]
    marks.add(cnx, "m", params)
    marks.add(cnx, "m", params)
    assert marks.of == [ABORTED, "2"]
    assert cnx.log == ["SAVEPOINT koji_messagebus_mark 1", "SAVEPOINT koji_messagebus_mark 2"]  # no undo


def test_a_failed_mark_is_undone_to_its_savepoint_and_left_unchecked():
    cnx, marks = Cnx(pg_error(psycopg2.errors.QueryCanceled, "57014")), SubcallMarks()
    marks.add(cnx, "m", [1])
    assert marks.of == [None]
    assert cnx.log[1].startswith("ROLLBACK TO SAVEPOINT koji_messagebus_mark")


def test_a_client_side_failure_sends_no_undo():
    cnx, marks = Cnx(ValueError("A string literal cannot contain NUL")), SubcallMarks()
    marks.add(cnx, "m", [1])
    assert marks.of == [None] and len(cnx.log) == 1


def test_split_keeps_unchecked_and_surviving_and_drops_the_rest():
    msgs = ["a", "b", "c", "d", "e"]
    kept, dropped = split(msgs, [None, "1", "2", ABORTED, "3"], frozenset({"1", "3"}))
    assert kept == ["a", "b", "e"] and dropped == ["c", "d"]
    assert split(msgs, [None] * 5, None) == ([], msgs)  # an aborted transaction: its COMMIT rolls back
    assert split(msgs, [], frozenset()) == (msgs, [])  # shorter marks: unchecked


def test_parse_marks():
    assert parse_marks(None) == frozenset() and parse_marks("") == frozenset()
    assert parse_marks(",1,3") == {"1", "3"}


def test_a_cursor_without_log_errors_is_used_plainly():
    calls = []

    class Plain:
        def execute(self, sql, params=None):
            calls.append(sql)

    subcalls.execute_quietly(Plain(), "SELECT 1", {})
    assert calls == ["SELECT 1"]
