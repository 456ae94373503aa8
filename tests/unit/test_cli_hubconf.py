"""hub.conf database settings (koji_messagebus.hubconf), read with koji's own config reader."""

from __future__ import annotations

import pytest

from koji_messagebus.hubconf import HubConfigError, read_database_settings


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
