"""A command's sender (cli/command_sender.py): the hub's sender thread, connected at the first
send, the command's own error instead of the thread's background line, and no thread left."""

from __future__ import annotations

import logging
import time

from devkit.config import make_config
from koji_messagebus.amqp import Kind
from koji_messagebus.cli.command_sender import CommandSender
from koji_messagebus.delivery.sender import SenderThread
from tests.support.fakebroker import FakeBroker, msgs


def command_sender(tmp_path, broker: FakeBroker, **kw) -> CommandSender:
    config = make_config(tmp_path, **kw)
    return CommandSender(config, SenderThread(config, pipe=broker.pipe, connect=broker.connection))


def test_sends_through_the_sender_thread_and_leaves_no_thread(tmp_path):
    broker = FakeBroker()
    with command_sender(tmp_path, broker) as cs:
        assert cs.connect().endpoint.port == 5999 and broker.connects == 1
        result = cs.send(msgs("a", "b", "c"))
        thread = cs.sender.loop.thread
    assert [m.msg_id for m in result.accepted] == ["a", "b", "c"] and not result.unsent and not result.kept
    assert broker.received == [b"a", b"b", b"c"] and broker.connects == 1
    assert thread is not None and not thread.is_alive()


def test_nothing_to_send_touches_no_broker(tmp_path):
    broker = FakeBroker()
    with command_sender(tmp_path, broker):
        pass
    assert broker.attempts == 0


def test_a_broker_that_refuses_is_the_commands_error_said_once(tmp_path, caplog):
    broker = FakeBroker(down=True, down_kind=Kind.AUTH)
    caplog.set_level(logging.DEBUG)
    start = time.monotonic()
    with command_sender(tmp_path, broker) as cs:
        first = cs.send(msgs("a"))
        second = cs.send(msgs("b"))
    assert time.monotonic() - start < 3  # connect_timeout 0.2 + timeout 1.0, then at once
    assert first.error is not None and first.error.kind == Kind.AUTH and [m.msg_id for m in first.unsent] == ["a"]
    assert second.error is first.error and [m.msg_id for m in second.unsent] == ["b"]
    assert not first.kept  # the command keeps its rows (Hold.LOCKED): nothing stays with the thread
    assert not [r for r in caplog.records if "broker unavailable" in r.getMessage()]  # printed by the command


def test_a_connect_that_never_ends_is_a_timeout(tmp_path):
    class SilentBroker(FakeBroker):
        def connect(self, endpoint):
            time.sleep(2)  # a host that never answers, past connect_timeout + timeout
            super().connect(endpoint)

    with command_sender(tmp_path, SilentBroker(), timeout=0.3) as cs:
        result = cs.send(msgs("a"))
    assert result.error is not None and result.error.kind == Kind.TIMEOUT and "while connecting" in str(result.error)


def test_a_connection_lost_under_the_messages_is_the_commands_error_not_a_timeout(tmp_path):
    """RabbitMQ 3.x refuses a denied exchange at the first message, closing the connection: the
    command says that, rather than that the broker did not settle in time."""
    broker = FakeBroker(poison={b"p"})
    with command_sender(tmp_path, broker, timeout=0.5) as cs:
        result = cs.send(msgs("p"))
    assert [m.msg_id for m in result.unsent] == ["p"]
    assert result.error is not None and "ended the session" in str(result.error), result.error


def test_a_command_waits_for_a_slow_broker_up_to_timeout(tmp_path):
    """A hub request stops waiting once the broker is quiet (~1 s); a command's batch waits up to
    [broker] timeout for it: a slow broker is not a dead one, and the rows would be sent again."""
    broker = FakeBroker()
    broker.delay = 1.6  # past the quiet judgement (about a second), within timeout
    cfg = make_config(tmp_path, timeout=4)
    with CommandSender(cfg, SenderThread(cfg, pipe=broker.pipe, connect=broker.connection)) as command:
        result = command.send(msgs("a", "b"))
    assert [m.msg_id for m in result.accepted] == ["a", "b"] and not result.unsent
