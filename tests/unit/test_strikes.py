"""The poison strikes, directly (strikes.py); the sender's use of them is in test_sender.py."""

from __future__ import annotations

from koji_messagebus.delivery.strikes import MAX_STRIKES, Strikes


def test_strikes_count_per_message_and_a_settlement_forgets_them():
    s = Strikes()
    assert s.strike("a") == 1 and s.strike("a") == 2 and s.strike("b") == 1
    s.forget("a")
    assert s.get("a") == 0 and s.get("b") == 1


def test_only_the_newest_ids_are_remembered():
    s = Strikes(memory=2)
    s.strike("a")
    s.strike("b")
    s.strike("a")  # struck again: now the newest
    s.strike("c")
    assert (s.get("a"), s.get("b"), s.get("c")) == (2, 0, 1)


def test_a_broker_wide_failure_strikes_nobody_and_a_lone_refusal_gives_up_at_max_strikes():
    s = Strikes()
    assert not any(s.failed_alone("a", others_settled=False) for _ in range(MAX_STRIKES + 1))
    assert s.get("a") == 0
    verdicts = [s.failed_alone("a", others_settled=True) for _ in range(MAX_STRIKES)]
    assert verdicts == [False] * (MAX_STRIKES - 1) + [True] and s.get("a") == MAX_STRIKES
