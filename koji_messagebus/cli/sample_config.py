"""`koji-messagebus sample-config`: print the documented sample messagebus.conf (every key with
its default), the same file the RPM installs as /etc/koji-hub/plugins/messagebus.conf."""

from __future__ import annotations

import argparse

from koji_messagebus import resources
from koji_messagebus.cli.common import EXIT_OK
from koji_messagebus.config.httpd import httpd_group

HELP = "print the documented sample messagebus.conf"
DESCRIPTION = ("Print the sample messagebus.conf: every key with its default and what it accepts. Write it as the "
               "hub's config and edit it: koji-messagebus sample-config > /etc/koji-hub/plugins/messagebus.conf; "
               f"chown root:{httpd_group()} and chmod 640 it.")


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("sample-config", parents=[parent], help=HELP, description=DESCRIPTION)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(resources.read(resources.SAMPLE_CONFIG), end="", flush=True)
    return EXIT_OK
