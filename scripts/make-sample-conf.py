"""Regenerate conf/messagebus.conf and conf/messagebus-schema.sql (the plugin's config and the
outbox schema, beside the package as Koji keeps a plugin's .conf) and their package-data copies
in koji_messagebus/data/ from the
code (config/options.py OPTIONS, outbox.SCHEMA, outbox.GRANTS).  Run after adding an option:
.venv/bin/python scripts/make-sample-conf.py  (tests/unit/test_packaging.py checks they are current)"""

import os

from koji_messagebus import resources
from koji_messagebus.config.sample import render_sample
from koji_messagebus.transaction.outbox import GRANTS, SCHEMA

HEADER = """\
# /etc/koji-hub/plugins/messagebus.conf — configuration of the koji-messagebus hub plugin.
# Enable the plugin with `Plugins = messagebus` in /etc/koji-hub/hub.conf.
# Every key is listed with its default (commented out); uncomment to change it.
# `koji-messagebus check` validates this file and tests the connection.
# It may hold a password: the hub (apache) must read it and nobody else:
#   chown root:apache messagebus.conf && chmod 640 messagebus.conf

"""
OUTBOX_NOTE = """\
# The outbox keeps messages in the hub's database until the broker has them, so that a broker
# outage or a hub crash loses nothing. Create its table once (idempotent):
#   koji-messagebus outbox init        (or: koji-messagebus outbox schema | psql koji)
# If another role owns the table, grant the hub's database user (here: koji) exactly:
""" + "".join(f"#   {line}\n" for line in GRANTS.format(role="koji").splitlines())
SET = {  # the sample's own choices, written below the documented default
    ("broker", "host"): "amqp.example.com",
    ("broker", "ssl"): "true",
    ("broker", "username"): "koji",
    ("broker", "password_file"): "/etc/koji-hub/plugins/messagebus.password",
    ("outbox", "enabled"): "true",
}


def sample() -> str:
    """The documented sample config: the header, then every key with its default."""
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
    return HEADER + "\n".join(lines) + "\n"


CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def main() -> None:
    for name, text in ((resources.SAMPLE_CONFIG, sample()), (resources.SCHEMA, SCHEMA)):
        for path in (os.path.join(CONF_DIR, name), resources.path(name)):
            with open(path, "w") as fh:
                fh.write(text)


if __name__ == "__main__":
    main()
