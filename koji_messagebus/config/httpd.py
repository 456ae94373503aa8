"""The group the hub's httpd runs as, for permission advice: `apache` on Fedora/EL (the RPM's
files are root:apache), `www-data` on Debian and Ubuntu.  Looked up, not assumed: the advice a
Debian admin pastes must name a group that exists there."""

from __future__ import annotations

import grp
import os

#: in the order tried; Debian-like systems (a /etc/debian_version) try www-data first
GROUPS = ("apache", "www-data")
DEFAULT = "apache"


def httpd_group(debian_marker: str = "/etc/debian_version") -> str:
    """The first of GROUPS that exists on this machine (DEFAULT when none does)."""
    order = tuple(reversed(GROUPS)) if os.path.exists(debian_marker) else GROUPS
    for name in order:
        try:
            grp.getgrnam(name)
        except KeyError:
            continue
        return name
    return DEFAULT
