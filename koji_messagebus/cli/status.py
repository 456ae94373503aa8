"""`koji-messagebus status`: every hub process on this host (their status files) and the outbox,
as text, JSON or Prometheus metrics; the exit status tells monitoring healthy (0), degraded (1)
or broken (2)."""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from koji_messagebus.cli.common import CliError, get_config, out, parse_age
from koji_messagebus.cli.metrics import BROKEN

HELP = "the hub processes' figures and the outbox; Prometheus metrics"
DESCRIPTION = ("Show what each hub process on this host has published, refused, lost and holds, its connection "
               "and last error, its request wait p50/p99 over the last minute (from the files the processes write "
               "in [status] dir), the outbox's unsent rows (when [outbox] enabled) and the messages spooled at exit "
               "([broker] spool_dir). Processes that died are "
               "shown as gone and their files removed. Exit status: 0 healthy; 1 degraded (something held longer "
               "than --max-age, a process not connected, or no process has reported); 2 broken (no process "
               "connected, or the outbox unreadable).")
FORMATS = ("text", "json", "prometheus")


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("status", parents=[parent], help=HELP, description=DESCRIPTION)
    p.add_argument("--format", choices=FORMATS, default="text", help="text (default), json or prometheus")
    p.add_argument("--max-age", type=parse_age, default=60.0, metavar="AGE",
                   help="held longer than this is degraded (default 60s; SECONDS or 90s, 5m, 1h)")
    p.add_argument("--dir", metavar="DIR", help="the processes' status directory (default: [status] dir)")
    p.add_argument("--hub-config", metavar="FILE",
                   help="the hub's hub.conf for the outbox (default: [outbox] hub_config of the config)")
    p.add_argument("--output", metavar="FILE",
                   help="write to FILE atomically (a temporary file renamed over it; for node_exporter's "
                   "textfile collector) instead of stdout")
    p.set_defaults(func=run)


def outbox_figures(args: argparse.Namespace, config) -> object:
    from koji_messagebus.cli import metrics, outbox_admin
    from koji_messagebus.cli.outbox import database
    from koji_messagebus.transaction import outbox

    if not config.outbox.enabled:
        return metrics.OutboxFigures(enabled=False)
    try:
        with database(args, config) as (settings, cnx):
            rows, oldest, kept = outbox_admin.status_kept(cnx)
    except CliError as exc:
        return metrics.OutboxFigures(enabled=True, error=str(exc))
    return metrics.OutboxFigures(True, rows, oldest, kept, where=f"{outbox.TABLE} in {settings.describe()}")


def spool_figures(config) -> object:
    from koji_messagebus.cli import metrics
    from koji_messagebus.delivery.spool import Spool

    directory = config.broker.spool_dir
    if not directory:
        return metrics.SpoolFigures("")
    try:
        files, messages, oldest = Spool(directory).summary()
    except OSError as exc:
        return metrics.SpoolFigures(directory, error=exc.strerror or str(exc))
    return metrics.SpoolFigures(directory, files, messages,
                                None if oldest is None else max(0.0, time.time() - oldest))


def write_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".koji-messagebus.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def run(args: argparse.Namespace) -> int:
    from koji_messagebus.cli import metrics
    from koji_messagebus.delivery import status

    config = get_config(args, for_sending=False)
    directory = args.dir or config.status.dir
    try:
        processes = status.read_processes(directory)
    except OSError as exc:
        raise CliError(f"cannot read the hub processes' status directory {directory}: {exc.strerror or exc} (run as "
                       "root or the httpd user; --dir or [status] dir names another)", BROKEN) from None
    ob = outbox_figures(args, config)
    assert isinstance(ob, metrics.OutboxFigures)
    sp = spool_figures(config)
    assert isinstance(sp, metrics.SpoolFigures)
    report = metrics.Report(processes, ob, time.time(), args.max_age, directory, spool=sp).judge()
    render = {"text": metrics.render_text, "json": metrics.render_json,
              "prometheus": metrics.render_prometheus}[args.format]
    text = render(report)
    if args.output:
        try:
            write_atomically(args.output, text if text.endswith("\n") else text + "\n")
        except OSError as exc:
            raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    else:
        out(text.rstrip("\n"))
    return report.code
