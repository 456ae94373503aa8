"""The outbox's steady state (`outbox.send_own`): after its commit a request sends just its own rows, in one
statement plus the commit; the advisory-lock drain still runs every retry_interval and after failures.

Real parts as in test_reliability.py (whose harness and per-process schema this module shares): the plugin
loaded as the hub loads it, the real PostgreSQL, the real RabbitMQ behind tests/faultproxy.py, pika to see
what arrived.
"""

from __future__ import annotations

import threading
import time

import pytest

from koji_messagebus import outbox
from koji_messagebus.config import load_config
from koji_messagebus.publisher import Publisher
from koji_messagebus.runtime import RequestBatch, Runtime
from koji_messagebus.wire import Outgoing
from tests import hub as test_hub
from tests.faultproxy import FaultProxy
from tests.fixtures import entries
from tests.hub import DBWrapper
from tests.integration.test_reliability import (
    SCHEMA,
    Bus,
    assert_all_arrived,
    connect_db,
    errors,
    first_occurrences,
    hub_rows,
    ids_of,
    outbox_ids,
    sql,
)

pytestmark = pytest.mark.integration

LONG_RETRY = 30.0  # retry_interval for the steady-state tests: only the first request drains


class SettleThenCut(FaultProxy):
    """A fault proxy that can let a batch be half settled before the broker goes away:
    `settle_then_cut(n, hold)` forwards `n` more bytes towards the broker, then drops what the client
    sends while the broker's answers (settlements) still come back for `hold` seconds, then cuts every
    connection and refuses new ones, so that the publisher's reconnect-and-resend fails too.
    (It hooks into FaultProxy's thread: `_cut_all` is what the proxy calls once `cut_after`'s budget is
    spent, `_serve` moves one connection's data.)"""

    def __init__(self, upstream: tuple[str, int]):
        super().__init__(upstream)
        self._hold: float | None = None
        self._holding = False
        self._timer: threading.Timer | None = None

    def settle_then_cut(self, nbytes: int, hold: float) -> None:
        self._hold = hold
        self.cut_after(nbytes)

    def _cut_all(self, reset: bool) -> int:
        if self._hold is not None and self._cut_budget is not None:  # the budget is spent
            self._timer = threading.Timer(self._hold, self._call, args=(self._cut_and_refuse,))
            self._timer.start()
            self._cut_budget, self._hold, self._holding = None, None, True
            return 0
        return super()._cut_all(reset)

    def _serve(self, p, readable, writable) -> None:
        if self._holding and p.client in readable:
            try:
                p.client.recv(65536)  # dropped: nothing more reaches the broker
            except OSError:
                pass
            readable = [s for s in readable if s is not p.client]
        if self._holding:
            p.to_up.clear()
        super()._serve(p, readable, writable)

    def _cut_and_refuse(self) -> None:
        self._holding = False
        self._cut_all(reset=True)
        self._set_mode("refuse")

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._holding = False
        super().stop()


@pytest.fixture
def proxy():
    with SettleThenCut(("127.0.0.1", 5672)) as p:
        yield p


@pytest.fixture
def bus(monkeypatch, tmp_path, exchange_name, proxy, db):
    made: list[Bus] = []

    def make(**sections) -> Bus:
        made.append(Bus(monkeypatch, tmp_path, exchange_name, proxy, **sections))
        return made[-1]

    yield make
    for b in made:
        b.close()


class Paths:
    """Which outbox path each request took (outbox.send_own / outbox.drain), with the results, and what
    the runtime's send for the outbox returned (settled, not sent)."""

    def __init__(self, monkeypatch):
        self.send_own: list[outbox.DrainResult] = []
        self.drain: list[outbox.DrainResult] = []
        self.sends: list[tuple[list[str], list[str]]] = []
        self.real_drain = outbox.drain
        for name in ("send_own", "drain"):
            monkeypatch.setattr(outbox, name, self._spy(getattr(outbox, name), getattr(self, name)))
        real_send = Runtime._send_for_outbox

        def send(runtime, messages):
            done, failed = real_send(runtime, messages)
            self.sends.append(([m.msg_id for m in done], [m.msg_id for m in failed]))
            return done, failed

        monkeypatch.setattr(Runtime, "_send_for_outbox", send)

    @staticmethod
    def _spy(real, results: list):
        def spy(*args, **kws):
            result = real(*args, **kws)
            results.append(result)
            return result
        return spy

    def counts(self) -> tuple[int, int]:
        return len(self.send_own), len(self.drain)


def steady_bus(bus, monkeypatch, retry: float = LONG_RETRY) -> tuple[Bus, Paths]:
    """A bus with the outbox on; its first request (which drains, as every process's first does) is done."""
    paths = Paths(monkeypatch)
    b = bus(outbox={"enabled": True}, broker={"retry_interval": retry})
    warm = b.request(events=1, note="warm")
    assert len(b.collect(1)) == 1 and warm.attempts == 1
    assert paths.counts() == (0, 1)
    return b, paths


# ---- the steady state ------------------------------------------------------------------------------
def test_steady_state_leaves_no_row_and_delivers_each_message_once(bus, monkeypatch, plugin_log):
    b, paths = steady_bus(bus, monkeypatch)
    reqs = []
    for i in range(20):
        reqs.append(b.request(events=3, note=f"s{i}"))
        assert outbox_ids() == [], f"request {i} left rows"
    assert paths.counts() == (20, 1)  # every request after the first sent only its own rows
    assert all(r.sent == 3 and not r.left for r in paths.send_own)
    assert all(r.attempts == 1 for r in reqs)  # one send per request, all 3 messages together
    given = [i for r in reqs for i in r.ids]
    assert assert_all_arrived(given, b.collect(60)) == 0
    assert hub_rows() == ["warm"] + [f"s{i}" for i in range(20)]
    assert errors(plugin_log) == []


def test_steady_state_round_trips_and_commit_setting(bus, monkeypatch):
    """collect: one sub-call mark; preCommit: one round trip (savepoint, insert, release);
    postCommit: one lock-and-delete statement and the COMMIT.
    The relaxed synchronous_commit is local to that last transaction."""
    b, paths = steady_bus(bus, monkeypatch)
    log: list[str] = []
    execute = test_hub.CursorWrapper.execute

    def recording_execute(self, operation, parameters=(), log_errors=True):
        log.append(" ".join(operation.split()[:4]))
        return execute(self, operation, parameters, log_errors)

    def recording_commit(self):
        log.append("COMMIT")
        return self.cnx.commit()

    monkeypatch.setattr(test_hub.CursorWrapper, "execute", recording_execute)
    monkeypatch.setattr(test_hub.DBWrapper, "commit", recording_commit, raising=False)
    r = b.request(events=3, note="counted")
    assert log == [
        "INSERT INTO hub_rows (note)",  # the hub's own work
        "SAVEPOINT koji_messagebus_mark; SELECT set_config('koji_messagebus.marks',",  # its sub-call, once
        f"SAVEPOINT {outbox.SAVEPOINT}; SELECT set_config('koji_messagebus.restore',",  # preCommit: one trip
        "COMMIT",  # the hub's commit
        "SET LOCAL synchronous_commit TO",  # postCommit: lock and delete the request's rows ...
        "COMMIT",  # ... and commit once the broker settled them
    ]
    assert paths.send_own[-1].sent == 3
    assert assert_all_arrived(r.ids, b.collect(3)) == 0
    with b.hub._raw.cursor() as cur:
        cur.execute("SHOW synchronous_commit")
        assert cur.fetchone()[0] == "on"
    b.hub._raw.rollback()


# ---- the broker fails in the middle of a send --------------------------------------------------------
def test_broker_lost_mid_send_keeps_exactly_the_unsettled_rows(bus, monkeypatch, plugin_log):
    b, paths = steady_bus(bus, monkeypatch, retry=1.0)  # also the breaker's pause after the failure
    before = b.request(events=1, note="before")
    assert len(b.collect(1)) == 1
    # about the first third of the batch reaches the broker and is settled, then the broker is gone
    b.proxy.settle_then_cut(100_000, hold=0.3)
    big = b.request(events=300, note="big")
    assert b.proxy.cuts == 1 and b.proxy.mode == "refuse"
    assert paths.counts() == (2, 1)  # sent by send_own, not by a drain
    settled, unsent = paths.sends[-1]
    assert settled and unsent, f"the cut should split the batch: {len(settled)} settled, {len(unsent)} not"
    assert sorted(settled + unsent) == sorted(big.ids)
    kept = outbox_ids()
    assert kept == [i for i in big.ids if i in set(unsent)]  # exactly the unsent rows, in their order
    assert paths.send_own[-1].left and paths.send_own[-1].sent == len(settled)
    assert hub_rows()[-1] == "big"
    arrived_before = b.collect(len(settled))
    assert set(settled) <= set(ids_of(arrived_before))  # settled means the broker has it

    b.proxy.set_mode("pass")
    b.wait_breaker()
    after = b.request(events=2, note="after")
    assert paths.counts() == (2, 2)  # what was left makes the next request drain, oldest first
    arrived_later = b.collect(len(kept) + 2)
    assert outbox_ids() == []
    later = ids_of(arrived_later)
    assert first_occurrences([i for i in later if i in set(kept)]) == kept
    assert not set(later) & set(settled)  # a settled row is never sent again
    received = arrived_before + arrived_later
    duplicates = assert_all_arrived(big.ids + after.ids, received, in_order=False)
    # a duplicate only for a message the broker got but whose settlement the cut lost; same id
    assert {i for i in ids_of(received) if ids_of(received).count(i) > 1} <= set(unsent)
    assert duplicates <= len(unsent)
    assert before.ids[0] not in ids_of(received)


# ---- another drainer holds some of the request's rows ------------------------------------------------
class Drainer(threading.Thread):
    """Another hub process draining: takes the oldest `batch_size` rows with the advisory lock and holds
    them, unsent, until released; then sends them to the real broker and deletes them."""

    def __init__(self, conf: str, batch_size: int, real_drain):
        super().__init__(daemon=True)
        self.config = load_config(conf)
        self.batch_size = batch_size
        self.real_drain = real_drain
        self.holding = threading.Event()
        self.release = threading.Event()
        self.sent: list[str] = []
        self.result: outbox.DrainResult | None = None
        self.error: BaseException | None = None

    def send(self, batch: list[Outgoing]):
        self.holding.set()
        assert self.release.wait(10), "the test never released the drainer"
        result = self.publisher.send(batch)
        done = result.accepted + [m for m, _ in result.lost]
        self.sent += [m.msg_id for m in done]
        return done, result.unsent

    def run(self) -> None:
        cnx = connect_db()
        self.publisher = Publisher(self.config)
        try:
            self.result = self.real_drain(DBWrapper(cnx), self.send, self.batch_size)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
            self.holding.set()
        finally:
            self.publisher.close()
            cnx.close()


@pytest.mark.parametrize("held", [1, 3], ids=["one-row-held", "all-rows-held"])
def test_rows_another_drainer_holds_are_left_to_it(bus, monkeypatch, plugin_log, held):
    b, paths = steady_bus(bus, monkeypatch)
    drainer = Drainer(b.conf, batch_size=held, real_drain=paths.real_drain)

    def between_commit_and_post_commit():
        drainer.start()  # it takes the oldest rows: this request's first `held` ones
        assert drainer.holding.wait(10) and drainer.error is None

    try:
        r = b.request(events=3, note="contended", on_commit=between_commit_and_post_commit)
        # send_own did not wait for the drainer's locks: the drainer is still holding its rows
        assert r.seconds < 1.0 and drainer.is_alive()
        assert paths.send_own[-1].sent == 3 - held
        assert outbox_ids() == r.ids[:held]  # the held rows are the drainer's, still there
    finally:
        drainer.release.set()
        drainer.join(10)
    assert drainer.error is None and drainer.result is not None and drainer.result.sent == held
    assert drainer.sent == r.ids[:held]
    assert assert_all_arrived(r.ids, b.collect(3), in_order=False) == 0  # each message once
    assert outbox_ids() == []
    assert errors(plugin_log) == []


# ---- the outbox table is missing -----------------------------------------------------------------------
def test_missing_table_the_hub_row_still_commits_and_messages_go_direct(bus, db, monkeypatch, plugin_log):
    with db.cursor() as cur:
        cur.execute(f"DROP TABLE {SCHEMA}.{outbox.TABLE}")
    paths = Paths(monkeypatch)
    b = bus(outbox={"enabled": True}, broker={"retry_interval": LONG_RETRY})
    reqs = [b.request(events=3, note=f"m{i}") for i in range(4)]
    assert hub_rows() == [f"m{i}" for i in range(4)]
    assert assert_all_arrived([i for r in reqs for i in r.ids], b.collect(12)) == 0
    assert paths.send_own == []  # no row was stored, none to send
    assert len(paths.drain) <= 1  # the first request's look for a backlog fails on the missing table at most
    errs = errors(plugin_log)
    assert len(errs) == 1 and "messagebus_outbox does not exist" in errs[0], errs


# ---- an older backlog --------------------------------------------------------------------------------
def insert_backlog(conf: str, count: int) -> list[str]:
    """`count` committed rows written straight into the table, as a hub process killed after its
    COMMIT leaves them (nobody will send them but a drain)."""
    rt = Runtime(load_config(conf))
    batch = RequestBatch()
    kwargs = entries("postTag")[0]["kwargs"]
    for _ in range(count):
        rt.collect(batch, "Tag", kwargs)
    for m in batch.messages:
        sql(f"INSERT INTO {outbox.TABLE} (msg_id, created, msg_type, routing_key, payload) "
            "VALUES (%s, %s, %s, %s, %s)", (m.msg_id, m.created, m.type, m.routing_key, m.payload))
    return [m.msg_id for m in batch.messages]


def test_older_backlog_is_drained_within_retry_interval_in_its_order(bus, monkeypatch, plugin_log):
    retry, period = 1.0, 0.05
    paths = Paths(monkeypatch)
    b = bus(outbox={"enabled": True, "batch_size": 20}, broker={"retry_interval": retry})
    warm = b.request(events=1, note="warm")  # drains (nothing there); the next look is due in `retry`
    warm_drain = time.monotonic()
    assert paths.counts() == (0, 1)  # its message is collected below, with the others: no time lost here
    backlog = insert_backlog(b.conf, 50)

    reqs, drained, starts = [], [], []  # drained: (time, request index) of each request that drained
    end = warm_drain + 3.5 * retry
    while time.monotonic() < end:
        drains = len(paths.drain)
        started = time.monotonic()
        starts.append(started)
        reqs.append(b.request(events=1, note=f"r{len(reqs)}"))
        if len(paths.drain) > drains:
            drained.append((started, len(reqs) - 1))
        time.sleep(period)
    # each request took one path or the other; one whose drain left rows also sent its own (issue 9, item 8)
    left_behind = sum(1 for r in paths.drain[1:] if r.left)
    assert len(paths.send_own) + len(drained) == len(reqs) + left_behind

    # 50 rows, batch_size 20: the first drain once retry_interval has passed, two more right after it
    first_time, first = drained[0]
    assert retry - 0.05 <= first_time - warm_drain < retry + 2 * period + 0.5
    assert [i for _, i in drained[:3]] == [first, first + 1, first + 2]
    # every request that started while the interval ran sent only its own rows (how many those are
    # depends on the machine's speed: count them, do not guess)
    in_interval = sum(1 for t in starts if t < warm_drain + retry - 0.05)
    assert in_interval >= 1 and first >= in_interval, (first, in_interval)
    # then one drain per retry_interval, and only the requests' own rows in between
    periodic = [t for t, _ in drained[2:]]
    assert len(periodic) >= 2 and all(later - earlier >= retry for earlier, later in zip(periodic, periodic[1:]))
    assert len(drained) <= 3 + 3

    given = [i for i in warm.ids] + backlog + [i for r in reqs for i in r.ids]
    received = b.collect(len(given))
    assert assert_all_arrived(given, received, in_order=False) == 0
    got = ids_of(received)
    assert got[:len(warm.ids)] == warm.ids
    got = got[len(warm.ids):]
    assert [i for i in got if i in set(backlog)] == backlog  # the backlog in its own order, oldest first
    # the requests before the first drain did not wait for the backlog: their messages came first
    early = {i for r in reqs[:first] for i in r.ids}
    assert got[:len(early)] == [i for r in reqs[:first] for i in r.ids]
    assert outbox_ids() == []
    assert errors(plugin_log) == []
