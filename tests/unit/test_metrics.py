"""`koji-messagebus status` judged and rendered: exit codes with their reasons, and the Prometheus
text exposition format (HELP and TYPE, koji_messagebus_* names, counters ending in _total, pid labels)."""

from __future__ import annotations

import re

from koji_messagebus.cli import metrics
from koji_messagebus.cli.metrics import BROKEN, DEGRADED, OK, OutboxFigures, Report
from koji_messagebus.delivery.status import Process

NOW = 1_800_000_000.0


def proc(pid: int, state: str = "up", gone: bool = False, **data) -> Process:
    base = {"state": state, "published": 10, "released": 1, "rejected": 0, "lost": 2, "held": 0,
            "held_oldest": None, "broker": "amqp://mq:5672", "address": "/exchange/koji.events",
            "wait_p50": 0.001, "wait_p99": 0.004, "last_error": None, "last_error_at": None, "connects": 1}
    return Process(pid, {**base, **data}, gone)


def judged(processes, outbox=None, max_age=60.0) -> Report:
    return Report(processes, outbox or OutboxFigures(enabled=False), NOW, max_age, "/run/koji-messagebus").judge()


def test_healthy_when_every_process_is_connected_and_nothing_is_old():
    report = judged([proc(1), proc(2)], OutboxFigures(True, 0, None, 30.0))
    assert report.code == OK and report.reasons == []
    assert metrics.render_text(report).endswith("health: healthy")


def test_a_dead_process_does_not_make_it_unhealthy_but_is_shown_gone():
    report = judged([proc(1), proc(2, gone=True)])
    assert report.code == OK
    assert "  2: gone" in metrics.render_text(report)


def test_degraded_when_one_process_is_down_or_something_is_held_too_long():
    report = judged([proc(1), proc(2, "down", last_error="connection refused")])
    assert report.code == DEGRADED and "process 2 is down: connection refused" in report.reasons[0]
    report = judged([proc(1, held=4, held_oldest=NOW - 90)])
    assert report.code == DEGRADED and "holds 4 message(s), the oldest for 90s (> --max-age 60s)" in report.reasons[0]
    assert judged([proc(1, held=4, held_oldest=NOW - 90)], max_age=120).code == OK
    report = judged([proc(1)], OutboxFigures(True, 7, 300.0))
    assert report.code == DEGRADED and "the outbox holds 7 unsent row(s), the oldest for 300s" in report.reasons[0]


def test_degraded_when_no_process_has_reported():
    report = judged([])
    assert report.code == DEGRADED and "no hub process has reported in /run/koji-messagebus" in report.reasons[0]


def test_broken_when_no_process_is_connected_or_the_outbox_is_unreadable():
    report = judged([proc(1, "down", last_error="x"), proc(2, "connecting"), proc(3, gone=True)])
    assert report.code == BROKEN
    assert report.reasons[0] == "no hub process is connected to the broker: 1 down (x), 2 connecting"
    report = judged([proc(1)], OutboxFigures(True, error="database koji on db1: connection refused"))
    assert report.code == BROKEN and "the outbox cannot be read" in report.reasons[0]


SAMPLE = re.compile(r'^(koji_messagebus_[a-z_]+)(\{[a-z_]+="(?:[^"\\]|\\.)*"(?:,[a-z_]+="(?:[^"\\]|\\.)*")*\})? '
                    r'(-?[0-9.e+-]+)$')


def test_prometheus_text_format():
    report = judged([proc(101), proc(102, "down", held=3, held_oldest=NOW - 5, last_error_at=NOW - 1),
                     proc(103, gone=True)], OutboxFigures(True, 4, 12.5, 3600.0))
    text = metrics.render_prometheus(report)
    assert text.endswith("\n")
    declared: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, doc = line[7:].split(" ", 1)
            assert doc and name.startswith("koji_messagebus_")
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert kind in ("counter", "gauge") and name not in declared
            assert name.endswith("_total") == (kind == "counter"), name
            declared[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, line
            assert match.group(1) in declared  # TYPE comes before the samples
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if not line.startswith("#")}
    assert values['koji_messagebus_published_total{pid="101"}'] == 10
    assert values['koji_messagebus_lost_total{pid="102"}'] == 2
    assert values['koji_messagebus_connected{pid="101"}'] == 1 and values['koji_messagebus_connected{pid="102"}'] == 0
    assert values['koji_messagebus_held_messages{pid="102"}'] == 3
    assert values['koji_messagebus_held_oldest_seconds{pid="102"}'] == 5
    assert not any('pid="103"' in k for k in values)  # gone: no per-process samples
    assert values['koji_messagebus_processes{state="gone"}'] == 1
    assert values["koji_messagebus_outbox_rows"] == 4 and values["koji_messagebus_outbox_oldest_seconds"] == 12.5
    assert values['koji_messagebus_request_wait_seconds{pid="101",quantile="0.99"}'] == 0.004
    assert values["koji_messagebus_health"] == DEGRADED
    for name in ("published_total", "lost_total", "held_messages", "outbox_rows", "outbox_oldest_seconds",
                 "connected"):
        assert f"# TYPE koji_messagebus_{name} " in text


def test_label_values_are_escaped():
    text = metrics.render_prometheus(judged([proc(1, address='/ex/"a"\\b\nc')]))
    assert 'address="/ex/\\"a\\"\\\\b\\nc"' in text


def test_an_unreadable_outbox_gives_outbox_up_0_and_no_row_figures():
    text = metrics.render_prometheus(judged([proc(1)], OutboxFigures(True, error="no table")))
    assert "koji_messagebus_outbox_up 0\n" in text and "koji_messagebus_outbox_rows " not in text


def test_json_has_the_processes_the_outbox_and_the_verdict():
    import json

    data = json.loads(metrics.render_json(judged([proc(1, held=1, held_oldest=NOW - 2)], OutboxFigures(True, 0))))
    assert data["health"] == "healthy" and data["exit"] == 0
    assert data["processes"][0]["pid"] == 1 and data["processes"][0]["held_age"] == 2
    assert data["outbox"]["rows"] == 0
