"""The sender thread's window (delivery/window.py): slow start, growth only on prompt settlements
of a window in use, caps (credit, MAX_IN_FLIGHT), a small restart after a crash, a share for new
requests."""

from __future__ import annotations

from koji_messagebus.delivery import window as w
from koji_messagebus.delivery.window import Window


def settle(win: Window, n: int, seconds: float = 0.001) -> None:
    for _ in range(n):
        win.settled(seconds, int(win.size))


def test_slow_start_doubles_per_round_trip_up_to_the_cap():
    win = Window(cap=100)
    assert win.limit(0, 10**6) == w.START
    settle(win, w.START)  # one round trip of a full window
    assert win.limit(0, 10**6) == 2 * w.START
    settle(win, 1000)
    assert win.limit(0, 10**6) == 100


def test_the_credit_caps_what_may_be_in_flight():
    win = Window()
    settle(win, 100)
    assert win.limit(in_flight=10, credit=5) == 15
    assert win.limit(in_flight=10, credit=0) == 10  # nothing more until the broker grants credit
    assert win.limit(in_flight=0, credit=-3) == 0


def test_slow_settlements_and_an_unused_window_do_not_grow_it():
    win = Window()
    settle(win, 20, 0.002)
    size = win.size
    win.settled(0.5, int(size))  # far slower than the smoothed round trip
    assert win.size == size
    win.settled(0.002, 1)  # one message out of a big window: the window is not what limits
    assert win.size == size


def test_a_crash_restarts_from_one_message_and_halves_the_threshold():
    win = Window()
    settle(win, 2000 - w.START)
    assert win.size == 2000
    win.reset(crashed=True)
    assert win.limit(0, 10**6) == w.AFTER_CRASH and win.threshold == 1000
    settle(win, 999)
    assert win.size == 1000  # slow start: one more per settlement up to the threshold
    settle(win, 1000)
    assert 1000 < win.size < 1002  # past it, about one more per round trip
    win.reset(crashed=False)
    assert win.limit(0, 10**6) == w.START


def test_a_share_of_the_window_is_kept_for_new_requests():
    win = Window()
    settle(win, 8)
    assert win.limit(0, 10**6) == 16 and win.backlog_limit(0, 10**6) == 12
    win.reset(crashed=True)
    assert win.backlog_limit(0, 10**6) == 1  # a tiny window is shared: the backlog still moves
