"""The plugin's exit hooks (plugin.py): atexit always, and mod_wsgi's `subscribe_shutdown` when the
process runs inside Apache's mod_wsgi (its built-in module cannot be had outside Apache: a stand-in
records the subscription; the Apache harness of issue 16 runs the real one)."""

from __future__ import annotations

import atexit
import sys
import types

from koji_messagebus import plugin


def test_exit_hooks_are_registered_with_atexit_and_mod_wsgi(monkeypatch):
    subscribed = []
    monkeypatch.setitem(sys.modules, "mod_wsgi", types.SimpleNamespace(subscribe_shutdown=subscribed.append))
    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    plugin._register_exit_hooks()
    assert registered == [plugin.shutdown] and subscribed == [plugin.shutdown]


def test_without_subscribe_shutdown_atexit_alone(monkeypatch):
    monkeypatch.setitem(sys.modules, "mod_wsgi", types.SimpleNamespace())  # the PyPI package outside Apache
    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    plugin._register_exit_hooks()
    assert registered == [plugin.shutdown]


def test_the_mod_wsgi_hook_takes_its_event_arguments_and_runs_the_runtimes_exit(monkeypatch):
    calls = []

    class Runtime:
        def shutdown(self):
            calls.append("shutdown")

    monkeypatch.setattr(plugin, "_runtime", Runtime())
    plugin.shutdown("process_stopping", shutdown_reason="graceful")  # as mod_wsgi calls it
    assert calls == ["shutdown"]
    monkeypatch.setattr(plugin, "_runtime", None)
    plugin.shutdown()  # no Runtime yet (no request published): nothing to do
