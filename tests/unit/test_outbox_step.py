"""The outbox step (delivery/outbox_step.py): the order of its database work.  The SQL itself runs
against the real PostgreSQL in tests/integration; here outbox_rows records what was asked of it."""

from __future__ import annotations

import dataclasses

from devkit.config import make_config
from koji_messagebus.delivery import outbox_rows
from koji_messagebus.delivery.outbox_step import OutboxStep
from koji_messagebus.delivery.sender import SenderThread


def test_settled_rows_are_deleted_between_the_batches_of_a_long_backlog(tmp_path, monkeypatch):
    """A backlog sent under row locks may take longer than min_age; rows the sender settled meanwhile
    must not wait for its end (a drain would take them as unsent and send them again)."""
    sender = SenderThread(make_config(tmp_path))
    sender.shared.books.abandoned_rows[:] = list(range(1, 5))
    calls: list[tuple[str, list[int]]] = []

    def drain_ids(cnx, ids, send, keep=0.0):
        calls.append(("send", list(ids)))
        sender.shared.books.settled_rows.append(100 + ids[0])  # the sender settles its own rows meanwhile
        return outbox_rows.DrainResult(sent=len(ids))

    monkeypatch.setattr(outbox_rows, "drain_ids", drain_ids)
    monkeypatch.setattr(outbox_rows, "delete", lambda cnx, rows, keep=0.0: calls.append(("delete", list(rows))))
    step = OutboxStep(dataclasses.replace(make_config(tmp_path).outbox, batch_size=2), sender, min_age=55.0)
    assert step.send_abandoned(cnx=None) == (4, False)
    assert calls == [("send", [1, 2]), ("delete", [101]), ("send", [3, 4]), ("delete", [103])]


def test_given_up_rows_the_broker_did_not_take_stay_this_processs_to_try_again(tmp_path, monkeypatch):
    """A batch sent under row locks that the broker did not settle (it went quiet, or down) goes back
    to the process's given-up rows, in front: not left in the table for the drain's age rule
    (55 s by default; rows were still there when a benchmark's processes ended)."""
    sender = SenderThread(make_config(tmp_path))
    sender.shared.books.abandoned_rows[:] = [1, 2, 3, 4]

    def drain_ids(cnx, ids, send, keep=0.0):
        return outbox_rows.DrainResult(sent=1, left=True, unsent_ids=list(ids[1:]))

    monkeypatch.setattr(outbox_rows, "drain_ids", drain_ids)
    monkeypatch.setattr(outbox_rows, "delete", lambda cnx, rows, keep=0.0: None)
    step = OutboxStep(dataclasses.replace(make_config(tmp_path).outbox, batch_size=3), sender, min_age=55.0)
    assert step.send_abandoned(cnx=None) == (1, True)
    assert sender.abandoned_rows == [2, 3, 4]  # the unsent of the batch, in front of the rest
    sender.close()
