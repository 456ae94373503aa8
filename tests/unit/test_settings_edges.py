"""Config edge cases: each gives one clear line at load time (file, section, key, fix), and none
hangs, echoes a secret or is silently changed."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from koji_messagebus.config.hubconf import DatabaseSettings, HubConfigError
from koji_messagebus.config.settings import ConfigError, load_config, redact_url

MINIMAL = "[broker]\nusername = koji\npassword = s3cret\n"


def conf(tmp_path, text: str) -> str:
    path = tmp_path / "messagebus.conf"
    path.write_text(text)
    os.chmod(path, 0o600)
    return str(path)


def problems(path: str, **kw) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(path, **kw)
    return err.value.problems


def problems_within(path: str, fifo: str, seconds: float = 5.0) -> list[str]:
    """problems(path), failing (not hanging) if load_config blocks on `fifo` for `seconds`."""
    result: list = []
    reader = threading.Thread(target=lambda: result.append(problems(path)), daemon=True)
    reader.start()
    reader.join(seconds)
    if reader.is_alive():  # unblock the reader that would otherwise hang forever
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        reader.join(seconds)
        pytest.fail(f"load_config blocked on the FIFO {fifo}")
    return result[0]


def test_a_fifo_as_config_is_refused_at_once(tmp_path):
    fifo = str(tmp_path / "messagebus.conf")
    os.mkfifo(fifo)
    (line,) = problems_within(fifo, fifo)
    assert line.startswith(f"{fifo}: cannot be read") and "FIFO" in line and "regular file" in line


def test_a_directory_as_config_is_refused(tmp_path):
    (line,) = problems(str(tmp_path))
    assert "a directory, not a regular file" in line


def test_a_fifo_as_password_file_is_refused(tmp_path):
    fifo = str(tmp_path / "pw")
    os.mkfifo(fifo)
    path = conf(tmp_path, f"[broker]\nusername = koji\npassword_file = {fifo}\n")
    line = problems_within(path, fifo)[0]
    assert "[broker] password_file" in line and "FIFO" in line


@pytest.mark.parametrize("template", ["/exchange/{name.upper}", "/x/{name[0]}", "/x/{routing_key!r}",
                                      "/x/{name:>10}", "/x/{other}", "/x/{}", "/x/{0}", "/x/{name"])
def test_address_templates_name_only_the_known_fields(tmp_path, template):
    (line,) = problems(conf(tmp_path, MINIMAL + f"[exchange]\naddress = {template}\n"))
    assert line.startswith(f"{tmp_path}/messagebus.conf: [exchange] address = ") and "is invalid" in line


def test_known_address_fields_pass(tmp_path):
    cfg = load_config(conf(tmp_path, MINIMAL + "[exchange]\naddress = /exchanges/{name}/{routing_key}\n"))
    assert cfg.exchange.message_to("k") == "/exchanges/koji.events/k"


def test_routing_keys_in_addresses_are_percent_encoded(tmp_path):
    """RabbitMQ 4.x rejects `to` = /exchanges/X/f44/updates and routes /exchanges/X/f44%2Fupdates
    with the key f44/updates."""
    cfg = load_config(conf(tmp_path, MINIMAL + "[exchange]\naddress = /exchanges/{name}/{routing_key}\n"))
    assert cfg.exchange.message_to("koji.event.Tag.f44/updates.bash.~none~") == \
        "/exchanges/koji.events/koji.event.Tag.f44%2Fupdates.bash.~none~"
    assert cfg.exchange.message_to("k.ü.a b#") == "/exchanges/koji.events/k.%C3%BC.a%20b%23"


def test_port_zero_is_refused(tmp_path):
    (line,) = problems(conf(tmp_path, MINIMAL + "urls = amqp://mq.example.com:0\n"))
    assert "[broker] urls = 'amqp://mq.example.com:0' is invalid" in line


@pytest.mark.parametrize("prefix", ["koji.", ".koji", "koji..event", "."])
def test_prefix_with_an_empty_token_is_refused(tmp_path, prefix):
    (line,) = problems(conf(tmp_path, MINIMAL + f"[topic]\nprefix = {prefix}\n"))
    assert line.startswith(f"{tmp_path}/messagebus.conf: [topic] prefix = {prefix!r} would make an empty")


def test_prefix_too_long_for_routing_keys_is_refused(tmp_path):
    (line,) = problems(conf(tmp_path, MINIMAL + "[topic]\nprefix = " + "p" * 129 + "\n"))
    assert "[topic] prefix is 129 bytes long: at most 128 bytes" in line


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


def test_preview_mode_needs_no_credentials(tmp_path):
    """`preview` never connects: a config without username/password (auth = PLAIN) is fine there."""
    path = conf(tmp_path, "[topic]\nprefix = org.example\n")
    assert any("username is empty" in p for p in problems(path))
    assert load_config(path, for_sending=False).topic.prefix == "org.example"
    assert any("prefix" in p for p in problems(conf(tmp_path, "[topic]\nprefix = a.\n"), for_sending=False))


# ---- secrets ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("urls", ["amqp://koji:hunter 2x@mq.example.com",
                                  "amqp://koji:hunter 2x 3y@mq amqps://x:y z@mq2",
                                  "amqps://ok.example.com amqp://koji:hunter 2x@mq"])
def test_a_password_with_spaces_in_urls_is_never_shown(tmp_path, urls, caplog):
    from koji_messagebus.runtime import Runtime

    path = conf(tmp_path, MINIMAL + f"urls = {urls}\n")
    shown = "\n".join(problems(path))
    with caplog.at_level(logging.ERROR, logger="koji.plugin.messagebus"):
        Runtime(config_path=path)
    logged = caplog.text
    for secret in ("hunter", "2x", "3y", "y z", "z@"):
        assert secret not in shown and secret not in logged
    assert "***@" in shown and "***@" in logged


def test_redact_url_by_structure():
    assert redact_url("amqp://u:pa ss@h:5672 amqps://h2") == "amqp://***@h:5672 amqps://h2"
    assert redact_url("amqp://u:p@s:s/x@h/v") == "amqp://***@h/v"
    assert redact_url("amqp://h amqps://h2:5671") == "amqp://h amqps://h2:5671"


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


# ---- typed settings ---------------------------------------------------------------------------------
def test_typed_sections_hold_every_option_parsed_once(tmp_path):
    import dataclasses

    from koji_messagebus.config.settings import OPTIONS

    cfg = load_config(conf(tmp_path, MINIMAL + "timeout = 2.5\nurls = amqp://a amqp://b:5673\n"
                           "[exchange]\nname = kx\ndurable = false\n[outbox]\nenabled = yes\n"))
    assert cfg.broker.timeout == 2.5 and type(cfg.broker.timeout) is float and cfg.broker.urls == ("amqp://a",
                                                                                                 "amqp://b:5673")
    assert cfg.exchange.name == "kx" and cfg.exchange.durable is False and cfg.exchange.type == "topic"
    assert not isinstance(cfg.exchange, str)  # no longer the name itself (it was, for a while): say .name
    assert cfg.outbox.enabled is True and cfg.outbox.batch_size == 500 and cfg.topic.prefix == "koji.event"
    sections = {"broker": cfg.broker, "exchange": cfg.exchange, "topic": cfg.topic, "outbox": cfg.outbox,
                "message": cfg.message, "status": cfg.status}
    for opt in OPTIONS:  # OPTIONS stays the one source: every option has its typed attribute
        got = getattr(sections[opt.section], opt.key)
        raw = cfg.values[(opt.section, opt.key)]
        assert got == (tuple(raw) if opt.key == "urls" else raw)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.broker.timeout = 1.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        cfg.exchange.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.values[("broker", "timeout")] = 1.0  # type: ignore[index]
    assert "s3cret" not in repr(cfg.broker) and "s3cret" not in repr(cfg)


def test_replacing_values_recomputes_the_typed_sections(tmp_path):
    import dataclasses

    cfg = load_config(conf(tmp_path, MINIMAL))
    other = dataclasses.replace(cfg, values={**cfg.values, ("exchange", "name"): "elsewhere"})
    assert other.exchange.name == "elsewhere" and other.exchange.target_address() in (None, "/exchange/elsewhere")


# ---- config lines that explain: file, line, section, key, fix; one line each (issue 21) ---------
def one_line(path: str, **kw) -> str:
    (line,) = problems(path, **kw)
    assert "\n" not in line and line.startswith(f"{path}: ")
    return line


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


def test_a_huge_file_is_not_called_the_wrong_kind_of_file(tmp_path):
    path = tmp_path / "messagebus.conf"
    path.write_bytes(MINIMAL.encode() + b"#" * (10 << 20))
    line = one_line(str(path))
    assert f"it is {len(MINIMAL) + (10 << 20)} bytes, more than a config file may hold" in line
    assert "the config file itself" not in line and "fix: point KOJI_MESSAGEBUS_CONFIG at" in line


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


def test_retention_ttl_size_and_status_options(tmp_path):
    cfg = load_config(conf(tmp_path, MINIMAL + "[outbox]\nkeep = 3600\n[message]\nttl = 2.5\nmax_size = 64k\n"
                           "[status]\ndir = /srv/kmb\n"))
    assert cfg.outbox.keep == 3600.0 and cfg.message.ttl == 2.5 and cfg.message.max_size == 65536
    assert cfg.status.dir == "/srv/kmb"
    cfg = load_config(conf(tmp_path, MINIMAL + "[message]\nttl = none\nmax_size = 2M\n"))
    assert cfg.message.ttl is None and cfg.message.max_size == 2 * 1024 * 1024
    cfg = load_config(conf(tmp_path, MINIMAL))
    assert cfg.outbox.keep == 0 and cfg.message.ttl is None and cfg.message.max_size is None
    lines = problems(conf(tmp_path, MINIMAL + "[outbox]\nkeep = -1\n[message]\nttl = 0\nmax_size = 100\n"))
    assert any("[outbox] keep" in line and "a number of seconds >= 0" in line for line in lines)
    assert any("[message] ttl" in line and "a number of seconds > 0, or none" in line for line in lines)
    assert any("[message] max_size" in line and "1024 bytes to 128M" in line for line in lines)


def test_defaults_are_written_once_in_options_not_in_the_typed_sections():
    import dataclasses

    from koji_messagebus.config.settings import _SECTIONS

    for cls in _SECTIONS.values():
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, (cls, f.name)
