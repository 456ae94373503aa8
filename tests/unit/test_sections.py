"""The typed frozen sections: every option parsed once, no default of their own, the address
templates they apply."""

from __future__ import annotations

import dataclasses

import pytest

from koji_messagebus.config.options import OPTIONS
from koji_messagebus.config.sections import SECTIONS
from koji_messagebus.config.settings import load_config
from tests.support.conffile import MINIMAL, conf


def test_address_templates(tmp_path):
    cfg = load_config(conf(tmp_path, MINIMAL + "[exchange]\nname = ex\naddress = /exchanges/{name}/{routing_key}\n"))
    assert cfg.exchange.target_address() is None
    assert cfg.exchange.message_to("koji.event.Tag.x") == "/exchanges/ex/koji.event.Tag.x"
    cfg = load_config(conf(tmp_path, MINIMAL + "[exchange]\nname = ex\naddress = {name}\n"))
    assert cfg.exchange.target_address() == "ex"


def test_routing_keys_in_addresses_are_percent_encoded(tmp_path):
    """RabbitMQ 4.x rejects `to` = /exchanges/X/f44/updates and routes /exchanges/X/f44%2Fupdates
    with the key f44/updates."""
    cfg = load_config(conf(tmp_path, MINIMAL + "[exchange]\naddress = /exchanges/{name}/{routing_key}\n"))
    assert cfg.exchange.message_to("koji.event.Tag.f44/updates.bash.~none~") == \
        "/exchanges/koji.events/koji.event.Tag.f44%2Fupdates.bash.~none~"
    assert cfg.exchange.message_to("k.ü.a b#") == "/exchanges/koji.events/k.%C3%BC.a%20b%23"


# ---- typed settings ---------------------------------------------------------------------------------
def test_typed_sections_hold_every_option_parsed_once(tmp_path):


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

    cfg = load_config(conf(tmp_path, MINIMAL))
    other = dataclasses.replace(cfg, values={**cfg.values, ("exchange", "name"): "elsewhere"})
    assert other.exchange.name == "elsewhere" and other.exchange.target_address() in (None, "/exchange/elsewhere")


def test_defaults_are_written_once_in_options_not_in_the_typed_sections():


    for cls in SECTIONS.values():
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, (cls, f.name)
