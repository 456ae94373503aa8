"""Unit-test fixtures: the scripted broker (tests/support/fakebroker.py) and sender threads on it."""

from __future__ import annotations

import pytest

from devkit.config import make_config, until
from koji_messagebus.delivery.sender import SenderThread
from tests.support.fakebroker import FakeBroker, msgs


@pytest.fixture
def broker():
    """A unit test's broker is the scripted one (the real ones are the integration tests')."""
    return FakeBroker()


@pytest.fixture
def sender(tmp_path, broker):
    """Makes sender threads on `broker` (keywords: SenderThread's, `broker_opts` for the config);
    closes them after the test."""
    made = []

    def make(**kw) -> SenderThread:
        kw.setdefault("pipe", broker.pipe)
        s = SenderThread(make_config(tmp_path, **kw.pop("broker_opts", {})), connect=broker.connection, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def idle_sender(sender):
    """Makes a sender on `pipe` whose connection is warm (one message settled) and idle (the
    thread waits in select()): where a request may take the leader path (delivery/leader.py)."""
    def make(pipe) -> SenderThread:
        s = sender(pipe=pipe)
        assert s.send(msgs("warm")).accepted
        assert until(lambda: s.shared.waiting)
        return s
    return make
