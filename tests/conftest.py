"""Shared pytest fixtures: config files, unique exchanges, the hub simulator."""

from __future__ import annotations

import logging
import uuid

import pytest

from devkit.brokers import broker, target  # noqa: F401 - pytest finds fixtures by name here
from devkit.config import write_config
from koji_messagebus import log as mb_log
from koji_messagebus import plugin as mb_plugin


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
    """No Runtime leaks between tests, nor a cause's one-line-a-minute (log.CAUSES)."""
    mb_plugin.reset(None)
    mb_log.CAUSES.reset()
    yield
    mb_plugin.reset(None)
    mb_log.CAUSES.reset()


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
