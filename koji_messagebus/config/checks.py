"""Rules across keys that a valid config must meet: the routing-key prefix, and what connecting
needs (credentials, SASL, TLS files).  Each problem is one line naming the key and the fix."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from koji_messagebus.config.options import MAX_PREFIX_BYTES
from koji_messagebus.config.redact import redact_url
from koji_messagebus.config.security import BUILTIN_MECHS, has_cyrus_sasl, uses_password


def cross_checks(values: dict, path: str, for_sending: bool = True) -> list[str]:
    """Every cross-key problem; the sending ones only when the config is used to connect."""
    problems = _prefix_checks(values, path)
    if for_sending:
        problems += _sending_checks(values, path)
    return problems


def _prefix_checks(values: dict, path: str) -> list[str]:
    prefix = values[("topic", "prefix")]
    problems = []
    if values[("exchange", "type")] == "topic" and not re.fullmatch(r"[^#*]*", prefix):
        problems.append(f"{path}: [topic] prefix = {prefix!r}: must not contain * or #")
    if prefix and (prefix.startswith(".") or prefix.endswith(".") or ".." in prefix):
        problems.append(f"{path}: [topic] prefix = {prefix!r} would make an empty routing-key token: "
                        "write it without a leading, trailing or doubled '.' "
                        f"(e.g. {'.'.join(filter(None, prefix.split('.')))!r})")
    size = len(prefix.encode("utf-8", "surrogatepass"))
    if size > MAX_PREFIX_BYTES:
        problems.append(f"{path}: [topic] prefix is {size} bytes long: at most {MAX_PREFIX_BYTES} bytes, so that "
                        "routing keys (255 bytes at most) keep room for the type and the names")
    return problems


def _sending_checks(values: dict, path: str) -> list[str]:
    """What connecting needs: credentials, TLS files."""
    problems = []
    auth = values[("broker", "auth")]
    for url in values[("broker", "urls")]:
        if "@" in (urlsplit(url).netloc or ""):
            problems.append(f"{path}: [broker] urls = {redact_url(url)!r}: credentials in URLs are not used; "
                            "put them in username and password (or password_file)")
    if uses_password(auth):
        if not values[("broker", "username")]:
            problems.append(f"{path}: [broker] username is empty: auth = {auth} needs username and password")
        if not values[("broker", "password")]:
            problems.append(f"{path}: [broker] password is empty: auth = {auth} needs a password "
                            "(password or password_file)")
    if auth not in BUILTIN_MECHS and auth != "GSSAPI" and not has_cyrus_sasl():
        problems.append(f"{path}: [broker] auth = {auth}: proton has only PLAIN, EXTERNAL and ANONYMOUS without "
                        "Cyrus SASL (proton.SASL.extended() is False); reinstall it with libsasl2-dev present")
    if auth == "EXTERNAL" and not values[("broker", "cert")]:
        problems.append(f"{path}: [broker] cert is empty: auth = EXTERNAL authenticates with a client "
                        "certificate; set cert (and key)")
    tls_used = values[("broker", "ssl")] or any(u.startswith("amqps:") for u in values[("broker", "urls")])
    if auth == "EXTERNAL" and not tls_used:
        problems.append(f"{path}: [broker] auth = EXTERNAL needs TLS: set ssl = true or use amqps:// URLs")
    if auth == "GSSAPI":
        if not values[("broker", "principal")]:
            problems.append(f"{path}: [broker] principal is empty: auth = GSSAPI needs principal and keytab")
        if not values[("broker", "keytab")]:
            problems.append(f"{path}: [broker] keytab is empty: auth = GSSAPI needs principal and keytab")
        if values[("broker", "vhost")]:
            problems.append(f"{path}: [broker] vhost = {values[('broker', 'vhost')]!r} cannot be used with auth = "
                            "GSSAPI: proton would ask Kerberos for amqp/vhost:NAME instead of amqp/HOST; leave "
                            "vhost empty")
        if values[("broker", "service")] != "amqp":
            problems.append(f"{path}: [broker] service = {values[('broker', 'service')]!r}: proton's Cyrus SASL "
                            "always asks for the service principal amqp/HOST@REALM; only service = amqp works")
        if not has_cyrus_sasl():
            problems.append(f"{path}: [broker] auth = GSSAPI: this python-qpid-proton has no Cyrus SASL "
                            "(proton.SASL.extended() is False); reinstall it with libsasl2-dev present")
    for key in ("cacert", "cert", "key", "keytab"):
        file = values[("broker", key)]
        if file and not os.access(file, os.R_OK):
            problems.append(f"{path}: [broker] {key} = {file!r}: file missing or not readable")
    if values[("broker", "key")] and not values[("broker", "cert")]:
        problems.append(f"{path}: [broker] key is set but cert is empty: set cert too")
    return problems
