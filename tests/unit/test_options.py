"""Each option's parser: what is allowed, and every problem at once with file, section, key, value
and what is allowed."""

from __future__ import annotations

import pytest

from koji_messagebus.config.settings import ConfigError, load_config
from tests.support.conffile import MINIMAL, conf, problems


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


@pytest.mark.parametrize("template", ["/exchange/{name.upper}", "/x/{name[0]}", "/x/{routing_key!r}",
                                      "/x/{name:>10}", "/x/{other}", "/x/{}", "/x/{0}", "/x/{name"])
def test_address_templates_name_only_the_known_fields(tmp_path, template):
    (line,) = problems(conf(tmp_path, MINIMAL + f"[exchange]\naddress = {template}\n"))
    assert line.startswith(f"{tmp_path}/messagebus.conf: [exchange] address = ") and "is invalid" in line


def test_known_address_fields_pass(tmp_path):
    cfg = load_config(conf(tmp_path, MINIMAL + "[exchange]\naddress = /exchanges/{name}/{routing_key}\n"))
    assert cfg.exchange.message_to("k") == "/exchanges/koji.events/k"


def test_port_zero_is_refused(tmp_path):
    (line,) = problems(conf(tmp_path, MINIMAL + "urls = amqp://mq.example.com:0\n"))
    assert "[broker] urls = 'amqp://mq.example.com:0' is invalid" in line


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
