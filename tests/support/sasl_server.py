"""A minimal AMQP 1.0 peer that demands one SASL mechanism (run as a subprocess by the tests).

`python -m tests.support.sasl_server PORT MECH` listens on 127.0.0.1:PORT with proton's Cyrus SASL
limited to MECH, accepts every message and prints, flushed, one line per event:
`LISTENING`, `AUTH <mech> <user>`, `MSG <subject> <address>`.  Kerberos settings come from the
environment (KRB5_CONFIG, KRB5_KTNAME for the service keytab, PN_SASL_CONFIG_PATH).
"""

from __future__ import annotations

import sys

from proton.handlers import MessagingHandler
from proton.reactor import Container


class Server(MessagingHandler):
    def __init__(self, port: int, mech: str):
        super().__init__(auto_accept=True)
        self.port = port
        self.mech = mech

    def on_start(self, event):
        event.container.listen(f"127.0.0.1:{self.port}")
        print("LISTENING", flush=True)

    def on_connection_bound(self, event):
        sasl = event.transport.sasl()
        sasl.allowed_mechs(self.mech)
        event.transport.require_auth(self.mech != "ANONYMOUS")  # Cyrus hides ANONYMOUS when auth is required

    def on_connection_opened(self, event):
        sasl = event.transport.sasl()
        print("AUTH", sasl.mech, event.transport.user, flush=True)

    def on_message(self, event):
        print("MSG", event.message.subject, event.link.remote_target.address, flush=True)


if __name__ == "__main__":
    Container(Server(int(sys.argv[1]), sys.argv[2])).run()
