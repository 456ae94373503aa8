"""What `koji-messagebus status` shows: the hub processes' figures (status.py) and the outbox's,
judged (healthy, degraded, broken) and rendered as text, JSON or the Prometheus text exposition
format.  Pure: the command reads the files and the database, this module only renders."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from koji_messagebus.delivery.status import Process

OK, DEGRADED, BROKEN = 0, 1, 2
HEALTH_WORDS = {OK: "healthy", DEGRADED: "degraded", BROKEN: "broken"}


@dataclass
class OutboxFigures:
    """The outbox table as the command saw it; `enabled` False: [outbox] enabled is off (not read)."""

    enabled: bool
    rows: int | None = None
    oldest: float | None = None  # seconds, the oldest unsent row
    kept_oldest: float | None = None  # seconds, the oldest sent row kept for replay ([outbox] keep)
    where: str = ""
    error: str | None = None


@dataclass
class SpoolFigures:
    """The spool directory ([broker] spool_dir) as the command saw it; `directory` "": off."""

    directory: str
    files: int = 0
    messages: int = 0
    oldest: float | None = None  # seconds since the oldest file was written
    error: str | None = None


@dataclass
class Report:
    processes: list[Process]
    outbox: OutboxFigures
    now: float
    max_age: float
    directory: str = ""
    reasons: list[str] = field(default_factory=list)
    code: int = OK
    spool: SpoolFigures | None = None

    def judge(self) -> Report:
        """Set `code` and `reasons`: 2 broken (no process connected, or the outbox unreadable),
        1 degraded (something held longer than max_age, a process not connected, none reported)."""
        broken: list[str] = []
        degraded: list[str] = []
        live = [p for p in self.processes if not p.gone]
        if self.outbox.enabled and self.outbox.error:
            broken.append(f"the outbox cannot be read: {self.outbox.error}")
        if live and not any(p.connected for p in live):
            states = ", ".join(f"{p.pid} {p.data.get('state')}" + (f" ({p.data['last_error']})"
                                                                   if p.data.get("last_error") else "") for p in live)
            broken.append(f"no hub process is connected to the broker: {states}")
        elif live:
            for p in live:
                if not p.connected:
                    degraded.append(f"process {p.pid} is {p.data.get('state')}: {p.data.get('last_error') or '-'}")
        if not live:
            degraded.append(f"no hub process has reported in {self.directory} (a process writes its figures "
                            "from its first message on; or [status] dir differs)")
        for p in live:
            age = p.held_age(self.now)
            if age is not None and age > self.max_age:
                degraded.append(f"process {p.pid} holds {p.data.get('held')} message(s), the oldest for {age:.0f}s "
                                f"(> --max-age {self.max_age:g}s)")
        if self.outbox.enabled and self.outbox.oldest is not None and self.outbox.oldest > self.max_age:
            degraded.append(f"the outbox holds {self.outbox.rows} unsent row(s), the oldest for "
                            f"{self.outbox.oldest:.0f}s (> --max-age {self.max_age:g}s)")
        sp = self.spool
        if sp is not None and sp.error:
            degraded.append(f"the spool cannot be read: {sp.error}")
        elif sp is not None and sp.oldest is not None and sp.oldest > self.max_age:
            degraded.append(f"the spool holds {sp.messages} message(s) in {sp.files} file(s), the oldest for "
                            f"{sp.oldest:.0f}s (> --max-age {self.max_age:g}s; `koji-messagebus spool flush`)")
        self.code = BROKEN if broken else DEGRADED if degraded else OK
        self.reasons = broken + degraded
        return self


# ---- text ------------------------------------------------------------------------------------------
def _ms(seconds: Any) -> str:
    return "-" if seconds is None else f"{float(seconds) * 1000:.1f} ms"


def _ago(now: float, then: Any) -> str:
    if then is None:
        return "-"
    seconds = max(0.0, now - float(then))
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago" if seconds < 7200 \
        else f"{seconds / 3600:.1f}h ago"


def render_text(report: Report) -> str:
    lines = [f"hub processes ({report.directory}):"]
    if not report.processes:
        lines.append("  none has reported")
    for p in report.processes:
        d = p.data
        if p.gone:
            lines.append(f"  {p.pid}: gone (no longer running; its file was removed); last: published "
                         f"{d.get('published', 0)}, lost {d.get('lost', 0)}, held {d.get('held', 0)}")
            continue
        where = f"{d.get('broker') or '-'} {d.get('address') or ''}".rstrip()
        lines.append(f"  {p.pid}: {d.get('state')} {where} (connected {d.get('connects', 0)} time(s))")
        held_age = p.held_age(report.now)
        lines.append(f"    published {d.get('published', 0)}, released {d.get('released', 0)}, rejected "
                     f"{d.get('rejected', 0)}, lost {d.get('lost', 0)}; held {d.get('held', 0)}"
                     + (f", the oldest for {held_age:.1f}s" if held_age is not None else ""))
        lines.append(f"    request wait p50 {_ms(d.get('wait_p50'))}, p99 {_ms(d.get('wait_p99'))} (last minute; "
                     f"{d.get('requests', 0)} request(s) since start)")
        if d.get("last_error"):
            lines.append(f"    last error {_ago(report.now, d.get('last_error_at'))}: {d['last_error']}")
        lines.append(f"    figures written {_ago(report.now, d.get('written'))} (rewritten when they change)")
    ob = report.outbox
    if not ob.enabled:
        lines.append("outbox: off ([outbox] enabled = false)")
    elif ob.error:
        lines.append(f"outbox: cannot be read: {ob.error}")
    else:
        lines.append(f"outbox ({ob.where}): {ob.rows} unsent row(s)"
                     + (f", the oldest stored {ob.oldest:.0f}s ago" if ob.oldest is not None else "")
                     + (f"; sent messages kept for replay from {ob.kept_oldest:.0f}s ago"
                        if ob.kept_oldest is not None else ""))
    sp = report.spool
    if sp is not None:
        lines.append("spool: off ([broker] spool_dir is empty)" if not sp.directory
                     else f"spool ({sp.directory}): cannot be read: {sp.error}" if sp.error
                     else f"spool ({sp.directory}): {sp.messages} message(s) in {sp.files} file(s)"
                     + (f", the oldest written {sp.oldest:.0f}s ago" if sp.oldest is not None else ""))
    lines.append(f"health: {HEALTH_WORDS[report.code]}" + (": " + "; ".join(report.reasons) if report.reasons else ""))
    return "\n".join(lines)


# ---- JSON ------------------------------------------------------------------------------------------
def render_json(report: Report) -> str:
    return json.dumps({
        "health": HEALTH_WORDS[report.code], "exit": report.code, "reasons": report.reasons,
        "processes": [dict(p.data, pid=p.pid, gone=p.gone, held_age=p.held_age(report.now))
                      for p in report.processes],
        "outbox": {"enabled": report.outbox.enabled, "rows": report.outbox.rows, "oldest": report.outbox.oldest,
                   "kept_oldest": report.outbox.kept_oldest, "error": report.outbox.error},
        "spool": None if report.spool is None else {
            "dir": report.spool.directory, "files": report.spool.files, "messages": report.spool.messages,
            "oldest": report.spool.oldest, "error": report.spool.error},
    }, sort_keys=True)


# ---- Prometheus ------------------------------------------------------------------------------------
#: (name, type, help, the process figure it shows or None)
PER_PROCESS = (
    ("published_total", "counter", "Messages the broker accepted since the process started.", "published"),
    ("released_total", "counter", "Messages the broker released (no queue bound for them; RabbitMQ 4).",
     "released"),
    ("rejected_total", "counter", "Messages the broker rejected.", "rejected"),
    ("lost_total", "counter", "Messages given up (rejected, poison, or memory backlog full).", "lost"),
    ("held_messages", "gauge", "Messages held in memory (queued, in flight, in quarantine).", "held"),
    ("connects_total", "counter", "Connections opened to the broker.", "connects"),
)


def _labels(**labels: Any) -> str:
    def esc(value: Any) -> str:
        return str(value).replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}" if labels else ""


def _num(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def render_prometheus(report: Report) -> str:
    """The text exposition format (version 0.0.4): HELP and TYPE for each metric, `pid` labels."""
    lines: list[str] = []

    def metric(name: str, kind: str, doc: str, samples: list[tuple[dict[str, Any], Any]]) -> None:
        full = f"koji_messagebus_{name}"
        lines.append(f"# HELP {full} {doc}")
        lines.append(f"# TYPE {full} {kind}")
        lines.extend(f"{full}{_labels(**labels)} {_num(value)}" for labels, value in samples if value is not None)

    live = [p for p in report.processes if not p.gone]
    for name, kind, doc, key in PER_PROCESS:
        metric(name, kind, doc, [({"pid": p.pid}, p.data.get(key, 0)) for p in live])
    metric("held_oldest_seconds", "gauge", "Age of the oldest message held in memory (0: none held).",
           [({"pid": p.pid}, p.held_age(report.now) or 0.0) for p in live])
    metric("connected", "gauge", "1 when the process's connection to the broker is up, else 0.",
           [({"pid": p.pid}, 1 if p.connected else 0) for p in live])
    metric("connection_info", "gauge", "The broker and address a process uses, and its state (always 1).",
           [({"pid": p.pid, "state": p.data.get("state") or "", "broker": p.data.get("broker") or "",
              "address": p.data.get("address") or ""}, 1) for p in live])
    metric("last_error_timestamp_seconds", "gauge", "Unix time of the process's last error (broker or loss).",
           [({"pid": p.pid}, p.data.get("last_error_at")) for p in live])
    metric("request_wait_seconds", "gauge", "Request wait after COMMIT over the last minute, by quantile.",
           [({"pid": p.pid, "quantile": q}, p.data.get(key)) for p in live
            for q, key in (("0.5", "wait_p50"), ("0.99", "wait_p99"))])
    metric("processes", "gauge", "Hub processes that reported, by state (gone: died; its file removed now).",
           [({"state": "running"}, len(live)), ({"state": "gone"}, len(report.processes) - len(live))])
    ob = report.outbox
    if ob.enabled:
        metric("outbox_up", "gauge", "1 when the outbox table could be read, else 0.", [({}, 0 if ob.error else 1)])
        if not ob.error:
            metric("outbox_rows", "gauge", "Messages in the outbox not sent yet.", [({}, ob.rows)])
            metric("outbox_oldest_seconds", "gauge", "Age of the oldest unsent outbox row (0: none).",
                   [({}, ob.oldest or 0.0)])
            metric("outbox_kept_oldest_seconds", "gauge", "Age of the oldest sent row kept for replay (0: none).",
                   [({}, ob.kept_oldest or 0.0)])
    sp = report.spool
    if sp is not None and sp.directory and not sp.error:
        metric("spool_messages", "gauge", "Messages hub processes spooled at exit, not sent yet.", [({}, sp.messages)])
        metric("spool_oldest_seconds", "gauge", "Age of the oldest spool file (0: none).", [({}, sp.oldest or 0.0)])
    metric("health", "gauge", "What `koji-messagebus status` exits with: 0 healthy, 1 degraded, 2 broken.",
           [({}, report.code)])
    return "\n".join(lines) + "\n"
