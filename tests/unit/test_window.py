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


def test_the_backlog_is_paced_by_how_fast_the_broker_settles_new_requests_are_not():
    win = Window()
    settle(win, 200, 0.002)  # prompt: the window and the backlog's pace grow together
    assert win.backlog_limit(0, 10**6) > 100
    for _ in range(300):  # settlements slower than PACE_DELAY: a queue at the broker, behind which new requests wait
        win.settled(w.PACE_DELAY * 3, 150)
    assert win.backlog_limit(0, 10**6) == w.PACE_MIN
    assert win.limit(0, 10**6) > 150  # new requests still have the whole window


def test_a_broker_slow_by_nature_is_not_held_back_once_its_fastest_settlement_is_slow_too():
    win = Window()
    now = 1000.0
    for _ in range(50):
        now += 0.01
        win.settled(0.002, 8, now)  # a fast broker first
    for _ in range(100):  # then every settlement takes 1-2 s (the fault proxy's slow broker)
        now += 0.05
        win.settled(1.5, 8, now)
    assert win.backlog_limit(0, 10**6) == w.PACE_MIN  # at first: as for a queue at the broker
    for _ in range(400):  # BASE_MEMORY later, 1-2 s is what this broker takes: twice the fastest is prompt
        now += 0.05
        win.settled(1.5, int(win.paced), now)
    assert win.paced > 100  # the pace holds nothing back: the backlog has the window less the new requests' share
    assert win.backlog_limit(0, 10**6) == win.limit(0, 10**6) - int(win.size) // w.FRESH_SHARE
