"""Sub-call marks: only a multicall's sub-calls pay the round trip (subcalls.py); a request
outside one is told apart by koji's context.params, its aborted transaction by the connection's
own state."""

from __future__ import annotations

from koji_messagebus.config.settings import load_config
from koji_messagebus.runtime import RequestBatch, Runtime
from koji_messagebus.transaction import outbox
from koji_messagebus.transaction.subcalls import MARK_SQL, SubcallMarks, aborted, in_multicall
from tests.support.fakebroker import msgs


class Cnx:
    """A DB-API connection that records statements and reports a transaction status."""

    def __init__(self, status: int = 2) -> None:
        self.statements: list[str] = []
        self.status = status

    def cursor(self) -> Cnx:
        return self

    def execute(self, sql: str, params: dict) -> None:
        self.statements.append(sql)

    def fetchone(self) -> tuple:
        return ("1",)

    def get_transaction_status(self) -> int:
        return self.status


def test_a_request_outside_a_multicall_pays_no_round_trip_for_the_marks():
    cnx, marks = Cnx(), SubcallMarks()
    params = ("tag", "build")  # what kojixmlrpc's unmarshaller gives a request
    for _ in range(3):
        marks.add(cnx, "tagBuild", params)
    assert cnx.statements == [] and marks.of == [None, None, None] and not marks.checked()


def test_a_multicall_sub_call_is_marked_once_at_its_first_event():
    cnx, marks = Cnx(), SubcallMarks()
    first, second = ["a"], ["b"]  # multiCall's call['params']: XML-RPC arrays, lists
    marks.add(cnx, "tagBuild", first)
    marks.add(cnx, "tagBuild", first)
    marks.add(cnx, "untagBuild", second)
    assert cnx.statements == [MARK_SQL, MARK_SQL] and marks.of == ["1", "1", "2"]


def test_unknown_params_are_marked_as_a_sub_call():
    assert in_multicall(None) and in_multicall([]) and not in_multicall(())


def test_aborted_is_told_from_the_connection_state_without_a_statement():
    assert aborted(Cnx(status=3)) and not aborted(Cnx(status=2))
    assert not aborted(object())  # cannot say: not aborted, as before the marks
    assert Cnx(status=3).statements == []


def make_runtime(tmp_path) -> Runtime:
    path = tmp_path / "messagebus.conf"
    path.write_text("[broker]\nhost = 127.0.0.1\nusername = u\npassword = p\n[exchange]\nname = x\n")
    path.chmod(0o600)
    return Runtime(config=load_config(str(path)))


def test_pre_commit_of_a_plain_request_without_the_outbox_sends_no_statement(tmp_path):
    rt, cnx = make_runtime(tmp_path), Cnx()
    batch = RequestBatch(messages=msgs("a", "b"))
    for _ in batch.messages:
        batch.marks.add(cnx, "tagBuild", ("x",))
    rt.pre_commit(batch, cnx)
    assert cnx.statements == [] and [m.msg_id for m in batch.messages] == ["a", "b"]


def test_pre_commit_of_an_aborted_plain_request_publishes_nothing(tmp_path):
    rt, cnx = make_runtime(tmp_path), Cnx(status=3)
    batch = RequestBatch(messages=msgs("a"))
    batch.marks.add(cnx, "tagBuild", ("x",))
    rt.pre_commit(batch, cnx)
    assert cnx.statements == [] and batch.messages == []


def test_pre_commit_of_a_multicall_asks_which_sub_calls_survived(tmp_path):
    rt, cnx = make_runtime(tmp_path), Cnx()
    batch = RequestBatch(messages=msgs("a"))
    batch.marks.add(cnx, "tagBuild", ["x"])
    rt.pre_commit(batch, cnx)
    assert cnx.statements == [MARK_SQL, f"SELECT {outbox.MARKS_NOW}"] and len(batch.messages) == 1
