"""Config: defaults, every problem reported at once with file/section/key/value/allowed, warnings."""

from __future__ import annotations

import configparser
import os

import pytest

from koji_messagebus.config.settings import OPTIONS, ConfigError, load_config, redact_url
from koji_messagebus.transaction.outbox import SCHEMA

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def conf(tmp_path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "messagebus.conf"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


MINIMAL = "[broker]\nusername = koji\npassword = s3cret\n"


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


def test_address_templates(tmp_path):
    cfg = load_config(conf(tmp_path, MINIMAL + "[exchange]\nname = ex\naddress = /exchanges/{name}/{routing_key}\n"))
    assert cfg.exchange.target_address() is None
    assert cfg.exchange.message_to("koji.event.Tag.x") == "/exchanges/ex/koji.event.Tag.x"
    cfg = load_config(conf(tmp_path, MINIMAL + "[exchange]\nname = ex\naddress = {name}\n"))
    assert cfg.exchange.target_address() == "ex"


def test_every_problem_at_once_with_file_section_key_value_and_allowed(tmp_path):
    path = conf(tmp_path, "[broker]\nport = 99999\nauth = KERBEROS\ntimeout = -1\nssl = maybe\nbogus = 1\n"
                          "[exchange]\ntype = fanout\naddress = /x/{nope}\n[outbox]\nbatch_size = 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    problems = err.value.problems
    text = "\n".join(problems)
    assert all(p.startswith(path) for p in problems)
    assert "[broker] port = '99999' is invalid: must be an integer from 1 to 65535" in text
    assert "[broker] auth = 'KERBEROS' is invalid: must be PLAIN, EXTERNAL, ANONYMOUS, GSSAPI" in text
    assert "[broker] timeout = '-1' is invalid: must be a number of seconds > 0" in text
    assert "[broker] ssl = 'maybe' is invalid: must be true or false" in text
    assert "[broker] bogus: unknown key" in text
    assert "[exchange] type = 'fanout' is invalid: must be topic or headers" in text
    assert "[exchange] address = '/x/{nope}' is invalid" in text
    assert "[outbox] batch_size = '0' is invalid" in text
    assert len(problems) >= 8


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(str(tmp_path / "nope.conf"))
    assert "nope.conf: file not found" in str(err.value)


def test_plain_needs_credentials(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(conf(tmp_path, "[broker]\nauth = PLAIN\n"))
    assert "[broker] username is empty" in str(err.value) and "[broker] password is empty" in str(err.value)
    load_config(conf(tmp_path, "[broker]\nauth = ANONYMOUS\n"))


def test_password_is_never_echoed(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(conf(tmp_path, "[broker]\nusername = u\npassword = hunter2\npassword_file = /x\n"
                                   "urls = amqp://u:hunter2@h\n"))
    assert "hunter2" not in str(err.value)
    assert redact_url("amqps://u:pw@host:5671/x") == "amqps://***@host:5671/x"


def test_password_file(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    os.chmod(pw, 0o600)
    cfg = load_config(conf(tmp_path, f"[broker]\nusername = u\npassword_file = {pw}\n"))
    assert cfg.broker.password == "from-file"


def test_warnings_plain_without_tls_and_readable_password(tmp_path):
    path = conf(tmp_path, MINIMAL, mode=0o644)
    cfg = load_config(path)
    text = "\n".join(cfg.warnings)
    assert "auth = PLAIN without TLS" in text
    assert f"{path} (config file) holds a password and is readable by other users" in text
    assert f"chmod 600 {path}" in text
    assert not load_config(conf(tmp_path, MINIMAL + "ssl = true\n")).warnings


def test_sample_conf_documents_every_key_with_its_default():
    parser = configparser.RawConfigParser()
    sample = os.path.join(ROOT, "koji_messagebus", "data", "messagebus.conf")
    text = open(sample).read()
    parser.read_string(text)
    for opt in OPTIONS:
        assert parser.has_section(opt.section), opt.section
        assert f"\n#{opt.key} = " in text, f"[{opt.section}] {opt.key} not documented in the sample config"
    assert parser.get("outbox", "enabled") == "true"


def test_schema_file_matches_code():
    with open(os.path.join(ROOT, "koji_messagebus", "data", "messagebus-schema.sql")) as fh:
        assert fh.read() == SCHEMA
