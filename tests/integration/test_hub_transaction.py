"""Nothing the plugin does may abort, roll back or hold up the hub's transaction.

Every statement the plugin runs inside the hub's transaction (the sub-call mark at an event, the
outbox store at preCommit) is tried against what breaks such statements: values psycopg2 refuses
before sending (NUL), a lock held on the outbox table, a role's statement_timeout, a hub
savepoint of the same name, a transaction the hub already aborted, a missing table.  In each
case the hub's own row must be committed (read back from PostgreSQL) and the message sent once.
"""

from __future__ import annotations

import copy
import logging
import threading
import time

import koji.plugin
import psycopg2
import pytest

from devkit.recorded import entries
from koji_messagebus import plugin as mb_plugin
from koji_messagebus.transaction import outbox
from tests.support.hub import DBWrapper, Hub, dml, load_plugin, unload_plugin
from tests.support.outbox_db import SCHEMA, connect_db, sql
from tests.support.pika_consumer import Consumer

pytestmark = pytest.mark.integration

MARGIN = 0.7  # scheduling slack on top of the plugin's own time-out


@pytest.fixture
def hub(monkeypatch, conf_file, db, exchange_name):
    """hub(**connect_options) -> (Hub, Consumer, stores): the plugin with the outbox on; `stores`
    records what each outbox.store_request returned."""
    made: list[Hub] = []
    consumers: list[Consumer] = []
    stores: list[outbox.Stored] = []
    real = outbox.store_request

    def spy(*args, **kws):
        stores.append(real(*args, **kws))
        return stores[-1]

    monkeypatch.setattr(outbox, "store_request", spy)

    def make(options: str = ""):
        monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf_file(outbox={"enabled": True}))
        consumers.append(Consumer(exchange_name))
        load_plugin()
        raw = psycopg2.connect("dbname=test host=127.0.0.1 user=postgres",
                               options=f"-c search_path={SCHEMA} {options}")
        raw.set_client_encoding("UTF8")
        made.append(Hub(raw))
        return made[-1], consumers[-1], stores

    yield make
    unload_plugin()
    for h in made:
        h.close()
    for c in consumers:
        c.close()


def tag_kwargs(tag: str = "f44", build: str = "bash") -> dict:
    kw = copy.deepcopy(entries("postTag")[0]["kwargs"])
    kw["tag"]["name"], kw["build"]["name"] = tag, build
    return kw


def tag_request(note: str, tag: str = "f44", before=None):
    """A hub call: its own row, then one Tag event (optionally `before(cur)` first)."""
    def handler(cur):
        if before:
            before(cur)
        dml("INSERT INTO hub_rows (note) VALUES (%(n)s)", {"n": note})
        koji.plugin.run_callbacks("postTag", **tag_kwargs(tag))
    return handler


def hub_rows() -> list[str]:
    return [r[0] for r in sql("SELECT note FROM hub_rows ORDER BY id")]


def warm(h: Hub, consumer: Consumer) -> None:
    """A process's first request also drains the outbox (postCommit, after the hub's COMMIT); the
    next drain is retry_interval (30 s) away, so the requests under test only store and send."""
    h.request(tag_request("warm"))
    assert len(consumer.collect(expect=1)) == 1
    sql("DELETE FROM hub_rows")


def timed(h: Hub, handler) -> float:
    start = time.monotonic()
    h.request(handler)
    return time.monotonic() - start


def test_nul_in_a_tag_name_the_hub_commits_and_the_message_is_sent_once(hub, plugin_log):
    h, consumer, stores = hub()
    h.request(tag_request("nul", tag="f44\x00x"))
    assert hub_rows() == ["nul"]  # the hub's own row committed
    assert stores[-1].ids is not None and len(stores[-1].ids) == 1  # the row was storable
    got = consumer.collect(expect=1, quiet=0.5)
    assert len(got) == 1 and got[0].body["tag"]["name"] == "f44\x00x"
    assert "Traceback" not in plugin_log.text


def test_a_lock_on_the_outbox_delays_a_request_by_the_timeout_only(hub, plugin_log):
    """LOCK TABLE ... IN SHARE MODE held 3 s (a migration, a backup): the request waits the plugin's
    short lock_timeout, commits, sends its message directly; the outbox stays on."""
    h, consumer, stores = hub()
    warm(h, consumer)
    locker = connect_db()
    locker.cursor().execute(f"LOCK TABLE {outbox.TABLE} IN SHARE MODE")
    release = threading.Timer(3.0, locker.rollback)
    release.start()
    try:
        h.request(tag_request("while-locked"))
        assert h.phases["preCommit"] < outbox.STORE_TIMEOUT_MS / 1000 + MARGIN, h.phases  # the hub's transaction
        assert hub_rows() == ["while-locked"]
        assert stores[-1].ids is None and "is locked" in (stores[-1].problem or "")
        assert len(consumer.collect(expect=1)) == 1  # sent directly
    finally:
        release.join(5)
        locker.close()
    assert mb_plugin.runtime()._outbox_broken_until == 0.0  # not switched off
    h.request(tag_request("after"))
    assert stores[-1].ids is not None and len(stores[-1].ids) == 1  # the next request used the outbox
    assert len(consumer.collect(expect=1)) == 1
    assert hub_rows() == ["while-locked", "after"]
    assert "Traceback" not in plugin_log.text


def test_a_locked_outbox_is_one_warning_line_for_many_requests_with_the_count(hub, plugin_log):
    """Every request while a LOCK TABLE is held is sent directly: one WARNING line names the cause
    at once, the others are counted and said in one line (here: at process exit)."""
    h, consumer, stores = hub()
    warm(h, consumer)
    locker = connect_db()
    locker.cursor().execute(f"LOCK TABLE {outbox.TABLE} IN SHARE MODE")
    try:
        for i in range(6):
            h.request(tag_request(f"locked-{i}"))
    finally:
        locker.rollback()
        locker.close()
    assert all(s.ids is None for s in stores[-6:])
    assert len(consumer.collect(expect=6)) == 6  # sent directly, none lost
    locked = [r for r in plugin_log.records if "sent directly" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in locked] == [(
        logging.WARNING, f"messagebus: 1 request(s) sent directly: the outbox table {outbox.TABLE} is locked (by a "
        f"migration, a backup or a LOCK TABLE; the insert waited lock_timeout {outbox.LOCK_TIMEOUT_MS} ms); the "
        "hub's transaction is unaffected")]
    mb_plugin.runtime().shutdown()  # process exit: the count not said yet
    locked = [r.getMessage() for r in plugin_log.records if "sent directly" in r.getMessage()]
    drains = [r.getMessage() for r in plugin_log.records if "outbox drain failed" in r.getMessage()]
    assert len(drains) <= 2 and all("the outbox table is locked or slow" in m for m in drains), drains
    assert len(locked) == 2 and locked[1].startswith("messagebus: 5 request(s) sent directly in the last "), locked
    assert "Traceback" not in plugin_log.text


def test_a_role_statement_timeout_is_not_waited_for_and_is_restored(hub):
    """statement_timeout = 2s for the hub's role (here: its session) and the table locked: the
    plugin's own 300 ms apply; the hub's setting is back for whatever follows in its transaction."""
    h, consumer, stores = hub("-c statement_timeout=2s -c lock_timeout=0")
    seen: list[tuple[str, str]] = []

    def settings_after_precommit(cbtype, *args, **kws):
        cur = koji.context.context.cnx.cursor()
        cur.execute("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')", {})
        seen.append(cur.fetchone())

    warm(h, consumer)
    settings_after_precommit.callbacks = ["preCommit"]
    koji.plugin.register_callback("preCommit", settings_after_precommit)
    locker = connect_db()
    locker.cursor().execute(f"LOCK TABLE {outbox.TABLE} IN SHARE MODE")
    try:
        h.request(tag_request("slow-role"))
    finally:
        locker.rollback()
        locker.close()
    assert h.phases["preCommit"] < outbox.STORE_TIMEOUT_MS / 1000 + MARGIN, h.phases
    h.request(tag_request("fine"))
    assert stores[-1].ids is not None
    assert seen == [("2s", "0"), ("2s", "0")]  # restored after a time-out and after a success
    assert hub_rows() == ["slow-role", "fine"]
    assert len(consumer.collect(expect=2)) == 2


def test_a_lock_on_the_outbox_does_not_hold_up_the_request_after_commit(hub):
    """The whole request, postCommit included (the hub's worker waits for it too), is bounded by
    the same short time-out while a lock is held on the outbox table."""
    h, consumer, _ = hub()
    warm(h, consumer)
    h.request(tag_request("sent-own"))
    # work for the next postCommit, whatever the timing: a settled row to delete and a drain due
    delivery = mb_plugin.runtime().ensure_delivery()
    assert delivery.drainer is None  # the request-path fallback: postCommit runs the statements
    delivery.sender.settled_rows.append(1)
    delivery._drain_at = 0.0
    locker = connect_db()
    locker.cursor().execute(f"LOCK TABLE {outbox.TABLE} IN SHARE MODE")
    release = threading.Timer(3.0, locker.rollback)
    release.start()
    try:
        seconds = timed(h, tag_request("while-locked"))
    finally:
        release.join(5)
        locker.close()
    assert seconds < outbox.STORE_TIMEOUT_MS / 1000 + MARGIN, h.phases
    assert len(consumer.collect(expect=2)) == 2


def test_a_hub_savepoint_of_the_same_name_is_left_alone(hub):
    """The hub holds a savepoint named like the plugin's; the store fails (table gone): the plugin's
    ROLLBACK TO reaches its own savepoint only, the hub's work after its savepoint stays."""
    h, consumer, _ = hub()
    sql(f"DROP TABLE {outbox.TABLE}")
    h.request(tag_request("after-hub-savepoint", before=lambda cur: dml(f"SAVEPOINT {outbox.SAVEPOINT}")))
    assert hub_rows() == ["after-hub-savepoint"]
    assert len(consumer.collect(expect=1)) == 1


def test_a_hub_savepoint_of_the_same_name_success_path(hub):
    h, consumer, stores = hub()

    def handler(cur):
        dml(f"SAVEPOINT {outbox.SAVEPOINT}")
        tag_request("a")(cur)

    h.request(handler)
    assert hub_rows() == ["a"] and stores[-1].ids is not None
    assert len(consumer.collect(expect=1)) == 1


def test_an_aborted_hub_transaction_raises_nothing_and_publishes_nothing(hub, plugin_log):
    """The hub swallowed a failed statement and returned: its COMMIT rolls back (psycopg2 reports
    nothing), so nothing may be published; the plugin's statements must not raise into it."""
    h, consumer, stores = hub()

    def handler(cur):
        tag_request("lost")(cur)
        try:
            cur.execute("SELECT 1/0")
        except psycopg2.Error:
            pass
        koji.plugin.run_callbacks("postTag", **tag_kwargs(build="in-aborted"))

    h.request(handler)
    assert hub_rows() == []  # the hub's COMMIT was a rollback
    assert consumer.collect(quiet=0.8) == []
    assert stores[-1].survivors is None
    assert "not published: the hub rolled back the change" in plugin_log.text
    assert "Traceback" not in plugin_log.text
    h.request(tag_request("next"))  # the next request is unaffected
    assert hub_rows() == ["next"] and len(consumer.collect(expect=1)) == 1


def test_an_aborted_hub_transaction_without_the_outbox(hub, monkeypatch, conf_file, plugin_log):
    h, consumer, _ = hub()
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf_file(outbox={"enabled": False}))
    mb_plugin.reset(None)

    def handler(cur):
        tag_request("lost")(cur)
        try:
            cur.execute("SELECT 1/0")
        except psycopg2.Error:
            pass

    h.request(handler)
    assert hub_rows() == [] and consumer.collect(quiet=0.8) == []
    assert "Traceback" not in plugin_log.text


def test_a_client_side_error_sends_nothing_and_touches_nothing(hub, monkeypatch, plugin_log):
    """psycopg2 refuses a parameter before sending (here: NUL forced into a text column): no
    statement reached the server, so there is nothing to roll back; the message goes directly."""
    h, consumer, stores = hub()
    monkeypatch.setattr(outbox, "_text", lambda value: "x\x00y")
    h.request(tag_request("client-side"))
    assert hub_rows() == ["client-side"]
    assert stores[-1].ids is None and stores[-1].survivors is not None
    assert len(consumer.collect(expect=1)) == 1
    assert "Traceback" not in plugin_log.text


def test_missing_table_backs_off_with_one_clear_line(hub, plugin_log):
    h, consumer, stores = hub()
    sql(f"DROP TABLE {outbox.TABLE}")
    h.request(tag_request("one"))
    h.request(tag_request("two"))
    assert hub_rows() == ["one", "two"]
    assert len(consumer.collect(expect=2)) == 2
    assert len(stores) == 1  # backed off after the first
    errors = [r.getMessage() for r in plugin_log.records if r.levelname == "ERROR" and "outbox init" in r.getMessage()]
    assert len(errors) == 1, errors  # one line, with the fix


def test_store_restores_the_hubs_timeouts_and_leaves_no_savepoint(db):
    cnx = connect_db()
    try:
        cur = cnx.cursor()
        cur.execute("SET lock_timeout = '5s'; SET statement_timeout = '7s'")
        cnx.commit()
        ids = outbox.store(DBWrapper(cnx), [])
        assert ids == []
        from koji_messagebus.format.wire import Outgoing
        msg = Outgoing("id-1", time.time(), "Tag\x00", "k\udcff\x00", b"\x00payload")
        stored = outbox.store_request(DBWrapper(cnx), [msg])
        assert stored.ids and len(stored.ids) == 1
        assert stored.backend == cnx.get_backend_pid()  # the rows' owner_pid, claimed while the sender holds them
        cur.execute("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")
        assert cur.fetchone() == ("5s", "7s")
        with pytest.raises(psycopg2.errors.InvalidSavepointSpecification):
            cur.execute(f"RELEASE SAVEPOINT {outbox.SAVEPOINT}")  # released already
        cnx.rollback()
    finally:
        cnx.close()
