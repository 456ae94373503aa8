"""Multicall: a message is published iff the change that fired it committed.

The hub emulator (tests/support/hub.py) runs kojixmlrpc's multiCall loop on the real PostgreSQL: a
`SAVEPOINT multiCall_loop` per sub-call, `ROLLBACK TO SAVEPOINT multiCall_loop` on a fault, then
the request commits.  What arrived is read back with pika from RabbitMQ 3.10.
"""

from __future__ import annotations

import copy
import logging

import koji.plugin
import psycopg2
import pytest

from devkit.recorded import entries
from koji_messagebus.transaction import outbox, subcalls
from tests.support.hub import HUB_SCHEMA, Fault, Hub, dml, get_event, load_plugin, unload_plugin
from tests.support.outbox_db import SCHEMA, connect_db, sql
from tests.support.pika_consumer import Consumer

pytestmark = pytest.mark.integration

TABLES = "DROP TABLE IF EXISTS tag_listing, tag_packages, task, events;\n" + HUB_SCHEMA + """
CREATE TABLE tag_listing (tag TEXT NOT NULL, build TEXT NOT NULL, create_event INTEGER NOT NULL REFERENCES events);
CREATE TABLE tag_packages (tag TEXT NOT NULL, package TEXT NOT NULL, create_event INTEGER NOT NULL REFERENCES events);
CREATE TABLE task (id INTEGER PRIMARY KEY, state TEXT NOT NULL);
INSERT INTO task VALUES (1, 'OPEN'), (2, 'OPEN');
"""


@pytest.fixture
def koji_db(db):
    with db.cursor() as cur:
        cur.execute(f"SET search_path = {SCHEMA}")
        cur.execute(TABLES)
    return db


@pytest.fixture
def hub(monkeypatch, conf_file, koji_db, exchange_name):
    made: list[Hub] = []
    consumers: list[Consumer] = []

    def make(outbox_on: bool):
        monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf_file(outbox={"enabled": outbox_on}))
        consumers.append(Consumer(exchange_name))
        load_plugin()
        made.append(Hub(connect_db()))
        return made[-1], consumers[-1]

    yield make
    unload_plugin()
    for h in made:
        h.close()
    for c in consumers:
        c.close()


def tag_kwargs(build: str, tag: str = "f44") -> dict:
    kw = copy.deepcopy(entries("postTag")[0]["kwargs"])
    kw["build"].update(name=build, nvr=f"{build}-1-1")
    kw["tag"]["name"] = tag
    return kw


def package_list_add(tag: str = "f44", package: str = "pkg-a"):
    """packageListAdd: a versioned write (a new event) and its callback."""
    def packageListAdd(cur):  # noqa: N802 - a hub method name
        kw = copy.deepcopy(entries("postPackageListChange")[0]["kwargs"])
        kw["tag"]["name"], kw["package"]["name"] = tag, package
        dml("INSERT INTO tag_packages VALUES (%(t)s, %(p)s, %(e)s)", {"t": tag, "p": package, "e": get_event()})
        koji.plugin.run_callbacks("postPackageListChange", **kw)
    return packageListAdd


def mass_tag(builds: list[tuple[str, str]], tag: str = "f44"):
    """massTag: tags each build (a new event, postTag each); a CANCELED build is a fault."""
    def massTag(cur):  # noqa: N802 - a hub method name
        for name, state in builds:
            if state == "CANCELED":
                raise Fault(f"build {name} is CANCELED")
            dml("INSERT INTO tag_listing VALUES (%(t)s, %(b)s, %(e)s)", {"t": tag, "b": name, "e": get_event()})
            koji.plugin.run_callbacks("postTag", **tag_kwargs(name, tag))
    return massTag


def set_task_state(task_id: int, state: str, fail: bool = False):
    """A task state change: no event; postTaskStateChange; optionally a fault after it."""
    def setTaskState(cur):  # noqa: N802 - a hub method name
        old = sql(f"SELECT state FROM task WHERE id = {task_id}")[0][0]
        dml("UPDATE task SET state = %(s)s WHERE id = %(i)s", {"s": state, "i": task_id})
        koji.plugin.run_callbacks("postTaskStateChange", attribute="state", old=old, new=state,
                                  info={"id": task_id, "method": "build", "state": koji.TASK_STATES[state]})
        if fail:
            raise Fault("the task failed afterwards")
    return setTaskState


def arrived(consumer: Consumer, expect: int) -> list[tuple[str, str]]:
    return sorted((m.headers["type"], m.routing_key) for m in consumer.collect(expect=expect, quiet=0.5))


@pytest.mark.parametrize("outbox_on", [False, True], ids=["direct", "outbox"])
def test_a_rolled_back_sub_call_is_not_published(hub, outbox_on, plugin_log):
    h, consumer = hub(outbox_on)
    results = h.multicall([package_list_add(), mass_tag([("good", "COMPLETE"), ("bad", "CANCELED")])])
    assert "faultCode" in results[1] and results[0] == [None]
    assert sql("SELECT build FROM tag_listing") == []  # listTagged: the good build is not tagged
    assert sql("SELECT package FROM tag_packages") == [("pkg-a",)]
    assert sql("SELECT count(*) FROM events") == [(1,)]  # the massTag event was rolled back with it
    got = arrived(consumer, 1)
    assert got == [("PackageListChange", "koji.event.PackageListChange.f44.pkg-a.add")] or \
        [t for t, _ in got] == ["PackageListChange"]
    assert "not published: the hub rolled back the change" in plugin_log.text
    assert "Tag x1" in plugin_log.text
    assert sql(f"SELECT msg_type FROM {outbox.TABLE} WHERE msg_type = 'Tag'") == []  # never stored


@pytest.mark.parametrize("outbox_on", [False, True], ids=["direct", "outbox"])
def test_a_failed_first_sub_call_then_a_good_one(hub, outbox_on):
    h, consumer = hub(outbox_on)
    h.multicall([mass_tag([("one", "COMPLETE"), ("bad", "CANCELED")]), mass_tag([("two", "COMPLETE")]),
                 mass_tag([("three", "COMPLETE"), ("bad", "CANCELED")]), mass_tag([("four", "COMPLETE")])])
    assert sorted(sql("SELECT build FROM tag_listing")) == [("four",), ("two",)]
    got = arrived(consumer, 2)
    assert [k.split(".")[4] for _, k in got] == ["four", "two"]


@pytest.mark.parametrize("outbox_on", [False, True], ids=["direct", "outbox"])
def test_a_task_state_change_in_a_failed_sub_call(hub, outbox_on):
    """Tasks have no event: only the savepoint tells that the change was rolled back."""
    h, consumer = hub(outbox_on)
    h.multicall([set_task_state(1, "FAILED", fail=True), set_task_state(2, "CLOSED")])
    assert sql("SELECT id, state FROM task ORDER BY id") == [(1, "OPEN"), (2, "CLOSED")]
    got = consumer.collect(expect=1, quiet=0.5)
    assert [m.body["info"]["id"] for m in got] == [2]


@pytest.mark.parametrize("outbox_on", [False, True], ids=["direct", "outbox"])
def test_every_sub_call_failed_nothing_published(hub, outbox_on):
    h, consumer = hub(outbox_on)
    h.multicall([mass_tag([("a", "COMPLETE"), ("x", "CANCELED")]), set_task_state(1, "FAILED", fail=True)])
    assert consumer.collect(quiet=0.8) == []
    assert sql("SELECT count(*) FROM tag_listing") == [(0,)]


@pytest.mark.parametrize("outbox_on", [False, True], ids=["direct", "outbox"])
def test_ordinary_calls_are_unaffected(hub, outbox_on):
    h, consumer = hub(outbox_on)
    h.request(mass_tag([("solo", "COMPLETE"), ("solo2", "COMPLETE")]))
    h.request(package_list_add(package="pkg-b"))
    got = arrived(consumer, 3)
    assert [t for t, _ in got] == ["PackageListChange", "Tag", "Tag"]


def test_nested_multicall_keeps_exactly_the_surviving_sub_calls(hub):
    """A multiCall inside a multiCall (kojixmlrpc allows it): savepoints of the same name nest."""
    h, consumer = hub(False)

    def inner(cur):
        for i, call in enumerate([mass_tag([("in1", "COMPLETE")]), mass_tag([("in2", "COMPLETE"), ("x", "CANCELED")])]):
            dml("SAVEPOINT multiCall_loop")
            from koji.context import context
            context.method, context.params = "massTag", [f"inner{i}"]
            try:
                call(cur)
            except Fault:
                dml("ROLLBACK TO SAVEPOINT multiCall_loop")
            if hasattr(context, "event_id"):
                del context.event_id

    h.multicall([mass_tag([("out1", "COMPLETE")]), ("multiCall", inner), mass_tag([("out2", "COMPLETE")])])
    assert sorted(sql("SELECT build FROM tag_listing")) == [("in1",), ("out1",), ("out2",)]
    got = arrived(consumer, 3)
    assert sorted(k.split(".")[4] for _, k in got) == ["in1", "out1", "out2"]


# ---- the PostgreSQL semantics the design relies on ---------------------------------------------
def test_postgresql_reverts_a_local_setting_with_the_savepoint():
    """A transaction-local custom setting changed after a savepoint is reverted by ROLLBACK TO it,
    kept by RELEASE, nested like the savepoints, and gone at the end of the transaction."""
    cnx = connect_db()
    try:
        cur = cnx.cursor()

        def mark(n: str) -> None:
            cur.execute(subcalls.MARK_SQL, {"mark": n})

        def marks() -> frozenset[str]:
            cur.execute(f"SELECT {subcalls.MARKS_NOW}")
            return subcalls.parse_marks(cur.fetchone()[0])

        assert marks() == frozenset()
        cur.execute("SAVEPOINT multiCall_loop"); mark("1")  # noqa: E702
        cur.execute("SAVEPOINT multiCall_loop"); mark("2")  # noqa: E702
        cur.execute("ROLLBACK TO SAVEPOINT multiCall_loop")
        cur.execute("SAVEPOINT multiCall_loop"); mark("3")  # noqa: E702
        cur.execute("SAVEPOINT multiCall_loop"); mark("4")  # noqa: E702
        cur.execute("SAVEPOINT multiCall_loop"); mark("5")  # noqa: E702
        cur.execute("ROLLBACK TO SAVEPOINT multiCall_loop")  # the innermost only
        assert marks() == {"1", "3", "4"}
        cnx.commit()
        assert marks() == frozenset()
        try:
            cur.execute("SELECT 1/0")
        except psycopg2.Error:
            pass
        with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
            mark("6")  # refused at its SAVEPOINT: the aborted transaction is left as it was
        cnx.rollback()
    finally:
        cnx.close()


def test_a_mark_in_an_aborted_transaction_does_not_raise_and_is_not_published(hub, plugin_log, caplog):
    h, consumer = hub(False)
    caplog.set_level(logging.INFO)

    def tag_in_aborted_then_recover(cur):
        dml("SAVEPOINT hub_inner")
        try:
            cur.execute("SELECT 1/0")
        except psycopg2.Error:
            pass
        koji.plugin.run_callbacks("postTag", **tag_kwargs("during-abort"))  # fires in the aborted state
        dml("ROLLBACK TO SAVEPOINT hub_inner")
        dml("INSERT INTO tag_listing VALUES ('f44', 'after', %(e)s)", {"e": get_event()})
        koji.plugin.run_callbacks("postTag", **tag_kwargs("after"))

    results = h.multicall([tag_in_aborted_then_recover])
    assert results == [[None]]
    assert sql("SELECT build FROM tag_listing") == [("after",)]
    got = arrived(consumer, 1)
    assert [k.split(".")[4] for _, k in got] == ["after"]
    assert "Traceback" not in plugin_log.text


def test_no_cnx_in_context_publishes_unchecked(hub):
    """Callbacks fired outside a request with a database (no context.cnx): nothing to check."""
    from koji.context import context

    h, consumer = hub(False)
    context._threadclear()
    koji.plugin.run_callbacks("postTag", **tag_kwargs("nocnx"))
    koji.plugin.run_callbacks("preCommit")
    koji.plugin.run_callbacks("postCommit")
    context._threadclear()
    assert [m.routing_key.split(".")[4] for m in consumer.collect(expect=1)] == ["nocnx"]
