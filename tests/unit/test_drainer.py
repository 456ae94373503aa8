"""The drainer's row ownership (delivery/drainer.py), pure: no database."""

from __future__ import annotations

from devkit.config import make_config
from koji_messagebus.delivery.drainer import DELETE_SLACK, min_age
from koji_messagebus.delivery.sender import SenderThread


def test_a_drain_never_takes_a_row_its_sender_may_still_have_in_flight(tmp_path):
    """A row goes on the wire at most own_window after it was stored and stays in flight until its
    connection is given up: up to the sender's hard stall (a frozen broker).  Until then plus the
    delete's slack it is not the drain's (a 30 s silent broker gave 33-120 duplicates)."""
    sender = SenderThread(make_config(tmp_path))
    longest_in_flight = sender.own_window + sender.hard_stall
    assert min_age(sender.own_window, sender.timeout) >= longest_in_flight + DELETE_SLACK
