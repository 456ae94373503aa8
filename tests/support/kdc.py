"""A throw-away MIT Kerberos realm on loopback for the GSSAPI tests.

`Realm(tmpdir).start()` creates realm KMB.TEST under tmpdir (krb5.conf, kdc.conf, database, a
client keytab for `kmb-hub@KMB.TEST`, a service keytab for `amqp/localhost@KMB.TEST`) and runs
`krb5kdc` in the foreground on a free loopback port.  `env` holds KRB5_CONFIG/KRB5_KDC_PROFILE
for this realm; `stop()` ends the KDC (only the process started here).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time

REALM = "KMB.TEST"
CLIENT = f"kmb-hub@{REALM}"
SERVICE = f"amqp/localhost@{REALM}"


def tools_missing() -> str | None:
    for tool in ("krb5kdc", "kdb5_util", "kadmin.local"):
        if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")):
            return f"{tool} not installed (scripts/setup.sh installs krb5-kdc and krb5-admin-server)"
    return None


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port")


class Realm:
    def __init__(self, base: str):
        self.dir = os.path.join(base, "krb5")
        os.makedirs(self.dir, exist_ok=True)
        self.port = _free_port()
        self.krb5_conf = os.path.join(self.dir, "krb5.conf")
        self.kdc_conf = os.path.join(self.dir, "kdc.conf")
        self.kdc_log = os.path.join(self.dir, "kdc.log")
        self.client_keytab = os.path.join(self.dir, "client.keytab")
        self.service_keytab = os.path.join(self.dir, "service.keytab")
        self.env = {"KRB5_CONFIG": self.krb5_conf, "KRB5_KDC_PROFILE": self.kdc_conf}
        self._proc: subprocess.Popen | None = None

    def _write_configs(self) -> None:
        with open(self.krb5_conf, "w") as fh:
            fh.write(f"""[libdefaults]
    default_realm = {REALM}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
    ignore_acceptor_hostname = true
    default_ccache_name = FILE:{self.dir}/ccache-default

[realms]
    {REALM} = {{
        kdc = 127.0.0.1:{self.port}
    }}

[domain_realm]
    localhost = {REALM}
""")
        with open(self.kdc_conf, "w") as fh:
            fh.write(f"""[kdcdefaults]
    kdc_ports = {self.port}
    kdc_tcp_ports = {self.port}
    kdc_listen = 127.0.0.1
    kdc_tcp_listen = 127.0.0.1

[realms]
    {REALM} = {{
        database_name = {self.dir}/principal
        key_stash_file = {self.dir}/stash
        acl_file = {self.dir}/kadm5.acl
        max_life = 1h
        kdc_listen = 127.0.0.1:{self.port}
        kdc_tcp_listen = 127.0.0.1:{self.port}
    }}

[logging]
    kdc = FILE:{self.kdc_log}
""")
        open(os.path.join(self.dir, "kadm5.acl"), "w").close()

    def _run(self, *cmd: str) -> str:
        env = {**os.environ, **self.env}
        proc = subprocess.run(list(cmd), env=env, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed: {proc.stdout[-400:]} {proc.stderr[-400:]}")
        return proc.stdout

    def start(self) -> Realm:
        self._write_configs()
        self._run(_tool("kdb5_util"), "create", "-s", "-r", REALM, "-P", secrets.token_hex(16))
        for princ, keytab in ((CLIENT, self.client_keytab), (SERVICE, self.service_keytab)):
            self._run(_tool("kadmin.local"), "-r", REALM, "-q", f"addprinc -randkey {princ}")
            self._run(_tool("kadmin.local"), "-r", REALM, "-q", f"ktadd -k {keytab} {princ}")
        os.chmod(self.client_keytab, 0o600)
        self._proc = subprocess.Popen([_tool("krb5kdc"), "-n", "-r", REALM], env={**os.environ, **self.env},
                                      stdout=subprocess.DEVNULL, stderr=open(self.kdc_log + ".stderr", "w"))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"krb5kdc exited with {self._proc.returncode}: {self.log()[-600:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"krb5kdc did not listen on 127.0.0.1:{self.port} within 15 s")

    def add_principal(self, principal: str, keytab: str, maxlife: str | None = None) -> str:
        """Another client principal (e.g. with a short ticket life) and its keytab."""
        life = f'-maxlife "{maxlife}" ' if maxlife else ""
        self._run(_tool("kadmin.local"), "-r", REALM, "-q", f"addprinc -randkey {life}{principal}")
        self._run(_tool("kadmin.local"), "-r", REALM, "-q", f"ktadd -k {keytab} {principal}")
        os.chmod(keytab, 0o600)
        return keytab

    def log(self) -> str:
        text = ""
        for path in (self.kdc_log, self.kdc_log + ".stderr"):
            if os.path.exists(path):
                with open(path, errors="replace") as fh:
                    text += fh.read()
        return text

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None
