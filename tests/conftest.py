"""Shared pytest fixtures: config files, unique exchanges, the hub simulator."""

from __future__ import annotations

import logging
import os
import uuid

import pytest

from koji_messagebus import plugin as mb_plugin
from tests.brokers import broker, target  # noqa: F401 - pytest finds fixtures by name here


def write_config(path, exchange_name: str = "koji.events", **sections) -> str:
    """Write a messagebus.conf for the run's broker (tests/brokers.py: KMB_BROKER*); keyword args
    are {section: {key: value}}; a value None leaves the key out."""
    t = target()
    exchange = {"name": exchange_name, "type": "topic"}
    if t.address:
        exchange["address"] = t.address
    values = {
        "broker": {"host": t.host, "port": str(t.port), "auth": "PLAIN", "username": t.user,
                   "password": t.password, "timeout": "5", "connect_timeout": "5", "retry_interval": "30",
                   # never the host's /var/spool: a test's spool is its own
                   "spool_dir": os.path.join(os.path.dirname(os.path.abspath(path)), "spool")},
        "exchange": exchange,
        "topic": {"prefix": "koji.event"},
    }
    for section, keys in sections.items():
        values.setdefault(section, {}).update({k: None if v is None else str(v) for k, v in keys.items()})
    lines = []
    for section, keys in values.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {v}" for k, v in keys.items() if v is not None]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return str(path)


@pytest.fixture
def exchange_name():
    return f"kmb.test.{uuid.uuid4().hex[:10]}"


@pytest.fixture
def conf_file(tmp_path, exchange_name):
    """A config for the local RabbitMQ and a fresh exchange name; returns a writer."""
    def make(**sections):
        return write_config(tmp_path / "messagebus.conf", exchange_name, **sections)
    return make


@pytest.fixture
def plugin_log(caplog):
    """Everything the plugin logged (koji.plugin.messagebus), at DEBUG and above."""
    caplog.set_level(logging.DEBUG, logger="koji.plugin.messagebus")
    caplog.set_level(logging.DEBUG, logger="koji.plugin")
    return caplog


@pytest.fixture(autouse=True)
def _fresh_runtime(monkeypatch):
    """No Runtime leaks between tests."""
    mb_plugin.reset(None)
    yield
    mb_plugin.reset(None)


def pytest_runtest_setup(item):
    """@pytest.mark.requires("feature", ...): skip, with the reason, on a broker without them."""
    for mark in item.iter_markers(name="requires"):
        t = target()
        for feature in mark.args:
            reason = t.why_not(feature)
            if reason:
                pytest.skip(f"{t.flavour}: needs {feature}: {reason}")


def pytest_report_header(config):
    t = target()
    return f"broker: {t.flavour} {t.product} {t.version} at {t.endpoint} (KMB_BROKER*)"
