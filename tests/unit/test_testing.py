"""koji_messagebus.testing, the hub request cycle shipped for the demo and for tests: the plugin
loaded by koji's own PluginTracker, requests run through koji's run_callbacks, and nothing left
registered afterwards.  No broker: the config is in test_mode (the plugin logs what it would send)."""

from __future__ import annotations

import logging

import koji.plugin
import pytest

from devkit.config import write_config
from koji_messagebus.cli import examples
from koji_messagebus.testing import HubSimulator


@pytest.fixture
def hub(tmp_path, monkeypatch):
    path = write_config(tmp_path / "m.conf", "ex.testing", broker={"test_mode": "true"})
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", path)
    simulator = HubSimulator(echo_log=True)  # the plugin's log reaches caplog
    yield simulator
    simulator.close()


def ours() -> list[str]:
    return [f.__name__ for cbs in koji.plugin.callbacks.values() for f in cbs if f.__name__.startswith("messagebus_")]


def test_the_plugin_is_loaded_as_the_hub_loads_it(hub):
    assert hub.module.__name__ == "_koji_plugin__messagebus"
    assert hub.describe().endswith("-> messagebus_collect, messagebus_send, messagebus_store for "
                                   f"{len({cb for cb, _ in hub.registered})} callback types")
    assert {"postTag", "preCommit", "postCommit"} <= {cb for cb, _ in hub.registered}


def test_a_request_runs_callbacks_precommit_and_postcommit(hub, caplog):
    caplog.set_level(logging.INFO, logger="koji.plugin")
    seconds, problems = hub.request("tagBuild", [("postTag", examples.tag())])
    assert problems == [] and seconds >= 0
    would_send = [r.getMessage() for r in caplog.records if "test_mode: would send" in r.getMessage()]
    assert len(would_send) == 1 and "koji.event.Tag.f44-updates-candidate" in would_send[0]


def test_close_unregisters_only_the_plugin(tmp_path, monkeypatch):
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", write_config(tmp_path / "m.conf", "ex", broker={"test_mode": "true"}))

    def other(cbtype, *args, **kws):
        pass

    koji.plugin.register_callback("postTag", other)
    try:
        simulator = HubSimulator()
        assert ours()
        simulator.close()
        assert ours() == [] and other in koji.plugin.callbacks["postTag"]
    finally:
        koji.plugin.callbacks["postTag"].remove(other)


def test_finish_request_commits_between_precommit_and_postcommit_only_when_the_request_wrote():
    """kojixmlrpc's order, shared by HubSimulator and the tests' Hub (tests/support/hub.py)."""
    from koji.context import context

    from koji_messagebus.testing import finish_request

    seen: list[str] = []

    class Connection:
        def commit(self):
            seen.append("COMMIT")

    def pre(cbtype, *args, **kws):
        seen.append(cbtype)

    post = pre
    koji.plugin.register_callback("preCommit", pre)
    koji.plugin.register_callback("postCommit", post)
    try:
        context._threadclear()
        context.commit_pending = False
        assert finish_request(Connection()) == {"preCommit": 0.0, "postCommit": 0.0} and seen == []
        context.commit_pending = True
        phases = finish_request(Connection(), on_commit=lambda: seen.append("on_commit"))
        assert seen == ["preCommit", "COMMIT", "on_commit", "postCommit"] and set(phases) == {"preCommit", "postCommit"}
        seen.clear()
        finish_request(None)  # no database: no COMMIT, the callbacks still run
        assert seen == ["preCommit", "postCommit"]
    finally:
        context._threadclear()
        koji.plugin.callbacks["preCommit"].remove(pre)
        koji.plugin.callbacks["postCommit"].remove(post)
