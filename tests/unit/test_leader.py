"""The leader path (delivery/leader.py), against a scripted broker (tests/support/fakebroker.py):
on an idle connection a request starts its own messages and reads its own settlements."""

from __future__ import annotations

import logging
import threading
import time

from devkit.config import until
from tests.support.fakebroker import msgs


def _starts_recorded(broker, where: list[str]):
    """broker.pipe, each start() noting the thread it ran on."""
    def pipe(config, endpoint):
        p = broker.pipe(config, endpoint)
        start = p.start

        def recorded(payload: bytes) -> str:
            where.append(threading.current_thread().name)
            return start(payload)

        p.start = recorded  # type: ignore[method-assign]
        return p
    return pipe

def test_on_an_idle_connection_a_request_starts_its_messages_itself(idle_sender, broker):
    where: list[str] = []
    s = idle_sender(_starts_recorded(broker, where))
    for n in range(5):  # opportunistic (see ..._reads_its_own_settlements): one of a few does
        assert until(lambda: s.shared.waiting)  # the thread is in select()
        where.clear()
        result = s.send(msgs(f"a{n}", f"b{n}", f"c{n}"))
        assert [m.msg_id for m in result.accepted] == [f"a{n}", f"b{n}", f"c{n}"]
        if where == [threading.current_thread().name] * 3:
            break
    assert where == [threading.current_thread().name] * 3, where  # not the sender thread's wake-up

def test_while_the_thread_uses_the_connection_a_request_hands_its_messages_over(idle_sender, broker):
    where: list[str] = []
    s = idle_sender(_starts_recorded(broker, where))
    where.clear()
    with s.shared.wire:  # as the thread holds it around every use of the connection
        ticket = s.submit(msgs("a", "b"))
        assert where == []  # the caller never touches a connection in use
    result = ticket.wait(s, time.monotonic() + 2)
    assert [m.msg_id for m in result.accepted] == ["a", "b"]
    assert where == ["messagebus-sender"] * 2

def test_a_request_starting_its_own_messages_keeps_to_the_link_credit(idle_sender, broker):
    where: list[str] = []
    s = idle_sender(_starts_recorded(broker, where))
    where.clear()
    broker.hold = True
    broker.credit = 2
    ticket = s.submit(msgs("a", "b", "c"))
    assert where == [threading.current_thread().name] * 2  # the credit: the third stays queued
    assert len(s.shared.books.fresh) == 1
    broker.credit = 1_000_000
    broker.hold = False
    broker.release()
    result = ticket.wait(s, time.monotonic() + 2)
    assert [m.msg_id for m in result.accepted] == ["a", "b", "c"]
    assert where[2] == "messagebus-sender"  # the thread, woken, sends the rest

def test_an_error_met_by_a_request_starting_its_messages_is_the_threads_to_handle(idle_sender, broker, caplog):
    where: list[str] = []
    failing = []

    def pipe(config, endpoint):
        p = _starts_recorded(broker, where)(config, endpoint)
        start = p.start

        def broken(payload: bytes) -> str:
            if failing:
                failing.pop()
                raise RuntimeError("simulated bug")
            return start(payload)

        p.start = broken  # type: ignore[method-assign]
        return p

    s = idle_sender(pipe)
    failing.append(1)
    with caplog.at_level(logging.ERROR, logger="koji.plugin.messagebus"):
        result = s.send(msgs("a", "b"))  # the caller sees no exception
    assert [m.msg_id for m in result.accepted] == ["a", "b"]  # resent on a new connection
    assert any("unexpected error in the sender thread" in r.getMessage() for r in caplog.records)
    assert broker.connects == 2  # handled as the thread's own: the connection given up

def test_on_an_idle_connection_a_request_reads_its_own_settlements(idle_sender, broker):
    readers: list[str] = []

    def pipe(config, endpoint):
        p = broker.pipe(config, endpoint)
        poll = p.poll

        def recorded() -> None:
            before = len(broker.received)
            poll()
            if len(broker.received) > before:
                readers.append(threading.current_thread().name)

        p.poll = recorded  # type: ignore[method-assign]
        return p

    s = idle_sender(pipe)
    broker.delay = 0.05  # the settlements come after the request is waiting
    # leading is opportunistic: the thread may leave select() (its idle tick) just as the request
    # starts, and then reads the settlements itself; of a few requests on an idle connection, one
    # reads its own (a 3.9 CI run lost the single-try race once)
    for n in range(5):
        assert until(lambda: s.shared.waiting)
        readers.clear()
        result = s.send(msgs(f"a{n}", f"b{n}"))
        assert [m.msg_id for m in result.accepted] == [f"a{n}", f"b{n}"]
        if readers == [threading.current_thread().name]:  # not the sender thread's, handed back
            break
    assert readers == [threading.current_thread().name], readers
