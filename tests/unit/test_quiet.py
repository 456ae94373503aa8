"""The quiet/stall judgement, directly (quiet.py); the sender acting on it is in test_sender.py."""

from __future__ import annotations

from koji_messagebus.amqp import Kind
from koji_messagebus.delivery.quiet import QUIET_MAX, QUIET_MIN, QUIET_STATE, Silence


def test_silence_counts_from_the_last_settlement_or_the_oldest_send_whichever_is_later():
    s = Silence()
    assert s.silence(10.0, None) == 0.0  # idle: nothing to wait for
    s.progress = 4.0
    assert s.silence(10.0, 7.0) == 3.0 and s.silence(10.0, 2.0) == 6.0
    s.blocked_since = 8.0  # new requests wait for credit with nothing in flight
    assert s.silence(10.0, None) == 2.0


def test_quiet_thresholds_follow_the_round_trip_within_their_bounds():
    s = Silence()
    assert s.quiet_after == QUIET_MIN and s.quiet_state_after == QUIET_STATE
    s.rtt = 1.0
    assert s.quiet_after == QUIET_MAX and s.quiet_state_after == 4.0


def test_quiet_once_then_a_settlement_ends_it_and_says_for_how_long():
    s = Silence()
    assert not s.went_quiet(5.0, QUIET_STATE / 2)
    assert s.went_quiet(5.0, QUIET_STATE) and s.quiet and s.quiet_since == 5.0 - QUIET_STATE
    assert not s.went_quiet(6.0, QUIET_STATE * 2)  # already quiet
    error = s.error(7.0, 3.0)
    assert error.kind is Kind.TIMEOUT and f"{7.0 - s.quiet_since:.1f}s" in str(error)
    assert s.settled(7.0, 6.5) == 7.0 - (5.0 - QUIET_STATE)
    assert not s.quiet and s.progress == 7.0
    assert s.settled(8.0, 7.9) is None  # not quiet: nothing to report
