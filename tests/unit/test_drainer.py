"""The drainer (delivery/drainer.py) without a database: its row ownership, when it sends given-up rows."""

from __future__ import annotations

import time

from devkit.config import make_config, until
from koji_messagebus.delivery import outbox_rows
from koji_messagebus.delivery.drainer import DELETE_SLACK, Drainer, min_age
from koji_messagebus.delivery.outbox_step import OutboxStep
from koji_messagebus.delivery.sender import SenderThread


def test_a_drain_never_takes_a_row_its_sender_may_still_have_in_flight(tmp_path):
    """A row goes on the wire at most own_window after it was stored and stays in flight until its
    connection is given up: up to the sender's hard stall (a frozen broker).  Until then plus the
    delete's slack it is not the drain's (a 30 s silent broker gave 33-120 duplicates)."""
    sender = SenderThread(make_config(tmp_path))
    longest_in_flight = sender.own_window + sender.hard_stall
    assert min_age(sender.own_window, sender.timeout) >= longest_in_flight + DELETE_SLACK


def test_given_up_rows_wait_while_the_broker_is_quiet_and_go_once_it_settles_again(tmp_path, monkeypatch):
    """A frozen or slow broker takes nothing: sending the given-up rows then would only lock them,
    wait, and give them back (or, before, leave them to the age rule)."""
    tries: list[list[int]] = []
    monkeypatch.setattr(outbox_rows, "try_lead", lambda cnx: False)
    monkeypatch.setattr(OutboxStep, "drain", lambda self, cnx, send=None, log_expired=True: outbox_rows.DrainResult())
    monkeypatch.setattr(OutboxStep, "send_abandoned",
                        lambda self, cnx, deadline=None, batches=None: (tries.append(self.sender.take_abandoned_rows())
                                                                        or (1, False)))
    sender = SenderThread(make_config(tmp_path))
    sender.shared.silent.quiet = True
    drainer = Drainer(make_config(tmp_path), sender, connect_db=lambda: object())
    try:
        sender.return_rows(abandoned=[7, 8])
        drainer.poke()
        time.sleep(0.5)  # a few of the drainer's ticks
        assert tries == [] and sender.abandoned_rows == [7, 8]
        sender.shared.silent.quiet = False
        drainer.poke()
        assert until(lambda: tries == [[7, 8]], timeout=3)
    finally:
        drainer.finish(time.monotonic())
        sender.close()
