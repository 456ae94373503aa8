"""The weak spots of a valid config, as warnings: passwords in clear text, TLS not verified, an IP
address where proton needs a name, secrets readable by other users."""

from __future__ import annotations

import os
import stat

from koji_messagebus.config.httpd import httpd_group
from koji_messagebus.config.sections import Endpoint
from koji_messagebus.config.security import is_ip


def security_warnings(path: str, values: dict, endpoints: tuple[Endpoint, ...]) -> list[str]:
    """Weak spots of a valid config: each a line naming the key and the fix."""
    warnings = []
    auth = values[("broker", "auth")]
    if auth == "PLAIN" and not all(ep.tls for ep in endpoints):
        warnings.append(f"{path}: [broker] auth = PLAIN without TLS sends the password in clear text; "
                        "set ssl = true (or amqps:// URLs)")
    if any(ep.tls for ep in endpoints) and not values[("broker", "ssl_verify")]:
        warnings.append(f"{path}: [broker] ssl_verify = false: the broker's certificate and host name are "
                        "NOT verified, anyone on the path can impersonate it; set ssl_verify = true")
    if values[("broker", "ssl_verify")]:
        for ep in endpoints:
            if ep.tls and is_ip(ep.host):
                warnings.append(f"{path}: [broker] TLS to {ep.host}: proton checks the broker's certificate "
                                "against DNS names only, so an IP address fails verification; use the broker's "
                                "host name as in its certificate")
    secrets = []
    if values[("broker", "password_file")]:
        secrets.append(("password_file", values[("broker", "password_file")], "holds a password"))
    elif values[("broker", "password")]:
        secrets.append(("config file", path, "holds a password"))
    for key in ("key", "keytab"):
        if values[("broker", key)]:
            secrets.append((key, values[("broker", key)], "is a secret"))
    if values[("broker", "cert")] and not values[("broker", "key")] and _holds_private_key(values[("broker", "cert")]):
        secrets.append(("cert", values[("broker", "cert")], "holds a private key"))
    for key, file, what in secrets:
        try:
            mode = os.stat(file).st_mode
        except OSError:
            continue
        if mode & stat.S_IROTH:  # group-readable is how the hub reads it: 0640 root:<httpd's group>
            group = httpd_group()
            warnings.append(f"{file} ({key}) {what} and is readable by other users "
                            f"(mode {stat.S_IMODE(mode):o}); fix: chown root:{group} {file} && chmod 640 {file} "
                            f"(or chmod 600 {file} if {group} owns it)")
    return warnings


def _holds_private_key(path: str) -> bool:
    """A combined PEM: certificate and private key in one file."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return "PRIVATE KEY-----" in fh.read(1 << 20)
    except OSError:
        return False
