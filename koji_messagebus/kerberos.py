"""Kerberos for `auth = GSSAPI`: a ticket from the keytab in a private credential cache.

As Koji's legacy messagebus plugin did, the hub process authenticates as `principal` with the
key in `keytab`; the ticket goes into a credential cache of its own (in memory, this process
only), never the hub's or a user's.  proton's Cyrus SASL GSSAPI plugin uses the default
credential cache, so the cache is made the default *of the calling thread*
(`gss_krb5_ccache_name`, MIT): the thread that opens the broker connection, and only it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass

from koji_messagebus.errors import BusError

_lock = threading.Lock()


class KerberosError(BusError):
    """No ticket could be had; the message names principal, keytab and the Kerberos reason."""


@dataclass(frozen=True)
class Ticket:
    ccache: str
    principal: str
    lifetime: int | None  # seconds left, None when unknown


def ccache_name(principal: str, keytab: str) -> str:
    """This process's private credential cache for principal and keytab (in memory: gone with
    the process)."""
    tag = hashlib.sha256(f"{principal}\0{os.path.abspath(keytab)}".encode()).hexdigest()[:12]
    return f"MEMORY:koji-messagebus-{os.getpid()}-{tag}"


def obtain_ticket(principal: str, keytab: str) -> Ticket:
    """Get (or reuse, while it is valid) a ticket for `principal` from `keytab` and make the private
    cache the default for this thread; raise KerberosError saying why not."""
    try:
        import gssapi
        from gssapi.raw import krb5_ccache_name
    except ImportError as exc:  # pragma: no cover - gssapi is a koji dependency
        raise KerberosError(f"auth = GSSAPI needs the python gssapi module ({exc})") from None
    ccache = ccache_name(principal, keytab)
    where = f"Kerberos ticket for principal '{principal}' from keytab {keytab}"
    if not os.access(keytab, os.R_OK):
        raise KerberosError(f"cannot get a {where}: the keytab is missing or not readable by this process")
    with _lock:
        try:
            name = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
            creds = gssapi.Credentials(name=name, usage="initiate",
                                       store={"client_keytab": keytab, "ccache": ccache})
            # inquiring resolves the credential: MIT gets the initial ticket from the client keytab
            # now (or renews it when close to expiry) instead of in the middle of the SASL exchange
            lifetime = creds.lifetime
            got = str(creds.name)
        except gssapi.exceptions.GSSError as exc:
            raise KerberosError(f"cannot get a {where}: {_gss_reason(exc, keytab)}") from None
        krb5_ccache_name(ccache.encode())
    return Ticket(ccache, got, lifetime)


def _gss_reason(exc: Exception, keytab: str) -> str:
    """The Kerberos reason of a GSSError on one line, with a hint for the usual causes."""
    text = " ".join(str(exc).split())
    minor = text.split("Minor (", 1)[-1].split("): ", 1)[-1] if "Minor (" in text else text
    if "No credentials cache found" in minor or "Keytab contains no suitable keys" in minor:
        return (f"{minor}: the keytab has no usable key for this principal (check the principal's exact "
                f"name and realm with: klist -k {keytab})")
    return minor
