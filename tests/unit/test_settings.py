"""Loading a Config: defaults, the file found and read, one clear line per problem (file, line,
section, key, fix), the hub told at load time."""

from __future__ import annotations

import logging
import os

import pytest

from koji_messagebus.config.settings import ConfigError, load_config
from tests.support.conffile import MINIMAL, conf, one_line, parsed, problems


def test_defaults(tmp_path):
    cfg = load_config(conf(tmp_path, MINIMAL))
    assert [str(e) for e in cfg.endpoints] == ["amqp://localhost:5672"]
    assert cfg.broker.auth == "PLAIN" and cfg.broker.timeout == 10.0
    assert cfg.exchange.name == "koji.events" and cfg.exchange.type == "topic"
    assert cfg.topic.prefix == "koji.event" and cfg.outbox.enabled is False
    assert cfg.exchange.address == "auto"  # chosen per broker once connected (amqp.address)
    assert cfg.exchange.target_address() is None and cfg.exchange.message_to("k") is None


def test_ssl_default_port_and_urls(tmp_path):
    cfg = load_config(conf(tmp_path, MINIMAL + "ssl = true\nhost = mq.example.com\n"))
    assert [str(e) for e in cfg.endpoints] == ["amqps://mq.example.com:5671"]
    cfg = load_config(conf(tmp_path, MINIMAL + "urls = amqps://a.example.com amqp://b:5673\n"))
    assert [str(e) for e in cfg.endpoints] == ["amqps://a.example.com:5671", "amqp://b:5673"]


def test_env_var_selects_the_file(tmp_path, monkeypatch):
    path = conf(tmp_path, MINIMAL + "[exchange]\nname = from.env\n")
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", path)
    assert load_config().exchange.name == "from.env"


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(str(tmp_path / "nope.conf"))
    assert "nope.conf: file not found" in str(err.value)


def test_password_file(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    os.chmod(pw, 0o600)
    cfg = load_config(conf(tmp_path, f"[broker]\nusername = u\npassword_file = {pw}\n"))
    assert cfg.broker.password == "from-file"


def test_an_empty_unknown_section_is_warned_about(tmp_path):
    cfg = load_config(conf(tmp_path, MINIMAL + "[brokr]\n"))
    assert f"{tmp_path}/messagebus.conf: [brokr]: unknown section, ignored (sections: broker, exchange, " \
           "topic, outbox, message, status); fix: correct its name or remove it" in cfg.warnings


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "messagebus.conf"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    os.chmod(path, 0o600)
    assert load_config(str(path)).broker.username == "koji"


def test_not_utf8_names_the_byte(tmp_path):
    path = tmp_path / "messagebus.conf"
    path.write_bytes(MINIMAL.encode() + b"vhost = \xff\n")
    (line,) = problems(str(path))
    assert "not UTF-8" in line and "save it as UTF-8" in line


def test_config_repr_hides_the_password(tmp_path):
    cfg = parsed(tmp_path, username="koji", password="S3cret-in-conf")
    assert "S3cret-in-conf" not in repr(cfg) and "'broker.password': '***'" in repr(cfg)
    assert "S3cret-in-conf" not in str(cfg)


# ---- the hub logs config problems when it loads the plugin -------------------------------------------
def test_config_problems_are_logged_when_the_hub_loads_the_plugin(tmp_path, monkeypatch, caplog):
    from tests.support.hub import load_plugin, unload_plugin

    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf(tmp_path, "[broker]\nusername = koji\n[brokr]\n"))
    try:
        with caplog.at_level(logging.WARNING, logger="koji.plugin.messagebus"):
            load_plugin()
        text = caplog.text
        assert "messagebus plugin disabled" in text and "password is empty" in text
    finally:
        unload_plugin()
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf(tmp_path, MINIMAL + "[brokr]\n"))
    caplog.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="koji.plugin.messagebus"):
            load_plugin()
        assert "[brokr]: unknown section" in caplog.text
        from koji_messagebus import plugin as mb_plugin
        assert mb_plugin.runtime().delivery is None  # nothing connected at load time
    finally:
        unload_plugin()


def test_preview_command_with_a_config_without_credentials(tmp_path, capsys):
    from koji_messagebus import cli

    path = conf(tmp_path, "[topic]\nprefix = org.example\n")
    assert cli.main(["preview", "Tag", "--config", path, "--json"]) == 0
    assert capsys.readouterr().out.count("org.example.Tag.") >= 1


def test_a_key_before_any_section_names_its_line_and_section(tmp_path):
    path = conf(tmp_path, "# koji messagebus\nusername = koji\npassword = hunter2\n[broker]\n")
    line = one_line(path)
    assert line == (f"{path}: line 2: username comes before any section; fix: put [broker] on a line above it "
                    "(`koji-messagebus sample-config` prints every key with its section)")


def test_an_empty_file_says_it_is_empty_not_that_username_is_empty(tmp_path):
    for text in ("", "\n\n", "# only a comment\n"):
        line = one_line(conf(tmp_path, text))
        assert "line 1: the file holds no settings" in line and "fix: write [broker] with username" in line
    assert load_config(conf(tmp_path, ""), for_sending=False).topic.prefix == "koji.event"  # preview


def test_invalid_utf8_names_the_line_section_and_key(tmp_path):
    path = tmp_path / "messagebus.conf"
    path.write_bytes(MINIMAL.encode() + b"[exchange]\nname = koji\xff.events\n")
    line = one_line(str(path))
    assert line == (f"{path}: line 5 ([exchange] name): not UTF-8 (byte 0xff at column 12); "
                    "fix: save it as UTF-8")


def test_a_misspelt_section_with_keys_is_one_line_with_a_guess(tmp_path):
    path = conf(tmp_path, "[brokre]\nusername = koji\npassword = hunter2\n")
    line = one_line(path)
    assert line == (f"{path}: line 1: unknown section [brokre] (holding username, password); "
                    "did you mean [broker]? fix: rename it [broker]")
    assert "hunter2" not in line


def test_an_unknown_section_is_guessed_by_its_keys(tmp_path):
    path = conf(tmp_path, MINIMAL + "\n[publish]\nprefix = org.example\n")
    assert one_line(path).endswith("unknown section [publish] (holding prefix); did you mean [topic]? "
                                   "fix: rename it [topic]")


@pytest.mark.parametrize("text, expected", [
    (MINIMAL + "timeout = 1\ntimeout = 2\n", "line 5: [broker] timeout is set twice; fix: keep only one"),
    (MINIMAL + "[broker]\n", "line 4: [broker] appears twice; fix: merge the two"),
    (MINIMAL + "password hunter2\n", "line 4 ([broker]): not a `key = value` line; fix:"),
])
def test_configparser_errors_are_one_line_without_the_text(tmp_path, text, expected):
    line = one_line(conf(tmp_path, text))
    assert expected in line and "hunter2" not in line


def test_the_hub_logs_one_error_record_a_problem_without_newlines(tmp_path, monkeypatch, caplog):
    from tests.support.hub import load_plugin, unload_plugin

    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf(tmp_path, "[broker]\ntimeout = x\nheartbeat = y\n"))
    try:
        with caplog.at_level(logging.WARNING, logger="koji.plugin.messagebus"):
            load_plugin()
    finally:
        unload_plugin()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 4, errors  # timeout, heartbeat, username, password
    assert all("\n" not in e and e.startswith("messagebus plugin disabled: ") for e in errors)
