"""The per-process status files: written only when a figure changed, at most every WRITE_EVERY,
atomically; removed on a clean exit; a dead process's file shown as gone and removed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from koji_messagebus.config.settings import load_config
from koji_messagebus.delivery import status
from koji_messagebus.delivery.sender import SenderThread
from koji_messagebus.delivery.status import StatusFile, Waits, read_processes
from tests.support.fakebroker import FakeBroker, msgs


def make_config(tmp_path):
    path = tmp_path / "messagebus.conf"
    path.write_text("[broker]\nhost = 127.0.0.1\nport = 5999\nusername = u\npassword = p\ntimeout = 1\n"
                    "connect_timeout = 0.2\nretry_interval = 0.5\n[exchange]\nname = x\n")
    path.chmod(0o600)
    return load_config(str(path))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counting(directory, clock):
    writes = []

    def snapshot():
        writes.append(clock())
        return {"pid": os.getpid(), "state": "up", "proc_start": status.proc_start(os.getpid())}

    return StatusFile(str(directory), snapshot, clock), writes


def test_written_once_per_change_and_at_most_every_write_every(tmp_path):
    clock = Clock()
    sf, writes = counting(tmp_path / "st", clock)
    sf.tick(("a",))
    assert len(writes) == 1 and sf.wake_in() is None
    sf.tick(("a",))
    clock.now += 100
    sf.tick(("a",))
    assert len(writes) == 1  # nothing changed: nothing written, however long
    clock.now += 0.5
    sf.tick(("b",))
    assert len(writes) == 2  # the last write was long ago
    clock.now += 0.5
    sf.tick(("c",))
    assert len(writes) == 2 and sf.wake_in() == pytest.approx(status.WRITE_EVERY - 0.5)
    clock.now += status.WRITE_EVERY
    sf.tick(("c",))
    assert len(writes) == 3 and sf.wake_in() is None


def test_the_file_is_replaced_atomically_in_a_0750_directory(tmp_path):
    directory = tmp_path / "run" / "koji-messagebus"
    sf, _ = counting(directory, Clock())
    sf.tick(1)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o750
    assert os.listdir(directory) == [f"{os.getpid()}.json"]  # no temporary file left
    assert json.loads((directory / f"{os.getpid()}.json").read_text())["state"] == "up"


def test_an_unwritable_directory_is_told_once_and_retried_later(tmp_path, caplog):
    clock = Clock()
    blocker = tmp_path / "file"
    blocker.write_text("")
    sf, _ = counting(blocker / "sub", clock)
    for key in range(5):
        sf.tick(key)
        clock.now += status.WRITE_EVERY
    warnings = [r for r in caplog.records if "cannot write the status file" in r.getMessage()]
    assert len(warnings) == 1 and "[status] dir" in warnings[0].getMessage()
    assert sf.wake_in() is not None and sf.wake_in() > status.WRITE_EVERY  # backs off RETRY_AFTER


def test_only_the_writing_process_removes_its_file(tmp_path):
    sf, _ = counting(tmp_path, Clock())
    sf.tick(1)
    path = tmp_path / f"{os.getpid()}.json"
    sf.remove(os.getpid() + 1)  # a forked child's atexit: not its file
    assert path.exists()
    sf.remove()
    assert not path.exists()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_dead_process_is_shown_gone_and_its_file_removed(tmp_path):
    me = os.getpid()
    (tmp_path / f"{me}.json").write_text(json.dumps({"state": "up", "proc_start": status.proc_start(me)}))
    gone = dead_pid()
    (tmp_path / f"{gone}.json").write_text(json.dumps({"state": "up"}))
    (tmp_path / ".123.tmp").write_text("{}")  # a writer's temporary file: not a process
    found = {p.pid: p for p in read_processes(str(tmp_path))}
    assert set(found) == {me, gone}
    assert not found[me].gone and found[me].connected
    assert found[gone].gone and not found[gone].connected
    assert not (tmp_path / f"{gone}.json").exists() and (tmp_path / f"{me}.json").exists()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_a_reused_pid_is_gone(tmp_path):
    me = os.getpid()
    (tmp_path / f"{me}.json").write_text(json.dumps({"state": "up", "proc_start": "1"}))  # started at boot
    (found,) = read_processes(str(tmp_path))
    assert found.gone


def test_a_missing_directory_means_no_process(tmp_path):
    assert read_processes(str(tmp_path / "none")) == []


def test_request_wait_quantiles_over_the_last_minute():
    clock = Clock()
    waits = Waits(clock)
    assert waits.quantiles() == (None, None)
    for ms in range(1, 101):
        waits.add(ms / 1000)
    assert waits.quantiles() == (pytest.approx(0.051), pytest.approx(0.1))
    clock.now += status.WAIT_WINDOW + 1
    waits.add(0.5)
    assert waits.quantiles() == (0.5, 0.5)  # the older ones fell out of the window
    assert waits.count == 101


def test_the_sender_thread_writes_its_figures_and_removes_them_on_close(tmp_path):
    broker = FakeBroker()
    sender = SenderThread(make_config(tmp_path), pipe=broker.pipe, connect=broker.connection)
    directory = tmp_path / "status"
    sender.status = StatusFile(str(directory), lambda: status.snapshot(sender))
    path = directory / f"{os.getpid()}.json"
    try:
        result = sender.send(msgs("a", "b", "c"))
        assert len(result.accepted) == 3

        def figures():
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                return {}
        deadline = time.monotonic() + 10
        while figures().get("published") != 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        data = figures()
        assert data["published"] == 3 and data["lost"] == 0 and data["held"] == 0
        assert data["state"] == "up" and data["pid"] == os.getpid() and data["broker"]
        written = path.stat().st_mtime_ns
        sender.loop.status_tick()  # nothing changed: the file stays as it is
        assert path.stat().st_mtime_ns == written
    finally:
        sender.close()
    assert not path.exists()


def test_an_unreadable_status_directory_is_a_clear_error(tmp_path, capsys):
    from koji_messagebus.cli import main

    directory = tmp_path / "st"
    directory.write_text("")  # not a directory (as root, a mode 000 directory would still be read)
    conf = tmp_path / "messagebus.conf"
    conf.write_text(f"[broker]\nauth = ANONYMOUS\n[status]\ndir = {directory}\n")
    assert main(["--config", str(conf), "status"]) == 2
    assert f"cannot read the hub processes' status directory {directory}" in capsys.readouterr().err


def test_a_forked_child_reports_its_own_figures(tmp_path):
    broker = FakeBroker()
    sender = SenderThread(make_config(tmp_path), pipe=broker.pipe, connect=broker.connection)
    try:
        assert len(sender.send(msgs("a", "b")).accepted) == 2
        read_r, read_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: the parent's counters are not its own
            try:
                sender.send(msgs("c"))
                figures = status.snapshot(sender)
                os.write(read_w, json.dumps([figures["published"], figures["pid"]]).encode())
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        published, child = json.loads(os.read(read_r, 1000))
        assert child == pid and published == 1
        assert status.snapshot(sender)["published"] == 2
    finally:
        sender.close()


def test_the_command_writes_prometheus_text_atomically_to_a_file(tmp_path, capsys):
    from koji_messagebus.cli import main

    directory = tmp_path / "st"
    directory.mkdir()
    me = os.getpid()
    (directory / f"{me}.json").write_text(json.dumps({"state": "up", "published": 7, "lost": 0, "held": 0,
                                                       "proc_start": status.proc_start(me)}))
    conf = tmp_path / "messagebus.conf"
    conf.write_text(f"[broker]\nauth = ANONYMOUS\n[status]\ndir = {directory}\n")
    target = tmp_path / "textfile" / "koji_messagebus.prom"
    target.parent.mkdir()
    assert main(["--config", str(conf), "status", "--format", "prometheus", "--output", str(target)]) == 0
    text = target.read_text()
    assert f'koji_messagebus_published_total{{pid="{me}"}} 7\n' in text and text.endswith("\n")
    assert os.listdir(target.parent) == ["koji_messagebus.prom"]  # no temporary file left
    assert capsys.readouterr().out == ""
    assert main(["--config", str(conf), "status", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["processes"][0]["published"] == 7
