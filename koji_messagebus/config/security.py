"""Explaining TLS and SASL failures in one line each, without ever echoing a secret.

proton reports most TLS failures as `SSL Failure: ... certificate verify failed`, the same for an
untrusted CA and for a wrong host name, and a refused login as a bare SASL outcome.  These helpers
turn that into what an admin has to fix.  When proton's verification failed, `probe_certificate`
looks at the broker's certificate once more with Python's ssl module (one extra TLS handshake,
only after a failure) to tell the two apart.  Messages name files, hosts, users and principals,
never passwords or key material.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import ssl
from typing import Any

from proton import SASL

from koji_messagebus.log import log

#: SASL outcome codes (AMQP 1.0 sasl-code) as proton reports them
SASL_OUTCOMES = {SASL.AUTH: "authentication failed", SASL.SYS: "system error at the broker",
                 SASL.PERM: "permanent failure", SASL.TEMP: "temporary failure"}
_PEER_REFUSED_CERT = ("alert unknown ca", "alert bad certificate", "alert certificate unknown",
                      "alert certificate required", "alert certificate revoked", "alert certificate expired",
                      "alert unsupported certificate", "alert access denied")
_NOT_TLS = ("wrong version number", "packet length too long", "record layer failure", "http request",
            "unexpected eof")


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


#: the mechanisms proton implements itself; any other comes from Cyrus SASL (SCRAM-SHA-256, GSSAPI, ...)
BUILTIN_MECHS = ("PLAIN", "EXTERNAL", "ANONYMOUS")
#: what Cyrus SASL's plugins give proton besides GSSAPI (libscram, libcrammd5, libdigestmd5, liblogin, libntlm, libgs2)
CYRUS_MECHS = ("SCRAM-SHA-1", "SCRAM-SHA-224", "SCRAM-SHA-256", "SCRAM-SHA-384", "SCRAM-SHA-512", "CRAM-MD5",
               "DIGEST-MD5", "GS2-KRB5", "LOGIN", "NTLM")


def uses_password(mech: str) -> bool:
    """The mechanism authenticates with username and password (PLAIN, SCRAM-*, CRAM-MD5, ...)."""
    return mech in ("PLAIN", "CRAM-MD5", "DIGEST-MD5", "LOGIN", "NTLM") or mech.startswith("SCRAM-")


def has_cyrus_sasl() -> bool:
    """proton was built with Cyrus SASL: needed for GSSAPI, SCRAM-* and every mechanism beyond
    proton's built-in PLAIN, EXTERNAL and ANONYMOUS."""
    return bool(SASL.extended())


def warn_unverified(endpoint) -> None:
    """Logged at every connect made with ssl_verify = false."""
    log.warning("INSECURE: TLS to %s WITHOUT verifying the broker's certificate or host name "
                "(ssl_verify = false): anyone on the network path can impersonate the broker and read "
                "the credentials and messages; set ssl_verify = true", endpoint)


def _ssl_reason(exc: BaseException) -> str:
    """`[X509: KEY_VALUES_MISMATCH] key values mismatch (_ssl.c:3900)` -> `key values mismatch`."""
    text = getattr(exc, "verify_message", None) or str(exc)
    text = re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(text))
    return re.sub(r"^\[[^\]]*\]\s*", "", text)


def explain_files(cacert: str, cert: str, key: str) -> str:
    """Why proton could not load the CA bundle or the client certificate and key."""
    if cacert:
        try:
            ssl.create_default_context(cafile=cacert)
        except (ssl.SSLError, OSError, ValueError) as exc:
            return f"cacert = {cacert} cannot be used as a CA bundle ({_ssl_reason(exc)}): it must be a PEM file " \
                   "of CA certificates"
    if cert:
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_cert_chain(cert, key or None, password=lambda: b"")
        except ssl.SSLError as exc:
            reason = _ssl_reason(exc)
            if "mismatch" in reason.lower():
                return f"cert = {cert} and key = {key or cert} do not belong together ({reason})"
            return (f"cert = {cert} / key = {key or cert} cannot be loaded ({reason}): they must be PEM files, "
                    "the key unencrypted (or one PEM file holding certificate and key)")
        except OSError as exc:
            return f"cert = {cert} / key = {key or cert} cannot be read ({exc.strerror})"
    return "proton could not load cacert, cert or key (check that they are PEM files)"


def probe_certificate(host: str, port: int, cacert: str, timeout: float) -> str | None:
    """After proton's verification failed: look at the broker's certificate with Python's ssl and
    say whether its CA is not trusted or the host name does not match; None if unclear."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        if cacert:
            ctx.load_verify_locations(cacert)
        else:
            ctx.load_default_certs()
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=None if is_ip(host) else host) as tls:
                peer = tls.getpeercert() or {}
    except ssl.SSLCertVerificationError as exc:
        return (f"the broker's certificate is not trusted: {exc.verify_message} (verified against "
                f"cacert = {cacert or 'the system CA bundle'}; set cacert to the CA that signed the broker's "
                "certificate)")
    except (OSError, ssl.SSLError, ValueError):
        return None
    cert: dict[str, Any] = dict(peer)
    names: list[str] = [str(value) for kind, value in cert.get("subjectAltName", ()) if kind in ("DNS", "IP Address")]
    if not names:
        names = [str(value) for rdn in cert.get("subject", ()) for kind, value in rdn if kind == "commonName"]
    shown = ", ".join(names) or "no names"
    if is_ip(host):
        dns = [n for n in names if not is_ip(n)]
        return (f"host {host} is an IP address, and proton matches the broker's certificate only against "
                f"DNS names (the certificate is for {shown}); set host (or the URL) to "
                f"{dns[0] if dns else 'a DNS name in the certificate'}")
    return (f"wrong host name: the broker's certificate (trusted CA) is for {shown}, not for {host}; "
            "connect with a name the certificate holds, or reissue the certificate")


def explain_handshake(desc: str, host: str, port: int, cacert: str, cert: str, verify: bool,
                      timeout: float) -> str:
    """One line for a failed TLS handshake, from proton's `SSL Failure: ...` text."""
    reason = desc.split("::", 1)[-1].strip() if "::" in desc else desc
    low = desc.lower()
    if "certificate verify failed" in low and verify:
        found = probe_certificate(host, port, cacert, timeout)
        return found or (f"the broker's certificate could not be verified ({reason}) against "
                         f"cacert = {cacert or 'the system CA bundle'} and host name {host}")
    if any(text in low for text in _PEER_REFUSED_CERT):
        if cert:
            return f"the broker refused our client certificate cert = {cert} ({reason}): is it signed by a CA " \
                   "the broker trusts?"
        return f"the broker requires a client certificate ({reason}): set cert and key"
    if any(text in low for text in _NOT_TLS):
        return f"the broker did not answer with TLS ({reason}): is {port} its TLS port (usually 5671)?"
    return desc


def auth_failure(auth: str, outcome: int | None, selected: str | None, offered: tuple[str, ...] | None,
                 detail: str, cert: str = "", principal: str = "") -> str:
    """One line for a refused SASL authentication."""
    if offered is not None and auth not in offered:
        return (f"the broker does not offer SASL mechanism {auth} (it offers {', '.join(offered) or 'none'}); "
                "set [broker] auth to a mechanism the broker offers")
    if not selected:
        return f"SASL mechanism {auth} could not be started here: {detail or 'no reason given'}"
    if outcome == SASL.AUTH:
        why = {
            "PLAIN": "the broker refused the user name and password (wrong password or unknown user)",
            "EXTERNAL": f"the broker refused the login with the client certificate cert = {cert} (no broker "
                        "user matches its subject, or that user may not log in)",
            "ANONYMOUS": "the broker refused anonymous login",
            "GSSAPI": f"the broker refused Kerberos principal '{principal}'",
        }.get(auth, f"the broker refused the user name and password ({auth})" if uses_password(auth)
              else "the broker refused the credentials")
    else:
        why = SASL_OUTCOMES.get(outcome, "refused") if outcome is not None else "refused"
    return f"{why}{f' ({detail})' if detail else ''}"


def parse_offered(frame: str) -> tuple[str, ...]:
    """Mechanism names from proton's trace of a sasl-mechanisms frame, e.g.
    `@sasl-mechanisms(64) [sasl-server-mechanisms=@<symbol>[:ANONYMOUS, :PLAIN]]` or `...=:PLAIN]`."""
    return tuple(re.findall(r":([A-Za-z0-9_-]+)", frame.split("sasl-server-mechanisms=", 1)[-1]))


class SaslMechanisms:
    """Records the mechanisms the broker offers (from proton's frame trace of the SASL header
    exchange only: tracing stops at the sasl-mechanisms frame, before anything we send)."""

    def __init__(self) -> None:
        self.offered: tuple[str, ...] | None = None
        self._seen = 0

    def attach(self, transport) -> None:
        from proton import Transport

        def tracer(trans, message: str) -> None:
            self._seen += 1
            if "sasl-mechanisms" in message:
                self.offered = parse_offered(message)
            if self.offered is not None or self._seen >= 3:
                trans.trace(Transport.TRACE_OFF)
        transport.tracer = tracer
        transport.trace(Transport.TRACE_FRM)


def default_cafile() -> str:
    """The system CA bundle as OpenSSL sees it."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and os.path.exists(candidate):
            return candidate
    return ""
