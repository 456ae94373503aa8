"""The hostile corpus (tests/support/hostile.py) end to end, through the plugin loaded as the hub loads it,
with and without the outbox, on the real PostgreSQL and RabbitMQ 3.10 (read back with pika).

For every case: no exception out of any callback (koji's run_callbacks neither raises nor logs
"Error running ... callback"), the hub's own row committed, and the message either delivered
once with a routing key of the type's constant token count and matching its type's JSON Schema
(or, for input no hub passes, `hostile.off_contract`, missing it), or logged at ERROR with its
type, routing key and reason; lossy conversions logged in one WARNING per message.
"""

from __future__ import annotations

import logging
import time

import koji.plugin
import pytest

from devkit.amqp091 import _decode_section
from koji_messagebus.format.codec import decode_value
from koji_messagebus.format.messages import CALLBACK_TYPES, format_event
from tests.support import contract, hostile
from tests.support.hub import Hub, dml, load_plugin, unload_plugin
from tests.support.outbox_db import connect_db, sql
from tests.support.pika_consumer import Consumer

pytestmark = pytest.mark.integration

CASES = hostile.cases()
#: cases whose conversion is lossy in the key or the headers: one WARNING naming it (issue 21)
WARNED = {"nul-in-name", "bytes-as-name", "bytearray-as-name", "undecodable-bytes-name", "tag-is-int",
          "user-is-str", "mapping-get-raises", "dict-subclass-raises", "systemexit-repr-value",
          "systemexit-repr-name", "lone-surrogate-name", "repr-raises-name"}


def arrived(consumer: Consumer, timeout: float = 15.0, quiet: float = 0.3) -> list[tuple[str, dict, object]]:
    """(routing key, headers, body) of each message that arrived; the body decoded by the plugin's
    own decoder (proton's, which tests.support.pika_consumer uses, keeps at most 65,535 values)."""
    out: list[tuple[str, dict, object]] = []
    deadline, settle = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        method, props, body = consumer.ch.basic_get(consumer.queue, auto_ack=True)
        if method is not None:
            raw = (props.headers or {}).get("x-amqp-1.0-app-properties")
            app = _decode_section(raw) if raw else {}
            headers = dict(getattr(app, "value", app) or {})
            out.append((method.routing_key, headers, decode_value(body)[0]))
            continue
        if out:
            settle = settle or time.monotonic() + quiet
            if time.monotonic() >= settle:
                break
        consumer.conn.sleep(0.02)
    return out


def tokens(cbtype: str) -> int:
    """The token count of the type's routing key, from a real recorded call."""
    return len(format_event(CALLBACK_TYPES[cbtype], hostile.base(cbtype), "koji.event").routing_key.split("."))


@pytest.fixture
def hub(monkeypatch, conf_file, db, exchange_name):
    made: list[tuple[Hub, Consumer]] = []

    def make(outbox_on: bool):
        # unsigned_rpm_sign: an RPMSign whose sigkey is hostile (None, missing) is sent too (~none~), not skipped
        monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf_file(outbox={"enabled": outbox_on},
                                                               topic={"unsigned_rpm_sign": True}))
        consumer = Consumer(exchange_name)
        load_plugin()
        made.append((Hub(connect_db()), consumer))
        return made[-1]

    yield make
    unload_plugin()
    for h, c in made:
        h.close()
        c.close()


@pytest.mark.parametrize("outbox_on", [False, True], ids=["direct", "outbox"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case, outbox_on, hub, caplog):
    caplog.set_level(logging.DEBUG, logger="koji.plugin")
    h, consumer = hub(outbox_on)
    raised: list[BaseException] = []

    def handler(cur):
        dml("INSERT INTO hub_rows (note) VALUES (%(n)s)", {"n": case.name})
        try:
            koji.plugin.run_callbacks(case.cbtype, **case.make())
        except Exception as exc:  # noqa: BLE001 - counted: none may escape
            raised.append(exc)

    h.request(handler)
    escaped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Error running")]
    assert raised == [] and escaped == [], f"exception out of a callback: {raised or escaped}"
    assert [r[0] for r in sql("SELECT note FROM hub_rows")] == [case.name], "the hub's transaction was harmed"
    got = arrived(consumer)
    msg_type = CALLBACK_TYPES[case.cbtype]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
              and r.name.startswith("koji.plugin.messagebus") and "values converted" in r.getMessage()]
    assert len(warned) <= 1, f"conversions logged more than once: {warned}"
    if case.name in WARNED:
        assert len(warned) == 1 and warned[0].startswith(f"messagebus: {msg_type} koji.event."), warned
    if got:
        assert len(got) == 1, f"delivered {len(got)} times"
        key, headers, body = got[0]
        assert headers.get("type") == msg_type
        problems = contract.problems(key, headers, body)
        if hostile.off_contract(case.name):
            assert problems, "input no hub passes, yet the message matches its schema: hostile.off_contract is wrong"
        else:
            assert not problems, f"does not match the {msg_type} schema: {'; '.join(map(str, problems))}"
        assert len(key.split(".")) == tokens(case.cbtype), f"routing key {key!r}: token count"
        assert "None" not in key.split("."), f"routing key {key!r}: a missing name became 'None'"
        return
    errors = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.ERROR and r.name.startswith("koji.plugin.messagebus")]
    assert any(msg_type in e and "koji.event." in e for e in errors), \
        f"not delivered and not logged with its type and key: {errors}"
