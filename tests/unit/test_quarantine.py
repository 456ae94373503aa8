"""The quarantine's probe, the sender's one synchronous send (a warm connection, failover, one resend on a new
connection), against a scripted broker."""

from __future__ import annotations

from devkit.config import make_config
from koji_messagebus.amqp import BatchOutcome, BrokerError, Kind
from koji_messagebus.config.sections import Endpoint
from koji_messagebus.delivery.quarantine import Probe
from tests.support.fakebroker import FakeBroker, FakeConnection, msgs


def test_sends_on_one_warm_connection(tmp_path):
    broker = FakeBroker()
    probe = Probe(make_config(tmp_path), connect=broker.connection)
    for i in range(3):
        result = probe.send(*msgs(f"m{i}"))
        assert [m.msg_id for m in result.accepted] == [f"m{i}"] and result.tried and result.error is None
    assert broker.connects == 1 == probe.connects


def test_fails_over_to_the_next_url_and_says_so(tmp_path, caplog):
    seen = []

    class Broker(FakeBroker):
        def connect(self, endpoint: Endpoint) -> None:
            seen.append(endpoint.port)
            if endpoint.port == 5998:
                raise BrokerError(Kind.UNREACHABLE, "first host down")

    broker = Broker()
    cfg = make_config(tmp_path, urls="amqp://127.0.0.1:5998 amqp://127.0.0.1:5997")
    probe = Probe(cfg, connect=broker.connection)
    assert probe.send(*msgs("a")).accepted
    assert seen == [5998, 5997] and probe.endpoint.endswith("5997")
    assert any("connected to" in r.getMessage() and "first host down" in r.getMessage() for r in caplog.records)


def test_a_final_error_stops_the_failover(tmp_path):
    broker = FakeBroker(down=True, down_kind=Kind.NOT_FOUND)
    cfg = make_config(tmp_path, urls="amqp://127.0.0.1:5998 amqp://127.0.0.1:5997")
    result = Probe(cfg, connect=broker.connection).send(*msgs("a"))
    assert broker.attempts == 1 and result.error is not None and result.error.kind == Kind.NOT_FOUND
    assert [m.msg_id for m in result.unsent] == ["a"]


def test_a_lost_connection_is_resent_once_on_a_new_one(tmp_path):
    class Flaky(FakeConnection):
        def send(self, batch, deadline):
            if self.broker.connects == 1:  # the first connection died before the message (idle)
                out = BatchOutcome(unsettled=list(batch))
                out.error = self._error = BrokerError(Kind.CONNECTION_LOST, "cut")
                return out
            return super().send(batch, deadline)

    broker = FakeBroker()
    probe = Probe(make_config(tmp_path), connect=lambda cfg, ep: Flaky(broker, ep))
    result = probe.send(*msgs("a"))
    assert [m.msg_id for m in result.accepted] == ["a"] and result.error is None
    assert broker.connects == 2 and broker.received == [b"a"]


def test_a_message_that_kills_every_connection_is_unsent_after_one_resend(tmp_path):
    broker = FakeBroker(poison={b"p"})
    probe = Probe(make_config(tmp_path), connect=broker.connection)
    result = probe.send(*msgs("p"))
    assert [m.msg_id for m in result.unsent] == ["p"] and result.error.kind == Kind.CONNECTION_LOST
    assert broker.connects == 2 and not result.accepted


def test_a_refused_message_is_lost_not_unsent(tmp_path):
    broker = FakeBroker(reject={b"r"})
    result = Probe(make_config(tmp_path), connect=broker.connection).send(*msgs("r"))
    assert [(m.msg_id, why) for m, why in result.lost] == [("r", "rejected")] and not result.unsent
    assert result.error is None
