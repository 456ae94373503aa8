"""The spool (koji_messagebus/spool.py): durable files of the messages a process held at exit,
claimed atomically, sent byte for byte by the next process after it connects (against the scripted
broker of tests/support/fakebroker.py), `spool flush`, and what `status` shows."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from devkit.config import make_config, until
from koji_messagebus.cli import metrics
from koji_messagebus.delivery import spool
from koji_messagebus.delivery.handoff import Delivery
from koji_messagebus.delivery.result import SendResult
from koji_messagebus.delivery.sender import SenderThread
from koji_messagebus.format.wire import Outgoing
from tests.support.fakebroker import FakeBroker, msgs


def binary(*ids: str) -> list[Outgoing]:
    """Messages whose payloads hold every byte value (base64 must carry them unchanged)."""
    return [Outgoing(i, 1700000000.25, "Tag", f"koji.event.Tag.{i}", i.encode() + bytes(range(256))) for i in ids]


@pytest.fixture
def delivery(tmp_path):
    made = []

    def make(broker: FakeBroker, **opts) -> Delivery:
        cfg = make_config(tmp_path, **{"timeout": 0.5, **opts})
        d = Delivery(cfg, sender=SenderThread(cfg, pipe=broker.pipe, connect=broker.connection))
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def test_a_written_file_is_read_back_byte_for_byte_with_its_ids(tmp_path):
    sp = spool.Spool(str(tmp_path / "spool"))
    sent = binary("a", "b")
    path = sp.write(sent)
    assert os.path.basename(path).endswith(f"-{os.getpid()}-2.spool")
    assert oct(os.stat(path).st_mode & 0o777) == oct(spool.FILE_MODE)
    assert oct(os.stat(sp.directory).st_mode & 0o777) == oct(spool.DIR_MODE)
    assert [n for n in os.listdir(sp.directory) if n.startswith(".")] == []  # no temporary file left
    files, count, oldest = sp.summary()
    assert (files, count) == (1, 2) and oldest is not None and abs(time.time() - oldest) < 60
    claim = sp.claim()
    assert claim is not None and claim.messages == sent
    assert f"{spool.CLAIMED}{os.getpid()}-" in claim.path and not os.path.exists(path)
    assert sp.claim() is None  # ours already
    sp.done(claim)
    assert sp.summary() == (0, 0, None)


def test_a_live_claim_is_left_alone_and_a_dead_one_taken_over(tmp_path):
    sp = spool.Spool(str(tmp_path / "spool"))
    sp.write(msgs("a"))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = spool.Spool(sp.directory, pid=lambda: child.pid).claim()
        assert theirs is not None and f"{spool.CLAIMED}{child.pid}-" in theirs.path
        assert sp.claim() is None  # another live process holds it
    finally:
        child.kill()
        child.wait()
    mine = sp.claim()
    assert mine is not None and [m.msg_id for m in mine.messages] == ["a"]
    assert f"{spool.CLAIMED}{os.getpid()}-" in mine.path


def test_names_that_are_not_spool_files_are_ignored(tmp_path):
    d = tmp_path / "spool"
    d.mkdir()
    for name in (".1-2-3.spool.tmp", "notes.txt", "1-2.spool", "a-b-c.spool", "1-2-3.spool.claimed-x"):
        (d / name).write_text("x")
    assert spool.Spool(str(d)).entries() == []
    assert spool.Spool(str(tmp_path / "missing")).summary() == (0, 0, None)


def test_an_unreadable_file_is_left_and_named(tmp_path, caplog):
    d = tmp_path / "spool"
    d.mkdir()
    (d / "1000-1-1.spool").write_text("{not json")
    with caplog.at_level(logging.ERROR, logger="koji.plugin.messagebus"):
        assert spool.Spool(str(d)).claim() is None
    assert any("cannot be read" in r.getMessage() for r in caplog.records)
    assert len(os.listdir(d)) == 1


def test_exit_with_the_broker_down_spools_and_the_next_process_sends_them(delivery, caplog):
    """The point of the spool: a process exits holding messages; the next process sends them after
    its own connect, byte for byte, each once, and deletes the file."""
    held = binary("a", "b", "c")
    down = FakeBroker(down=True)
    first = delivery(down)
    first.post_commit(held, None, None)
    with caplog.at_level(logging.WARNING, logger="koji.plugin.messagebus"):
        first.shutdown(0.3)
    assert not [r for r in caplog.records if "lost at process exit" in r.getMessage()]
    sp = spool.Spool(first.config.broker.spool_dir)
    assert sp.summary()[:2] == (1, 3)

    up = FakeBroker()
    second = delivery(up)
    second.post_commit(msgs("request"), None, None)
    resender = second.spool
    assert resender is not None
    assert until(lambda: len(up.received) == 4 and sp.summary()[0] == 0 and resender.sent == 3, 5.0)
    assert up.received[0] == b"request"  # the request's own message went first
    assert up.received[1:] == [m.payload for m in held]


def test_a_process_exiting_before_its_claim_is_sent_spools_the_rest(delivery, tmp_path):
    """Claimed but not settled at exit: the unsent go to the exiting process's own file, and the
    claimed file is deleted (nothing sent twice, nothing lost)."""
    sp = spool.Spool(str(tmp_path / "spool"))
    sp.write(msgs(*[f"m{i}" for i in range(250)]))
    held_broker = FakeBroker(hold=True)  # the broker takes nothing before exit
    d = delivery(held_broker)
    d.post_commit(msgs("request"), None, None)
    assert d.spool is not None
    assert until(lambda: any(spool.CLAIMED in e.path for e in sp.entries()), 5.0)
    d.shutdown(0.3)
    entries = sp.entries()
    assert len(entries) == 1 and entries[0].claimer is None
    again = sp.claim()
    assert again is not None
    ids = [m.msg_id for m in again.messages]
    delivered = [p.decode() for p in held_broker.received]  # the quarantine's own connection may take one
    assert sorted(ids + delivered) == sorted(["request"] + [f"m{i}" for i in range(250)])


def test_without_a_spool_the_exit_logs_one_error_with_the_reason(delivery, tmp_path, caplog):
    d = delivery(FakeBroker(down=True), spool_dir="")
    d.post_commit(msgs("a", "b"), None, None)
    with caplog.at_level(logging.ERROR, logger="koji.plugin.messagebus"):
        d.shutdown(0.3)
    lost = [r.getMessage() for r in caplog.records if "lost at process exit" in r.getMessage()]
    assert len(lost) == 1 and "2 message(s) (Tag x2)" in lost[0] and "spool_dir is empty" in lost[0]


def test_an_unwritable_spool_falls_back_to_the_error_line(delivery, tmp_path, caplog):
    (tmp_path / "afile").write_text("")
    d = delivery(FakeBroker(down=True), spool_dir=tmp_path / "afile" / "spool")
    d.post_commit(msgs("a"), None, None)
    with caplog.at_level(logging.ERROR, logger="koji.plugin.messagebus"):
        d.shutdown(0.3)
    lost = [r.getMessage() for r in caplog.records if "lost at process exit" in r.getMessage()]
    assert len(lost) == 1 and "cannot write to the spool" in lost[0]


def test_flush_sends_every_file_and_writes_back_what_is_left(tmp_path):
    sp = spool.Spool(str(tmp_path / "spool"))
    sp.write(msgs("a", "b"))
    sp.write(msgs("c"))
    got: list[str] = []
    assert spool.flush(sp, lambda ms: (got.extend(m.msg_id for m in ms), SendResult(accepted=list(ms)))[1]) \
        == (2, 3, 0)
    assert got == ["a", "b", "c"] and sp.summary()[0] == 0
    sp.write(msgs("d", "e"))
    assert spool.flush(sp, lambda ms: SendResult(accepted=ms[:1], unsent=ms[1:])) == (0, 1, 1)
    left = sp.claim()
    assert left is not None and [m.msg_id for m in left.messages] == ["e"]


def test_status_shows_the_spool_and_an_old_one_is_degraded():
    old = metrics.SpoolFigures("/var/spool/koji-messagebus", files=2, messages=7, oldest=600.0)
    report = metrics.Report([], metrics.OutboxFigures(enabled=False), time.time(), 60.0, "/run/x", spool=old).judge()
    text = metrics.render_text(report)
    assert "spool (/var/spool/koji-messagebus): 7 message(s) in 2 file(s), the oldest written 600s ago" in text
    assert report.code == metrics.DEGRADED and any("the spool holds 7" in r for r in report.reasons)
    assert "koji_messagebus_spool_messages 7" in metrics.render_prometheus(report)
    assert '"messages": 7' in metrics.render_json(report)


def test_the_package_creates_the_default_spool_directory_for_the_httpd_user():
    from koji_messagebus import resources
    from koji_messagebus.config.options import OPTIONS

    (default,) = [o.default for o in OPTIONS if (o.section, o.key) == ("broker", "spool_dir")]
    assert default == "/var/spool/koji-messagebus"
    assert f"d {default} 0750 apache apache -" in resources.read(resources.TMPFILES)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "koji-messagebus.spec")) as fh:
        spec = fh.read()
    assert "%dir %attr(0750, apache, apache) %{_localstatedir}/spool/koji-messagebus" in spec


def test_files_written_in_the_same_millisecond_keep_their_order(tmp_path, monkeypatch):
    """Two writes in one millisecond (a flush writing back, a test) with different counts: the
    second must not sort before the first (their names once differed only by the count)."""
    monkeypatch.setattr(spool.time, "time", lambda: 1_700_000_000.0)
    sp = spool.Spool(str(tmp_path / "spool"))
    sp.write(msgs("a", "b"))
    sp.write(msgs("c"))
    assert [e.count for e in sp.entries()] == [2, 1]


def test_threads_of_one_process_spooling_at_once_get_a_file_each(tmp_path, monkeypatch):
    """Requests ending during a process's exit spool from several hub threads at once (a CI run
    lost one: `File exists`, two threads had picked the same name in the same millisecond)."""
    import threading

    monkeypatch.setattr(spool.time, "time", lambda: 1796439471.678)  # one millisecond for both
    both = threading.Barrier(2, timeout=5)

    def pid() -> int:
        both.wait()  # both threads past the clock read before either names its file
        return os.getpid()

    store = spool.Spool(str(tmp_path / "spool"), pid=pid)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            store.write(msgs(f"m{n}"))
        except BaseException as exc:  # noqa: BLE001 - recorded, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors and store.summary()[:2] == (2, 2)
