"""hub.conf database settings (koji_messagebus.config.hubconf), read with koji's own config reader."""

from __future__ import annotations

import logging
import time

import pytest

from koji_messagebus.config.hubconf import DatabaseSettings, HubConfigError, read_database_settings


def hub_conf(tmp_path, text: str, name: str = "hub.conf"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_db_keys_of_the_hub_section(tmp_path):
    path = hub_conf(tmp_path, "[hub]\nDBName = koji\nDBUser = koji\nDBHost = db.example.com\nDBPort = 5433\n"
                              "DBPass = s3cret\nKojiDir = /mnt/koji\n")
    settings = read_database_settings(path)
    assert settings.params == {"database": "koji", "user": "koji", "host": "db.example.com", "port": 5433,
                               "password": "s3cret"}
    assert "s3cret" not in settings.describe()
    assert settings.describe() == "database 'koji' on db.example.com:5433 as user 'koji'"


def test_old_spelling_dbhost_and_missing_optional_keys(tmp_path):
    settings = read_database_settings(hub_conf(tmp_path, "[hub]\nDBName = koji\nDBhost = 127.0.0.1\n"))
    assert settings.params == {"database": "koji", "host": "127.0.0.1"}
    assert "local socket" in read_database_settings(hub_conf(tmp_path, "[hub]\nDBName=koji\n")).describe()


def test_connection_string_wins(tmp_path):
    path = hub_conf(tmp_path, "[hub]\nDBName = ignored\nDBConnectionString = dbname=koji host=db password=x\n")
    settings = read_database_settings(path)
    assert settings.params == {"dsn": "dbname=koji host=db password=x"}
    assert "password" not in settings.describe() and "'koji'" in settings.describe()


def test_hub_conf_d_is_read_like_the_hub_does(tmp_path):
    path = hub_conf(tmp_path, "[hub]\nDBName = koji\nDBUser = koji\n")
    (tmp_path / "hub.conf.d").mkdir()
    (tmp_path / "hub.conf.d" / "db.conf").write_text("[hub]\nDBUser = kojihub\nDBHost = db2\n")
    params = read_database_settings(path).params
    assert params["user"] == "koji"  # hub.conf is read last and wins, as in kojixmlrpc
    assert params["host"] == "db2"


@pytest.mark.parametrize("text, expected", [
    ("[other]\nx = 1\n", "no [hub] section"),
    ("[hub]\nDBUser = koji\n", "DBName is not set"),
    ("[hub]\nDBName = koji\nDBPort = five\n", "DBPort = 'five' is invalid"),
    ("[hub\nbroken", "cannot be read"),
])
def test_problems_name_the_file_and_the_key(tmp_path, text, expected):
    path = hub_conf(tmp_path, text)
    with pytest.raises(HubConfigError) as exc:
        read_database_settings(path)
    assert expected in str(exc.value) and path in str(exc.value)


def test_missing_file_says_how_to_point_at_it(tmp_path):
    with pytest.raises(HubConfigError, match="not found: pass --hub-config or set \\[outbox\\] hub_config"):
        read_database_settings(str(tmp_path / "nope.conf"))


# ---- a password in a malformed DSN never leaks (issue 21) ---------------------------------------
#: DBConnectionStrings whose password is Db$ecret@pw... (port 1 on loopback: nothing listens there)
LEAKY_DSNS = [
    "postgresql://postgres:Db$ecret%40pw:/x@127.0.0.1:1/koji",  # the issue's: an unencoded '/' (libpq: port)
    "postgresql://koji:Db$ecret@pw@127.0.0.1:1/koji",  # an unencoded '@' (libpq: host 'pw@127.0.0.1')
    "postgresql://koji:Db$ecret?pw@127.0.0.1:1/koji",  # an unencoded '?' (libpq: a query)
    "postgres://koji:Db$ecret:pw@127.0.0.1:1/koji",  # a second ':'
    "postgresql://koji:Db%24ecret%40pw@127.0.0.1:1/koji",  # encoded as it should be: connection refused
    "dbname=koji user=koji password=Db$ecret@pw host=127.0.0.1 port=1",
    "dbname=koji password Db$ecret@pw",  # not parsable at all
]
#: every piece of those passwords that could give it away
PIECES = ["ecret", "Db%24", "ecret%40pw"]


def no_piece(text: str) -> None:
    for piece in PIECES:
        assert piece not in text, f"a piece of the password ({piece!r}) in: {text}"


@pytest.mark.parametrize("dsn", LEAKY_DSNS)
def test_no_piece_of_a_dsn_password_in_what_the_settings_say(tmp_path, dsn):
    settings = read_database_settings(hub_conf(tmp_path, f"[hub]\nDBConnectionString = {dsn}\n"))
    no_piece(settings.describe())
    with pytest.raises(HubConfigError) as exc:
        settings.connect()
    no_piece(str(exc.value))
    no_piece(settings.redact(f"libpq said: {dsn} {settings.params}"))


def test_a_uri_libpq_reads_otherwise_says_how_to_write_it(tmp_path):
    path = hub_conf(tmp_path, f"[hub]\nDBConnectionString = {LEAKY_DSNS[0]}\n")
    with pytest.raises(HubConfigError) as exc:
        read_database_settings(path).connect()
    text = str(exc.value)
    assert text.startswith(f"{path}: [hub] DBConnectionString: libpq reads the user name and password")
    assert "percent-encode" in text and "@ as %40" in text and "/ as %2F" in text


@pytest.mark.parametrize("command", [["outbox", "status"], ["outbox", "flush"]], ids=" ".join)
@pytest.mark.parametrize("dsn", LEAKY_DSNS)
def test_no_piece_of_a_dsn_password_from_the_outbox_commands(tmp_path, capsys, dsn, command):
    from koji_messagebus import cli

    path = hub_conf(tmp_path, f"[hub]\nDBConnectionString = {dsn}\n")
    assert cli.main([*command, "--hub-config", path]) != 0
    printed = capsys.readouterr()
    assert "error" in (printed.err + printed.out).lower()
    no_piece(printed.out + printed.err)


@pytest.mark.parametrize("dsn", LEAKY_DSNS)
def test_no_piece_of_a_dsn_password_from_check(tmp_path, capsys, dsn):
    from devkit.config import write_config
    from koji_messagebus.cli.check import check_outbox
    from koji_messagebus.config.settings import load_config

    path = hub_conf(tmp_path, f"[hub]\nDBConnectionString = {dsn}\n")
    assert check_outbox(load_config(write_config(str(tmp_path / "messagebus.conf"))), path) != 0
    printed = capsys.readouterr()
    no_piece(printed.out + printed.err)


class FakeSender:
    """What the drainer asks of the process's sender thread before it needs the database: a broker
    that is up, with no rows settled or abandoned (so the drainer goes straight to its drain)."""

    own_window, timeout, down = 1.0, 1.0, False

    def __init__(self):
        self.on_recovery: list = []
        self.on_rows: list = []

    def take_settled_rows(self):
        return []

    def take_abandoned_rows(self, size):
        return []


@pytest.mark.parametrize("dsn", LEAKY_DSNS)
def test_no_piece_of_a_dsn_password_in_the_hub_log(tmp_path, caplog, dsn):
    """The plugin's own database connection (the drainer's) logs what connect() raised at ERROR."""
    from devkit.config import write_config
    from koji_messagebus.config.settings import load_config
    from koji_messagebus.delivery import drainer
    from koji_messagebus.delivery.handoff import database_connector

    caplog.set_level(logging.DEBUG)
    path = hub_conf(tmp_path, f"[hub]\nDBConnectionString = {dsn}\n")
    config = load_config(write_config(str(tmp_path / "messagebus.conf"), outbox={"enabled": True, "hub_config": path}))
    connect = database_connector(config)
    assert connect is not None
    worker = drainer.Drainer(config, FakeSender(), connect)
    try:
        deadline = time.monotonic() + 10
        while worker.errors == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors, "the failure was not logged"
    for text in [r.getMessage() for r in caplog.records]:
        no_piece(text)


def test_a_malformed_dsn_never_echoes_its_password(tmp_path):
    settings = DatabaseSettings(str(tmp_path / "hub.conf"), {"dsn": "dbname=koji password hunter2 host=db"})
    with pytest.raises(HubConfigError) as err:
        settings.connect()
    assert "hunter2" not in str(err.value) and "DBConnectionString is not a valid" in str(err.value)
    assert "hunter2" not in settings.describe()


def test_connection_errors_never_echo_the_password(tmp_path):
    settings = DatabaseSettings("hub.conf", {"dsn": "host=127.0.0.1 port=1 dbname=x password=hunter2"})
    assert settings.redact("failed for password=hunter2") == "failed for password=***"
    with pytest.raises(HubConfigError) as err:
        settings.connect()
    assert "hunter2" not in str(err.value)
