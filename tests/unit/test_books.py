"""The sender's books, directly (books.py); the sender thread around them is in test_sender.py."""

from __future__ import annotations

from koji_messagebus.amqp import BrokerError, Kind
from koji_messagebus.delivery.books import Books
from koji_messagebus.delivery.ticket import Hold, Item, Ticket
from koji_messagebus.format.wire import Outgoing


def items(hold: Hold, *ids: str, born: float = 0.0, rows: bool = False) -> list[Item]:
    msgs = [Outgoing(i, 0.0, "Tag", f"koji.event.Tag.{i}", i.encode()) for i in ids]
    ticket = Ticket(hold, msgs)
    return [Item(m, ticket, n if rows else None, born) for n, m in enumerate(msgs, 1)]


def test_new_requests_go_first_and_struck_messages_are_set_apart():
    b = Books(max_pending=100, own_window=10.0)
    b.backlog.extend(items(Hold.MEMORY, "old1", "old2"))
    b.fresh.extend(items(Hold.MEMORY, "new", "struck"))
    taken, apart = b.take(credit=100, now=0.0, struck=lambda msg_id: msg_id == "struck")
    assert [i.msg.msg_id for i in taken] == ["new", "old1", "old2"]
    assert [i.msg.msg_id for i in apart] == ["struck"] and not b.fresh and not b.backlog


def test_an_owned_row_too_old_to_send_is_given_up_to_the_drain():
    b = Books(max_pending=100, own_window=1.0)
    grown: list[int] = []
    b.on_rows.append(lambda: grown.append(1))
    b.fresh.extend(items(Hold.OWNED, "young", born=5.0, rows=True) + items(Hold.OWNED, "old", born=0.0, rows=True))
    taken, _ = b.take(credit=100, now=5.5, struck=lambda msg_id: False)
    assert [i.msg.msg_id for i in taken] == ["young"] and b.abandoned_rows == [1] and grown


def test_while_down_owned_rows_past_own_window_leave_memory_for_the_drain_and_the_rest_stays_in_order():
    """A long outage: what `take` would give up at the return is given up now (an int, not a message)."""
    b = Books(max_pending=100, own_window=10.0)
    grown: list[int] = []
    b.on_rows.append(lambda: grown.append(1))
    b.keep(items(Hold.OWNED, "o-old1", "o-old2", born=0.0, rows=True) + items(Hold.MEMORY, "m-old", born=0.0)
           + items(Hold.OWNED, "o-young", born=25.0, rows=True))
    b.shed(now=20.0)
    assert b.abandoned_rows == [1, 2] and grown
    assert [i.msg.msg_id for i in b.backlog] == ["m-old", "o-young"]  # memory messages are never given up here
    b.shed(now=21.0)  # nothing more to shed: the same backlog
    assert [i.msg.msg_id for i in b.backlog] == ["m-old", "o-young"] and b.abandoned_rows == [1, 2]


def test_keep_is_bounded_by_max_pending_memory_overflow_is_lost_owned_rows_go_to_the_drain():
    b = Books(max_pending=2, own_window=10.0)
    owned = items(Hold.OWNED, "o1", rows=True)
    memory = items(Hold.MEMORY, "m1", "m2", "m3")
    lost = b.keep(owned + memory)
    assert [m.msg_id for m in lost] == ["m1"] and b.abandoned_rows == [1]
    assert [i.msg.msg_id for i in b.backlog] == ["m2", "m3"]


def test_going_down_releases_every_request_and_keeps_all_but_a_drains_locked_rows():
    b = Books(max_pending=100, own_window=10.0)
    b.fresh.extend(items(Hold.MEMORY, "m") + items(Hold.LOCKED, "l", rows=True))
    kept = b.release_queued(BrokerError(Kind.CONNECTION_LOST, "gone"))
    assert [i.msg.msg_id for i in kept] == ["m"] and list(b.backlog) == kept and not b.fresh
    assert all(i.ticket.result.error is not None for i in kept)


def test_taken_rows_come_back_in_front_when_their_database_work_failed():
    b = Books(max_pending=100, own_window=10.0)
    b.settled_rows.extend([1, 2, 3])
    assert b.take_settled_rows(2) == [1, 2]
    b.return_rows([1, 2], [])
    assert b.settled_rows == [1, 2, 3]
