"""The hub's database settings, read from hub.conf as the hub reads them.

kojixmlrpc reads `/etc/koji-hub/hub.conf.d/*.conf` and `hub.conf` with koji's own
`read_config_files`, then connects with `DBConnectionString` if set, otherwise with DBName,
DBUser, DBHost (alias DBhost), DBPort and DBPass of the `[hub]` section.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from typing import Any

DEFAULT_HUB_CONFIG = "/etc/koji-hub/hub.conf"


class HubConfigError(Exception):
    """hub.conf missing, unreadable or without database settings."""


@dataclass(frozen=True)
class DatabaseSettings:
    """psycopg2.connect() keyword arguments (`dsn` or database/user/host/port/password)."""

    path: str
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """Where the database is, without the password."""
        p = self.params
        if "dsn" in p:
            try:
                from psycopg2.extensions import parse_dsn

                p = {("database" if k == "dbname" else k): v for k, v in parse_dsn(p["dsn"]).items()}
            except Exception:  # noqa: BLE001 - psycopg2 missing or a DSN it cannot parse
                return "the database of DBConnectionString"
        where = p.get("host") or "local socket"
        if p.get("port"):
            where += f":{p['port']}"
        return f"database '{p.get('database')}' on {where} as user '{p.get('user') or '(default)'}'"

    def redact(self, text: str) -> str:
        """`text` with the password (from DBPass or the parsed DBConnectionString) replaced by ***."""
        secret = self.params.get("password")
        if "dsn" in self.params:
            try:
                from psycopg2.extensions import parse_dsn

                secret = parse_dsn(self.params["dsn"]).get("password")
            except Exception:  # noqa: BLE001 - psycopg2 missing or a DSN it cannot parse
                secret = None
        return text.replace(secret, "***") if secret else text

    def connect(self):
        """A psycopg2 connection (psycopg2 is needed only for the outbox commands)."""
        try:
            import psycopg2
        except ImportError:
            raise HubConfigError("the outbox commands need psycopg2: pip install 'koji-messagebus[outbox]'") from None
        if "dsn" in self.params:
            from psycopg2.extensions import parse_dsn
            try:
                parse_dsn(self.params["dsn"])
            except psycopg2.Error:  # its text quotes the DSN, password included: not shown
                raise HubConfigError(f"{self.path}: [hub] DBConnectionString is not a valid libpq connection string "
                                     "(not shown: it holds the password); write it as key=value pairs, e.g. "
                                     "'dbname=koji user=koji host=db.example.com'") from None
        try:
            cnx = psycopg2.connect(**self.params)
        except psycopg2.Error as exc:
            first = self.redact((str(exc).strip().splitlines() or ["connection failed"])[0])
            raise HubConfigError(f"cannot connect to the hub database ({self.describe()}, from {self.path}): "
                                 f"{first}") from None
        cnx.set_client_encoding("UTF8")
        return cnx


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
