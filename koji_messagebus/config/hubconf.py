"""The hub's database settings, read from hub.conf as the hub reads them.

kojixmlrpc reads `/etc/koji-hub/hub.conf.d/*.conf` and `hub.conf` with koji's own
`read_config_files`, then connects with `DBConnectionString` if set, otherwise with DBName,
DBUser, DBHost (alias DBhost), DBPort and DBPass of the `[hub]` section.
"""

from __future__ import annotations

import configparser
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from koji_messagebus.errors import SettingsError, first_line

DEFAULT_HUB_CONFIG = "/etc/koji-hub/hub.conf"


class HubConfigError(SettingsError):
    """hub.conf missing, unreadable or without database settings."""


_URI = re.compile(r"(?i)^\s*postgres(?:ql)?://")


@dataclass(frozen=True)
class DsnReading:
    """How libpq reads a DBConnectionString, and which of its texts may hold the password.

    `parsed` is libpq's reading (None when it cannot parse it).  `as_written` is False when libpq
    reads a URI's user information otherwise than it is written (a reserved character such as `/`,
    `:` or `@` left unencoded in the password): then any part of libpq's reading may hold a piece
    of the password, so none of it is shown, and the plugin does not connect."""

    parsed: dict[str, str] | None
    as_written: bool
    secrets: tuple[str, ...]


def read_dsn(dsn: str) -> DsnReading:
    """libpq's reading of `dsn`, judged against its structure: in a URI everything between the
    scheme and the last `@` is user information, whatever characters the password holds."""
    try:
        from psycopg2.extensions import parse_dsn

        parsed: dict[str, str] | None = parse_dsn(dsn)
    except Exception:  # noqa: BLE001 - psycopg2 missing or a DSN it cannot parse (its text quotes the DSN)
        parsed = None
    secrets: list[str] = [parsed["password"]] if parsed and parsed.get("password") else []
    if parsed is None:
        secrets.append(dsn)  # never echoed: where its password is, only libpq could say
    scheme = _URI.match(dsn)
    if not scheme or "@" not in dsn[scheme.end():]:
        return DsnReading(parsed, parsed is not None, _longest_first(secrets))
    userinfo = dsn[scheme.end():dsn.rindex("@")]
    user, colon, password = userinfo.partition(":")
    meant = (urllib.parse.unquote(user), urllib.parse.unquote(password) if colon else None)
    as_written = parsed is not None and (parsed.get("user"), parsed.get("password")) == meant
    secrets += [password, urllib.parse.unquote(password)] if colon else []
    if not as_written:  # the whole user information, and whatever libpq made of it, may hold a piece
        secrets += [userinfo, urllib.parse.unquote(userinfo), *(v for v in (parsed or {}).values() if v)]
    return DsnReading(parsed, as_written, _longest_first(secrets))


def _longest_first(texts: list[str]) -> tuple[str, ...]:
    return tuple(sorted({t for t in texts if t}, key=len, reverse=True))


@dataclass(frozen=True)
class DatabaseSettings:
    """psycopg2.connect() keyword arguments (`dsn` or database/user/host/port/password)."""

    path: str
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """Where the database is, without the password."""
        p = self.params
        if "dsn" in p:
            reading = read_dsn(p["dsn"])
            if reading.parsed is None or not reading.as_written:
                return "the database of DBConnectionString"
            p = {("database" if k == "dbname" else k): v for k, v in reading.parsed.items()}
        where = p.get("host") or "local socket"
        if p.get("port"):
            where += f":{p['port']}"
        return self.redact(f"database '{p.get('database')}' on {where} as user '{p.get('user') or '(default)'}'")

    def redact(self, text: str) -> str:
        """`text` with every part of the settings that may hold the password replaced by ***: DBPass,
        or the password of DBConnectionString (as written and as libpq read it; all of libpq's
        reading when it differs from what is written)."""
        if "dsn" in self.params:
            secrets: tuple[str, ...] = read_dsn(self.params["dsn"]).secrets
        else:
            secrets = (self.params["password"],) if self.params.get("password") else ()
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    def connect(self):
        """A psycopg2 connection (psycopg2 is needed only for the outbox commands)."""
        try:
            import psycopg2
        except ImportError:
            raise HubConfigError("the outbox commands need psycopg2: pip install 'koji-messagebus[outbox]'") from None
        if "dsn" in self.params:
            reading = read_dsn(self.params["dsn"])
            if reading.parsed is None:  # its text quotes the DSN, password included: not shown
                raise HubConfigError(f"{self.path}: [hub] DBConnectionString is not a valid libpq connection string "
                                     "(not shown: it holds the password); write it as key=value pairs, e.g. "
                                     "'dbname=koji user=koji host=db.example.com'")
            if not reading.as_written:
                raise HubConfigError(f"{self.path}: [hub] DBConnectionString: libpq reads the user name and "
                                     "password of this postgresql:// URI otherwise than written (not shown: it "
                                     "holds the password); percent-encode their reserved characters (@ as %40, "
                                     ": as %3A, / as %2F, ? as %3F, # as %23, % as %25), or write it as key=value "
                                     "pairs, e.g. 'dbname=koji user=koji host=db.example.com password=...'")
        params = dict(self.params)
        if "PGAPPNAME" not in os.environ and "application_name" not in params.get("dsn", ""):
            params["application_name"] = APPLICATION_NAME  # the plugin's connections, told apart in pg_stat_activity
        try:
            cnx = psycopg2.connect(**params)
        except psycopg2.Error as exc:
            first = self.redact(first_line(exc))
            raise HubConfigError(f"cannot connect to the hub database ({self.describe()}, from {self.path}): "
                                 f"{first}") from None
        cnx.set_client_encoding("UTF8")
        return cnx


#: application_name of the plugin's own database connections (the drainer, the outbox commands)
APPLICATION_NAME = "koji-messagebus"


def config_dir(hub_config: str) -> str:
    """The hub.conf.d directory next to hub.conf."""
    return os.path.join(os.path.dirname(os.path.abspath(hub_config)), "hub.conf.d")


def read_database_settings(hub_config: str = DEFAULT_HUB_CONFIG) -> DatabaseSettings:
    """The `[hub]` database settings of hub.conf (+ hub.conf.d); HubConfigError naming the fix."""
    if not os.path.isfile(hub_config):
        raise HubConfigError(f"hub config {hub_config} not found: pass --hub-config or set [outbox] hub_config "
                             "in messagebus.conf")
    import koji  # the hub's own reader; imported here so that commands without a database need no koji

    try:
        parser = koji.read_config_files([config_dir(hub_config), (hub_config, True)], raw=True)
    except (OSError, configparser.Error, koji.GenericError) as exc:
        raise HubConfigError(f"hub config {hub_config} cannot be read: {exc}") from None
    if not parser.has_section("hub"):
        raise HubConfigError(f"{hub_config}: no [hub] section")
    hub = dict(parser.items("hub"))  # configparser lower-cases the keys

    def get(key: str) -> str | None:
        value = hub.get(key.lower())
        return value.strip() if value is not None and value.strip() else None

    dsn = get("DBConnectionString")
    if dsn:
        return DatabaseSettings(hub_config, {"dsn": dsn})
    if not get("DBName"):
        raise HubConfigError(f"{hub_config}: [hub] DBName is not set (nor DBConnectionString)")
    params: dict[str, Any] = {"database": get("DBName"), "user": get("DBUser"), "password": get("DBPass"),
                              "host": get("DBHost")}  # DBhost (old spelling) is the same key here
    port = get("DBPort")
    if port:
        try:
            params["port"] = int(port)
        except ValueError:
            raise HubConfigError(f"{hub_config}: [hub] DBPort = {port!r} is invalid: must be an integer") from None
    return DatabaseSettings(hub_config, {k: v for k, v in params.items() if v is not None})
