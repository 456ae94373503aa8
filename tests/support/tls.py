"""Where the test TLS material and listeners are (made by .ci/rabbitmq-tls.sh)."""

from __future__ import annotations

import os
import socket
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, ".ci", "rabbitmq-tls.sh")
DIR = os.environ.get("KMB_TLS_DIR", "/var/lib/koji-messagebus-test/tls")

PORT = 5671  # server.pem: localhost, 127.0.0.1
WRONG_NAME_PORT = 5681  # wrong-name.pem: a valid certificate of the same CA, only for wrong-name.invalid

CA = os.path.join(DIR, "ca.pem")
UNTRUSTED_CA = os.path.join(DIR, "untrusted-ca.pem")
CLIENT_CERT = os.path.join(DIR, "client.pem")
CLIENT_KEY = os.path.join(DIR, "client.key")
CLIENT_COMBINED = os.path.join(DIR, "client-combined.pem")
UNTRUSTED_CLIENT_CERT = os.path.join(DIR, "untrusted-client.pem")
UNTRUSTED_CLIENT_KEY = os.path.join(DIR, "untrusted-client.key")
NOBODY_CLIENT_CERT = os.path.join(DIR, "nobody-client.pem")  # test CA, but CN=kmb-nobody is no RabbitMQ user
NOBODY_CLIENT_KEY = os.path.join(DIR, "nobody-client.key")
CLIENT_USER = "kmb-client"  # the RabbitMQ user named by the client certificate's CN (EXTERNAL)
PLAIN_USER = "kmb-user"
PASSWORD_FILE = os.path.join(DIR, "kmb-user.password")


def password() -> str:
    with open(PASSWORD_FILE, encoding="utf-8") as fh:
        return fh.readline().strip()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def ensure() -> str | None:
    """Make sure the TLS listeners are up (re-running the setup script if the broker lost them,
    e.g. after a restart); return why not, or None when ready."""
    if all(os.path.exists(p) for p in (CA, CLIENT_KEY, PASSWORD_FILE)) and _listening(PORT) \
            and _listening(WRONG_NAME_PORT):
        return None
    proc = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return f"{SCRIPT} failed: {proc.stdout[-500:]} {proc.stderr[-1000:]}"
    if not (_listening(PORT) and _listening(WRONG_NAME_PORT)):
        return f"{SCRIPT} ran but 127.0.0.1:{PORT}/{WRONG_NAME_PORT} do not answer"
    return None


def secrets() -> list[str]:
    """Every secret the tests use: none of these may appear in a log line or an error."""
    found = [password()]
    for path in (CLIENT_KEY, UNTRUSTED_CLIENT_KEY, NOBODY_CLIENT_KEY):
        with open(path, encoding="ascii") as fh:
            pem = fh.read()
        found.append(pem)
        # any line of the base64 body is a secret too
        found += [line for line in pem.splitlines() if line and not line.startswith("-----")]
    return found
