"""The consumer author's options: listen --queue/--durable, send, demo --exchange/--prefix (what
needs no broker: usage errors and the config the plugin is handed)."""

from __future__ import annotations

import configparser
import io
import json
import os

import pytest

from devkit.config import write_config
from koji_messagebus import cli
from koji_messagebus.cli import common
from koji_messagebus.cli.send import callback_for
from koji_messagebus.config.settings import ENV_VAR, load_config
from koji_messagebus.format.messages import CALLBACK_TYPES, MESSAGE_TYPES


@pytest.fixture(autouse=True)
def no_env_config(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(common, "DEFAULT_PATH", str(tmp_path / "absent.conf"))


@pytest.mark.parametrize("argv, message", [
    (["listen", "--durable"], "--durable needs --queue NAME"),
    (["listen", "--queue", "q", "--source", "/exchange/{name}/{key}"], "--queue and --source do not go together"),
])
def test_listen_usage_errors(argv, message, capsys):
    assert cli.main(argv) == common.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_send_reads_its_json_and_says_what_is_wrong(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    assert cli.main(["send", "Tag", str(bad)]) == common.EXIT_USAGE
    assert "expected a JSON object of the callback's keyword arguments, got list" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("{nope"))
    assert cli.main(["send", "Tag", "-"]) == common.EXIT_USAGE
    assert "stdin: not JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["send", "Nope", str(bad)])
    assert exc.value.code == common.EXIT_USAGE and "unknown event 'Nope'" in capsys.readouterr().err


@pytest.mark.parametrize("event", MESSAGE_TYPES)
def test_send_runs_the_events_own_callback(event):
    assert CALLBACK_TYPES[callback_for(event)] == event


def test_plugin_config_applies_exchange_and_prefix_in_a_copy(tmp_path):
    path = write_config(tmp_path / "m.conf", "koji.events")
    before = open(path).read()
    with common.plugin_config(load_config(path), "other.exchange", "org.koji") as config:
        seen = os.environ[ENV_VAR]
        assert seen != path and oct(os.stat(seen).st_mode & 0o777) == "0o600"
        parser = configparser.RawConfigParser()
        parser.read(seen)
        assert parser.get("exchange", "name") == "other.exchange" and parser.get("topic", "prefix") == "org.koji"
        assert (config.exchange.name, config.topic.prefix) == ("other.exchange", "org.koji")
    assert not os.path.exists(seen) and ENV_VAR not in os.environ
    assert open(path).read() == before  # the user's file is never changed
    with common.plugin_config(load_config(path)) as config:
        assert os.environ[ENV_VAR] == path  # nothing to override: the file itself


def test_plugin_config_refuses_a_bad_prefix_and_leaves_no_file(tmp_path):
    path = write_config(tmp_path / "m.conf", "koji.events")
    with pytest.raises(common.CliError) as exc, common.plugin_config(load_config(path), None, "koji.#"):
        pass
    assert exc.value.code == common.EXIT_USAGE and "must not contain * or #" in exc.value.lines[0]
    assert ENV_VAR not in os.environ


def test_preview_json_names_the_addresses(capsys):
    assert cli.main(["preview", "Tag", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert set(got["addresses"]) == {"RabbitMQ 3.x", "RabbitMQ 4.x", "ActiveMQ Artemis", "Qpid Broker-J"}
