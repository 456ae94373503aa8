"""The plugin in a real Apache httpd + mod_wsgi (Debian's apache2, libapache2-mod-wsgi-py3), the
way Koji hubs run it, against the real PostgreSQL and broker.

Two shapes (scripts/services/apache.sh): prefork with embedded mode and MaxConnectionsPerChild 50,
and daemon mode processes=4 threads=4 maximum-requests=50.  Each case runs a bounded client loop
(tests/apache/harness.py) through child recycling and one of:
- `restarts`: `apachectl graceful` at 1/3 and 2/3 of the calls;
- `outage`: the broker unreachable (fault proxy between httpd and the broker: connections cut,
  new ones refused) from 1/4 to 3/4 of the calls, while children recycle;
- `stop-in-outage`: the broker unreachable from 1/2 of the calls until after `graceful-stop` (the
  exits happen with messages held); then the broker is back, a new httpd serves a few more calls
  and its processes take the rows the dead ones left (outbox);
then `apachectl graceful-stop`.  With the outbox on and off.  Checks: every committed call's
message arrived (lost = 0); nothing rolled back arrived; no duplicates from clean exits; no
outbox rows left behind; every httpd process gone within [broker] timeout of graceful-stop (plus
httpd's own one-second poll); no plugin error in Apache's error log.

Runs with KMB_APACHE=1 (scripts/test.sh has a step of its own for it); needs root (httpd drops
to www-data) and apache.sh's packages; skipped otherwise.  Figures per
case are printed and, with $KMB_APACHE_FIGURES set, appended there as JSON lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import xmlrpc.client
from collections.abc import Iterator

import pytest

from devkit.brokers import target
from devkit.config import write_config
from devkit.faultproxy import FaultProxy
from koji_messagebus.delivery.spool import Spool
from tests.apache import harness
from tests.support.receiver import Receiver

CALLS = 300
THREADS = 4
PAUSE = 0.1  # seconds between one client thread's calls: the loop takes ~10 s, the outage ~5 s
TIMEOUT = 3.0  # [broker] timeout of the hub's plugin
HTTPD_POLL = 1.5  # httpd's parent looks at its children about once a second
AFTER = 20  # stop-in-outage: calls to the restarted httpd
DELIVERY_WAIT = 30.0  # bound on waiting for the consumer (rows of dead processes are taken after ~10 s)

#: Messages held in memory (outbox off) by a process that exits while the broker is down go to the
#: spool ([broker] spool_dir; docs/lifecycle.md) and a later process sends them: lost = 0 either way.
#: The clean exit at process end (issue 16 item 3), where it is missing from the code under test.
CLEAN_EXIT_REASON = ("no clean exit at process end (issue 16 item 3): recycled processes leave settled rows "
                     "(resent) and lose held messages silently")

pytestmark = [
    pytest.mark.skipif(os.environ.get("KMB_APACHE") != "1",
                       reason="KMB_APACHE=1 runs it (its own step in scripts/test.sh: private httpd instances)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: httpd starts as root and runs as www-data"),
    pytest.mark.skipif(shutil.which("apache2") is None and not os.path.exists("/usr/sbin/apache2"),
                       reason="no apache2: run scripts/services/apache.sh"),
]


def clean_exit_available() -> bool:
    """The plugin has its process-exit hook (issue 16 item 3)."""
    from koji_messagebus import plugin

    return callable(getattr(plugin, "shutdown", None))


@contextlib.contextmanager
def running_instance(shape: str, outbox: bool, exchange_name: str, tmp_path
                     ) -> Iterator[tuple[harness.Instance, FaultProxy, Receiver]]:
    """An httpd of the given shape with the instance's hub.conf and messagebus.conf (the broker behind
    a fault proxy, a fresh spool) and a receiver on the exchange; all stopped and removed at the end."""
    harness.reset_schema()
    with contextlib.ExitStack() as stack:
        inst = harness.Instance(shape)
        receiver = Receiver(exchange_name)
        stack.callback(receiver.close)
        t = target()
        proxy = FaultProxy(upstream=(t.host, t.port)).start()
        stack.callback(proxy.stop)
        conf = write_config(tmp_path / "messagebus.conf", exchange_name,
                            broker={"host": "127.0.0.1", "port": proxy.port, "timeout": TIMEOUT,
                                    "connect_timeout": TIMEOUT, "retry_interval": 1,
                                    "spool_dir": inst.fresh_spool()},
                            outbox={"enabled": str(outbox).lower(),
                                    "hub_config": str(inst.dir / "app" / "hub.conf")})
        with open(conf) as fh:
            mb_conf = fh.read()
        stack.callback(inst.remove_app_files)
        inst.write_app_files(f"[hub]\nDBConnectionString = {harness.hub_dsn()}\n", mb_conf)
        stack.callback(inst.stop)
        inst.start()
        yield inst, proxy, receiver


@pytest.fixture(scope="module")
def schema():
    yield harness.SCHEMA
    harness.drop_schema()


@pytest.mark.parametrize("outbox", [True, False], ids=["outbox", "no-outbox"])
@pytest.mark.parametrize("scenario", ["restarts", "outage", "stop-in-outage"])
@pytest.mark.parametrize("shape", ["prefork", "daemon"])
def test_apache(shape, scenario, outbox, schema, exchange_name, tmp_path):
    events: list[str] = []
    with running_instance(shape, outbox, exchange_name, tmp_path) as (inst, proxy, receiver):
        def on_progress(n: int) -> None:
            if scenario == "restarts":
                for at in (CALLS // 3, 2 * CALLS // 3):
                    if n >= at and f"graceful@{at}" not in events:
                        inst.apachectl("graceful")
                        events.append(f"graceful@{at}")
            elif scenario == "outage":
                if n >= CALLS // 4 and "outage" not in events:
                    proxy.set_mode("refuse")
                    proxy.cut()
                    events.append("outage")
                if n >= 3 * CALLS // 4 and "back" not in events:
                    proxy.set_mode("pass")
                    events.append("back")
            elif n >= CALLS // 2 and "outage" not in events:  # stop-in-outage: down until after the stop
                proxy.set_mode("refuse")
                proxy.cut()
                events.append("outage")

        start = time.monotonic()
        ledger = harness.client_loop(inst.url, CALLS, THREADS, on_progress, pause=PAUSE)
        loop_seconds = time.monotonic() - start
        log = ""
        if scenario == "stop-in-outage":
            # the exits happen with the broker down: bounded by timeout; then the broker comes back
            # and a new httpd's processes take the rows of the dead ones (outbox) within seconds
            stop_seconds, processes = inst.graceful_stop()
            log = inst.error_log()
            proxy.set_mode("pass")
            events.append("stopped, back, restarted")
            inst.start()
            more = harness.client_loop(inst.url, AFTER, THREADS, pause=PAUSE, first_seq=CALLS + 1)
            ledger.asked += more.asked
            ledger.ok += more.ok
            ledger.errors += more.errors
        committed = ledger.committed()
        got = receiver.collect(expect=len(committed), timeout=DELIVERY_WAIT, quiet=1.0)
        stop, procs = inst.graceful_stop()
        if scenario != "stop-in-outage":
            stop_seconds, processes = stop, procs
        got += receiver.collect(timeout=2 * TIMEOUT, quiet=1.0)  # whatever the exits sent
        outbox_left = harness.query(f"SELECT count(*) FROM {harness.outbox.TABLE}")[0][0]
        spool_left = Spool(str(inst.dir / "spool")).summary()[1]
        log += inst.error_log()
        logs = os.environ.get("KMB_APACHE_LOGS") or str(tmp_path)
        os.makedirs(logs, exist_ok=True)
        with open(os.path.join(logs, f"error-{shape}-{scenario}-{'outbox' if outbox else 'no-outbox'}.log"), "w") as fh:
            fh.write(log)

    seen = harness.arrivals(got)
    lost = sorted(set(committed) - set(seen))
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    phantoms = sorted(s for s in seen if s not in committed)
    errors = harness.plugin_errors(log, outage=scenario != "restarts")  # no "lost at process exit" either
    reported = harness.reported_lost(log)
    figures = {
        "shape": shape, "scenario": scenario, "outbox": outbox, "calls": len(ledger.asked),
        "committed": len(committed), "client_ok": len(ledger.ok), "client_errors": len(ledger.errors),
        "delivered": len(set(committed) & set(seen)), "lost": len(lost), "reported_lost": reported,
        "spooled": harness.spooled(log), "spool_left": spool_left, "duplicates": duplicates,
        "phantoms": len(phantoms), "hub_processes": len(set(committed.values())),
        "outbox_left": outbox_left, "stop_seconds": round(stop_seconds, 2), "httpd_processes": processes,
        "loop_seconds": round(loop_seconds, 1), "plugin_errors": len(errors),
        "broker_down_lines": log.count(harness.BROKER_DOWN), "events": events, "client_error_sample": ledger.errors[:3],
    }
    print("apache figures:", json.dumps(figures))
    if os.environ.get("KMB_APACHE_FIGURES"):
        with open(os.environ["KMB_APACHE_FIGURES"], "a") as fh:
            fh.write(json.dumps(figures) + "\n")

    # the hub's side: every call answered OK committed; a call may fail only where mod_wsgi cuts it
    # (daemon mode: `apachectl graceful` restarts the daemon processes; a request in flight to them
    # gets a 500, one that finds no daemon socket a 503); such a call counts in the ledger only if it
    # committed, and then must arrive
    assert set(ledger.ok) <= set(committed)
    if shape == "daemon" and scenario == "restarts":
        assert all("500 Internal Server Error" in e or "503 Service Unavailable" in e for e in ledger.errors), \
            ledger.errors[:5]
        assert len(ledger.errors) <= len([e for e in events if e.startswith("graceful")]) * THREADS
    else:
        assert not ledger.errors, ledger.errors[:5]
    assert len(set(committed.values())) > 2, "children did not recycle"
    # never anything rolled back; nothing the plugin logged as an error
    assert not phantoms, phantoms[:10]
    assert not errors, "\n".join(errors[:20])
    assert stop_seconds <= TIMEOUT + HTTPD_POLL, f"an httpd process outlived graceful-stop by {stop_seconds:.1f} s"
    # nothing committed is lost, whatever happened to the processes: outbox rows, or the spool
    assert not lost, f"{len(lost)} of {len(committed)} lost ({reported} reported lost): {lost[:10]}"
    assert not spool_left, f"{spool_left} message(s) left in the spool"
    # what needs the clean exit at process end (issue 16 item 3): no duplicate from a process that
    # ended cleanly.  A duplicate has a cause only where a connection was lost with messages in flight
    # on it: the fault proxy's cut (outage scenarios), or a daemon process that mod_wsgi cut short on
    # `apachectl graceful` (the calls answered 500/503 above).  At most THREADS client requests are in
    # flight at any time, so each hub process can lose the settlements of at most THREADS messages.
    clean = []
    if scenario == "restarts" and shape == "prefork":
        allowed = 0  # every prefork child here ends by MaxConnectionsPerChild or graceful: cleanly
    elif scenario == "restarts":
        allowed = len([e for e in events if e.startswith("graceful")]) * THREADS
    else:
        allowed = len(set(committed.values())) * THREADS
    if duplicates > allowed:
        clean.append(f"{duplicates} duplicates (more than the {allowed} the {scenario} scenario can explain)")
    if outbox_left:
        clean.append(f"{outbox_left} outbox rows left after graceful-stop")
    if clean and not clean_exit_available():
        pytest.xfail(f"{CLEAN_EXIT_REASON}: {'; '.join(clean)}")
    assert not clean, "; ".join(clean)


#: seconds a hub call runs after its event, before its COMMIT: well after the shutdown hook (~0.5 s after
#: `graceful`), within mod_wsgi's grace (it cut calls ~3 s after the hook)
SLOW_CALL = 2.0


@pytest.mark.parametrize("outbox", [True, False], ids=["outbox", "no-outbox"])
def test_a_request_running_through_graceful_is_delivered(outbox, schema, exchange_name, tmp_path):
    """mod_wsgi calls its shutdown hook (process_stopping) as soon as a daemon process is told to
    stop, while its requests still run: calls that commit after the plugin's exit closed the sender
    are answered at once, their messages spooled (outbox off) or left as rows (outbox on), and the
    next processes deliver them.  (The unit tests in test_runtime/test_sender pin the race that lost
    a message in CI on 2026-12-05: a submit into the stopped sender.)"""
    answers: dict[int, str] = {}
    with running_instance("daemon", outbox, exchange_name, tmp_path) as (inst, proxy, receiver):
        warm = harness.client_loop(inst.url, 8, THREADS, multicall_every=1000)  # every process has the plugin
        assert not warm.errors, warm.errors

        def slow(seq: int) -> None:
            try:
                answers[seq] = str(xmlrpc.client.ServerProxy(inst.url).slowTag(seq, SLOW_CALL))
            except Exception as exc:  # noqa: BLE001 - recorded, asserted below
                answers[seq] = f"{type(exc).__name__}: {exc}"

        calls = [threading.Thread(target=slow, args=(seq,)) for seq in range(101, 101 + THREADS)]
        for c in calls:
            c.start()
        time.sleep(0.3)  # the calls have collected their events and not committed yet
        inst.apachectl("graceful")
        for c in calls:
            c.join(30)
        after = harness.client_loop(inst.url, 8, THREADS, multicall_every=1000, first_seq=201)  # new processes
        committed = harness.Ledger().committed()
        got = receiver.collect(expect=len(committed), timeout=DELIVERY_WAIT, quiet=1.0)
        inst.graceful_stop()
        log = inst.error_log()
    seen = harness.arrivals(got)
    slow_committed = sorted(s for s in committed if 101 <= s < 101 + THREADS)
    print("apache graceful-during-calls:", json.dumps({"outbox": outbox, "answers": answers,
                                                       "slow_committed": slow_committed,
                                                       "spooled": harness.spooled(log)}))
    assert not after.errors, after.errors
    assert slow_committed, f"no slow call committed: {answers}"
    lost = sorted(set(committed) - set(seen))
    assert not lost, f"{len(lost)} of {len(committed)} lost ({harness.reported_lost(log)} reported lost): {lost}"
    assert all(answers[s] == str(s) for s in slow_committed), answers  # answered, not cut by a wait
    if not outbox:  # they committed after the exit had closed the sender: the spool carried them
        assert harness.spooled(log) >= 1, "no call committed after the exit began: the scenario did not happen"
    assert not harness.plugin_errors(log), harness.plugin_errors(log)[:5]
