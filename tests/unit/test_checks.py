"""Rules across keys: the routing-key prefix, and what connecting needs (credentials, SASL, files)."""

from __future__ import annotations

import pytest

from koji_messagebus.config.settings import ConfigError, load_config
from tests.support.conffile import MINIMAL, conf, keytab, parsed, problems


def test_plain_needs_credentials(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(conf(tmp_path, "[broker]\nauth = PLAIN\n"))
    assert "[broker] username is empty" in str(err.value) and "[broker] password is empty" in str(err.value)
    load_config(conf(tmp_path, "[broker]\nauth = ANONYMOUS\n"))


@pytest.mark.parametrize("prefix", ["koji.", ".koji", "koji..event", "."])
def test_prefix_with_an_empty_token_is_refused(tmp_path, prefix):
    (line,) = problems(conf(tmp_path, MINIMAL + f"[topic]\nprefix = {prefix}\n"))
    assert line.startswith(f"{tmp_path}/messagebus.conf: [topic] prefix = {prefix!r} would make an empty")


def test_prefix_too_long_for_routing_keys_is_refused(tmp_path):
    (line,) = problems(conf(tmp_path, MINIMAL + "[topic]\nprefix = " + "p" * 129 + "\n"))
    assert "[topic] prefix is 129 bytes long: at most 128 bytes" in line


def test_preview_mode_needs_no_credentials(tmp_path):
    """`preview` never connects: a config without username/password (auth = PLAIN) is fine there."""
    path = conf(tmp_path, "[topic]\nprefix = org.example\n")
    assert any("username is empty" in p for p in problems(path))
    assert load_config(path, for_sending=False).topic.prefix == "org.example"
    assert any("prefix" in p for p in problems(conf(tmp_path, "[topic]\nprefix = a.\n"), for_sending=False))


def test_gssapi_needs_service_amqp(tmp_path):
    with pytest.raises(ConfigError) as info:
        parsed(tmp_path, auth="GSSAPI", principal="hub@EXAMPLE.COM", keytab=keytab(tmp_path), service="qpidd")
    assert "service = 'qpidd': proton's Cyrus SASL always asks for the service principal amqp/HOST@REALM" \
        in str(info.value)


def test_gssapi_with_vhost_is_refused(tmp_path):
    """proton sends `vhost:NAME` as the host name, and Cyrus builds the service principal from it."""
    with pytest.raises(ConfigError) as info:
        parsed(tmp_path, auth="GSSAPI", principal="hub@EXAMPLE.COM", keytab=keytab(tmp_path), vhost="koji")
    assert "vhost = 'koji' cannot be used with auth = GSSAPI" in str(info.value)
