"""The in-memory backlog used when the outbox is off."""

from __future__ import annotations

import threading

from koji_messagebus.backlog import MemoryBacklog
from koji_messagebus.wire import Outgoing


def msgs(*ids: str) -> list[Outgoing]:
    return [Outgoing(i, 0.0, "Tag", f"koji.event.Tag.{i}", i.encode()) for i in ids]


def ids(messages) -> list[str]:
    return [m.msg_id for m in messages]


def test_take_returns_everything_oldest_first_and_empties():
    bl = MemoryBacklog(10)
    assert bl.put_back(msgs("a", "b")) == []
    assert bl.put_back(msgs("c")) == []
    assert len(bl) == 3
    assert ids(bl.take()) == ["c", "a", "b"]  # put back = older than what is kept
    assert len(bl) == 0 and bl.take() == []


def test_unsent_go_back_before_what_arrived_meanwhile():
    bl = MemoryBacklog(10)
    bl.put_back(msgs("3", "4"))  # kept by another request while ours was sending
    assert bl.put_back(msgs("1", "2")) == []  # ours were older
    assert ids(bl.take()) == ["1", "2", "3", "4"]


def test_overflow_drops_the_oldest_and_returns_them():
    bl = MemoryBacklog(3)
    assert bl.put_back(msgs("1", "2")) == []
    assert bl.put_back(msgs("0")) == []  # now 0, 1, 2 (full)
    lost = bl.put_back(msgs("a", "b"))  # a, b (older), 0, 1, 2 -> keep the newest three
    assert ids(lost) == ["a", "b"]
    assert ids(bl.take()) == ["0", "1", "2"]


def test_limit_zero_keeps_nothing():
    bl = MemoryBacklog(0)
    assert ids(bl.put_back(msgs("x", "y"))) == ["x", "y"]
    assert len(bl) == 0


def test_threads_lose_nothing():
    bl = MemoryBacklog(100_000)
    per_thread = 500

    def worker(n):
        for i in range(per_thread):
            bl.put_back(msgs(f"{n}-{i}"))
            if i % 7 == 0:
                bl.put_back(bl.take())

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = ids(bl.take())
    assert len(got) == len(set(got)) == 8 * per_thread
