"""SendResult: what one send came to, as the outbox drain takes it."""

from __future__ import annotations

from koji_messagebus.delivery.result import SendResult
from tests.support.fakebroker import msgs


def test_send_result_adapters():
    a, b, c = msgs("a", "b", "c")
    result = SendResult(accepted=[a], lost=[(b, "rejected")], unsent=[c])
    assert result.done == [a, b]
    assert result.split() == ([a, b], [c])
