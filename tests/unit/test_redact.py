"""Secrets never shown: passwords hidden, URLs' user information cut out by structure."""

from __future__ import annotations

import logging

import pytest

from koji_messagebus.config.redact import redact_url
from koji_messagebus.config.settings import ConfigError, load_config
from tests.support.conffile import MINIMAL, conf, parsed, problems


def test_password_is_never_echoed(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(conf(tmp_path, "[broker]\nusername = u\npassword = hunter2\npassword_file = /x\n"
                                   "urls = amqp://u:hunter2@h\n"))
    assert "hunter2" not in str(err.value)
    assert redact_url("amqps://u:pw@host:5671/x") == "amqps://***@host:5671/x"


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


@pytest.mark.parametrize("url", [
    "amqps://koji:s3cr/et@broker:5671", "amqps://koji:s3cr@et@broker:5671/vh", "amqp://koji:s3cret@broker",
    "amqps://koji:s3cret@broker:99999",
])
def test_redact_url_hides_any_password(url):
    assert "s3cr" not in redact_url(url) and redact_url(url).startswith(url.split("://")[0] + "://***@")


def test_unparsable_url_with_a_password_is_not_echoed(tmp_path):
    with pytest.raises(ConfigError) as info:
        parsed(tmp_path, urls="amqps://koji:s3cret@broker:99999")
    assert "s3cret" not in str(info.value) and "amqps://***@broker:99999" in str(info.value)
