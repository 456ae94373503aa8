"""The files an admin needs, shipped inside the package (pip) and also installed by the RPM.

A pip user has no source tree, so messages never point at `conf/...`: they name the command that
prints or applies the file (`koji-messagebus sample-config`, `koji-messagebus outbox init`)."""

from __future__ import annotations

import os

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
SAMPLE_CONFIG = "messagebus.conf"
SCHEMA = "messagebus-schema.sql"
FLUSH_SERVICE = "koji-messagebus-flush.service"
FLUSH_TIMER = "koji-messagebus-flush.timer"
METRICS_SERVICE = "koji-messagebus-metrics.service"
METRICS_TIMER = "koji-messagebus-metrics.timer"
TMPFILES = "koji-messagebus.tmpfiles.conf"
#: where the RPM puts them (the sample config becomes the live config, %config(noreplace))
RPM_PATHS = {SAMPLE_CONFIG: "/etc/koji-hub/plugins/messagebus.conf",
             SCHEMA: "/usr/share/koji-messagebus/messagebus-schema.sql",
             FLUSH_SERVICE: "/usr/lib/systemd/system/koji-messagebus-flush.service",
             FLUSH_TIMER: "/usr/lib/systemd/system/koji-messagebus-flush.timer",
             METRICS_SERVICE: "/usr/lib/systemd/system/koji-messagebus-metrics.service",
             METRICS_TIMER: "/usr/lib/systemd/system/koji-messagebus-metrics.timer",
             TMPFILES: "/usr/lib/tmpfiles.d/koji-messagebus.conf"}


def path(name: str) -> str:
    """The shipped file's path inside the installed package."""
    return os.path.join(DATA_DIR, name)


def read(name: str) -> str:
    with open(path(name), encoding="utf-8") as fh:
        return fh.read()
