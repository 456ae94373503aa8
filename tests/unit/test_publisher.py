"""The synchronous publisher's policy (failover, one resend, the breaker), against a scripted broker."""

from __future__ import annotations

from devkit.config import make_config
from koji_messagebus.amqp import BrokerError, Kind
from koji_messagebus.config.sections import Endpoint
from koji_messagebus.delivery.breaker import Role
from koji_messagebus.delivery.publisher import Publisher
from koji_messagebus.delivery.result import SendResult
from tests.support.fakebroker import FakeBroker, FakeConnection, msgs


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_sends_on_one_warm_connection(tmp_path):
    broker = FakeBroker()
    pub = Publisher(make_config(tmp_path), connect=broker.connection)
    for i in range(3):
        result = pub.send(msgs(f"m{i}"))
        assert [m.msg_id for m in result.accepted] == [f"m{i}"] and result.tried and result.error is None
    assert broker.connects == 1 and pub.attempts == 3


def test_fails_over_to_the_next_url_and_says_so(tmp_path, caplog):
    seen = []

    class Broker(FakeBroker):
        def connect(self, endpoint: Endpoint) -> None:
            seen.append(endpoint.port)
            if endpoint.port == 5998:
                raise BrokerError(Kind.UNREACHABLE, "first host down")

    broker = Broker()
    cfg = make_config(tmp_path, urls="amqp://127.0.0.1:5998 amqp://127.0.0.1:5997")
    pub = Publisher(cfg, connect=broker.connection)
    assert pub.send(msgs("a")).accepted
    assert seen == [5998, 5997] and pub.endpoint.endswith("5997")
    assert any("connected to" in r.getMessage() and "first host down" in r.getMessage() for r in caplog.records)


def test_a_final_error_stops_the_failover(tmp_path):
    broker = FakeBroker(down=True, down_kind=Kind.NOT_FOUND)
    cfg = make_config(tmp_path, urls="amqp://127.0.0.1:5998 amqp://127.0.0.1:5997")
    result = Publisher(cfg, connect=broker.connection).send(msgs("a"))
    assert broker.attempts == 1 and result.error is not None and result.error.kind == Kind.NOT_FOUND
    assert [m.msg_id for m in result.unsent] == ["a"]


def test_a_lost_connection_is_resent_once_on_a_new_one(tmp_path):
    class Flaky(FakeConnection):
        def send(self, batch, deadline):
            if self.broker.connects == 1:  # the first connection dies after the first message
                out = super().send(batch[:1], deadline)
                out.unsettled = batch[1:]
                out.error = self._error = BrokerError(Kind.CONNECTION_LOST, "cut")
                return out
            return super().send(batch, deadline)

    broker = FakeBroker()
    pub = Publisher(make_config(tmp_path), connect=lambda cfg, ep: Flaky(broker, ep))
    result = pub.send(msgs("a", "b", "c"))
    assert [m.msg_id for m in result.accepted] == ["a", "b", "c"] and result.error is None
    assert broker.connects == 2 and broker.received == [b"a", b"b", b"c"]


def test_the_breaker_opens_after_a_failure_and_answers_at_once(tmp_path):
    clock = Clock()
    broker = FakeBroker(down=True)
    pub = Publisher(make_config(tmp_path, retry_interval=30), clock=clock, connect=broker.connection)
    first = pub.send(msgs("a"))
    assert first.tried and first.unsent and broker.attempts == 1
    second = pub.send(msgs("b"))
    assert not second.tried and second.error.kind == Kind.BREAKER_OPEN and broker.attempts == 1
    assert pub.breaker.acquire() is None
    clock.now += 30
    broker.down = False
    assert pub.breaker.acquire() == Role.PROBE
    pub.breaker.release(Role.PROBE)
    assert pub.send(msgs("c")).accepted and not pub.breaker.is_open


def test_send_result_adapters():
    a, b, c = msgs("a", "b", "c")
    result = SendResult(accepted=[a], lost=[(b, "rejected")], unsent=[c])
    assert result.done == [a, b]
    assert result.split() == ([a, b], [c])
