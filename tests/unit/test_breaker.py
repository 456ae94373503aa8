"""The circuit breaker, on a fake clock."""

from __future__ import annotations

import threading

import pytest

from koji_messagebus.delivery.breaker import MAX_FACTOR, CircuitBreaker


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def test_closed_lets_every_caller_try(clock):
    br = CircuitBreaker(30, clock)
    assert [br.acquire() for _ in range(3)] == ["normal"] * 3
    assert not br.is_open and br.seconds_left() == 0


def test_open_refuses_until_the_interval_then_one_probe(clock):
    br = CircuitBreaker(30, clock)
    assert br.failure("boom") == 30
    assert br.is_open and br.last_error == "boom"
    clock.now += 29.9
    assert br.acquire() is None
    assert br.seconds_left() == pytest.approx(0.1)
    clock.now += 0.1
    assert br.acquire() == "probe"
    assert br.acquire() is None  # only one probe at a time
    br.success()
    assert not br.is_open and br.last_error == ""
    assert br.acquire() == "normal"


def test_backoff_doubles_and_is_capped_at_ten_times(clock):
    br = CircuitBreaker(30, clock)
    intervals = []
    for _ in range(8):
        intervals.append(br.failure("down"))
        clock.now = br.retry_at
        assert br.acquire() == "probe"
    assert intervals == [30, 60, 120, 240, 300, 300, 300, 300]
    assert max(intervals) == 30 * MAX_FACTOR
    assert br.interval(10_000) == 300  # no overflow after a very long outage


def test_success_resets_the_backoff(clock):
    br = CircuitBreaker(1, clock)
    br.failure("a")
    br.failure("b")
    br.success()
    assert br.failure("c") == 1


def test_a_probe_that_gives_back_its_turn(clock):
    br = CircuitBreaker(5, clock)
    br.failure("x")
    clock.now += 5
    assert br.acquire() == "probe"
    br.release("probe")
    assert br.acquire() == "probe"
    br.release(None)  # a non-probe release changes nothing
    assert br.acquire() is None


def test_a_probe_that_never_reports_back_expires(clock):
    br = CircuitBreaker(5, clock, probe_timeout=60)
    br.failure("x")
    clock.now += 5
    assert br.acquire() == "probe"
    clock.now += 59
    assert br.acquire() is None
    clock.now += 1
    assert br.acquire() == "probe"


def test_failure_ends_the_probe_and_reopens(clock):
    br = CircuitBreaker(2, clock)
    br.failure("x")
    clock.now += 2
    assert br.acquire() == "probe"
    assert br.failure("y") == 4
    assert br.acquire() is None
    clock.now += 4
    assert br.acquire() == "probe"


def test_one_probe_among_many_threads(clock):
    br = CircuitBreaker(1, clock)
    br.failure("x")
    clock.now += 1
    roles = []
    barrier = threading.Barrier(16)

    def worker():
        barrier.wait()
        roles.append(br.acquire())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert roles.count("probe") == 1 and roles.count(None) == 15
