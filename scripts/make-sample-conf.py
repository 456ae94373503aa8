"""Regenerate conf/messagebus.conf and conf/messagebus-schema.sql from the code (config.OPTIONS,
outbox.SCHEMA).  Run after adding an option: .venv/bin/python scripts/make-sample-conf.py"""

import os

from koji_messagebus.config import render_sample
from koji_messagebus.outbox import SCHEMA

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "conf")
HEADER = """\
# /etc/koji-hub/plugins/messagebus.conf — configuration of the koji-messagebus hub plugin.
# Enable the plugin with `Plugins = messagebus` in /etc/koji-hub/hub.conf.
# Every key is listed with its default (commented out); uncomment to change it.
# `koji-messagebus check` validates this file and tests the connection.
# This file may hold a password: chmod 600 it, owned by the user the hub runs as (apache).

"""
OUTBOX_NOTE = """\
# The outbox keeps messages in the hub's database until the broker has them, so that a broker
# outage or a hub crash loses nothing. Create its table once (idempotent):
#   psql -f messagebus-schema.sql koji        (or: koji-messagebus outbox init)
# and grant the hub's database user SELECT, INSERT, DELETE on messagebus_outbox and USAGE on
# its sequence messagebus_outbox_id_seq.
"""
SET = {  # the sample's own choices, written below the documented default
    ("broker", "host"): "amqp.example.com",
    ("broker", "ssl"): "true",
    ("broker", "username"): "koji",
    ("broker", "password_file"): "/etc/koji-hub/plugins/messagebus.password",
    ("outbox", "enabled"): "true",
}


def main() -> None:
    lines, section = [], None
    for line in render_sample().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
            lines.append(line)
            if section == "outbox":
                lines.append(OUTBOX_NOTE.rstrip("\n"))
            continue
        lines.append(line)
        if line.startswith("#") and " = " in line and not line.startswith("# "):
            key = line[1:].split(" = ")[0]
            if (section, key) in SET:
                lines.append(f"{key} = {SET[(section, key)]}")
    with open(os.path.join(HERE, "messagebus.conf"), "w") as fh:
        fh.write(HEADER + "\n".join(lines) + "\n")
    with open(os.path.join(HERE, "messagebus-schema.sql"), "w") as fh:
        fh.write(SCHEMA)


if __name__ == "__main__":
    main()
