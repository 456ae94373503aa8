"""The command line without services: parsing, help, helpers, errors as one line, install-plugin,
and `check` on configs that are broken before any connection is tried."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys

import pytest

from devkit.config import write_config
from koji_messagebus import cli, rabbitmq
from koji_messagebus.cli import common, install
from koji_messagebus.config.settings import load_config
from koji_messagebus.listener import HeaderMatch, jsonable, render, source_addresses

COMMANDS = [["check"], ["preview"], ["listen"], ["outbox"], ["outbox", "status"], ["outbox", "flush"],
            ["outbox", "purge"], ["outbox", "init"], ["install-plugin"], ["demo"], ["send"]]


@pytest.fixture(autouse=True)
def no_env_config(monkeypatch, tmp_path):
    monkeypatch.delenv("KOJI_MESSAGEBUS_CONFIG", raising=False)
    monkeypatch.setattr(common, "DEFAULT_PATH", str(tmp_path / "absent" / "messagebus.conf"))


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_on_everything(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "usage: koji-messagebus" in text and "--config" in text and "--debug" in text


def test_listen_help_says_header_matching_is_client_side(capsys):
    with pytest.raises(SystemExit):
        cli.main(["listen", "--help"])
    text = capsys.readouterr().out
    assert "ON THE CLIENT SIDE" in text and "--count" in text and "--timeout" in text
    assert "set_policy" in text  # how to have RabbitMQ 3.x leftovers expire


def test_config_option_before_or_after_the_command():
    parser = cli.build_parser()
    assert parser.parse_args(["--config", "a.conf", "check"]).config == "a.conf"
    assert parser.parse_args(["check", "--config", "b.conf"]).config == "b.conf"
    assert parser.parse_args(["outbox", "status", "--config", "c.conf"]).config == "c.conf"
    assert not hasattr(parser.parse_args(["check"]), "config")


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2


@pytest.mark.parametrize("text, seconds", [("3600", 3600), ("90s", 90), ("30m", 1800), ("12h", 43200),
                                           ("5d", 432000), ("2w", 1209600), ("1.5h", 5400), (" 7 d ", 604800)])
def test_parse_age(text, seconds):
    assert common.parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "-1", "d", "1d2h"])
def test_parse_age_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not an age"):
        common.parse_age(text)


def test_purge_needs_a_valid_age(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["outbox", "purge", "--older-than", "soon"])
    assert exc.value.code == 2
    assert "'soon' is not an age" in capsys.readouterr().err


@pytest.mark.parametrize("seconds, text", [(None, "-"), (5, "5s"), (75, "1m15s"), (7300, "2h01m"),
                                           (3 * 86400 + 7200, "3d02h")])
def test_human_age(seconds, text):
    assert common.human_age(seconds) == text


@pytest.mark.parametrize("name", ["Tag", "tag", "postTag", "POSTTAG"])
def test_event_names(name):
    assert common.message_type_arg(name) == "Tag"


def test_header_match():
    headers = {"tag": "f44-build", "new": 1, "old": None, "force": False}
    assert HeaderMatch("tag=f44-build").matches(headers)
    assert HeaderMatch("tag=f44*").matches(headers)
    assert not HeaderMatch("tag=f43*").matches(headers)
    assert HeaderMatch("new=1").matches(headers)
    assert HeaderMatch("old=null").matches(headers)
    assert HeaderMatch("force=false").matches(headers)
    assert not HeaderMatch("missing=*").matches(headers)
    assert HeaderMatch("tag=").name == "tag"
    for bad in ("tag", "=x"):
        with pytest.raises(ValueError, match="expected NAME=VALUE"):
            HeaderMatch(bad)


def test_source_addresses(tmp_path):
    topic = load_config(write_config(tmp_path / "t.conf", "ex.one"))
    assert source_addresses(topic, ["koji.event.Tag.#", "a/b"]) == ["/exchange/ex.one/koji.event.Tag.#",
                                                                      "/exchange/ex.one/a%2Fb"]
    assert source_addresses(topic, []) == ["/exchange/ex.one/#"]
    headers = load_config(write_config(tmp_path / "h.conf", "ex.two", exchange={"type": "headers"}))
    assert source_addresses(headers, ["ignored"]) == ["/exchange/ex.two"]


def test_jsonable_and_render():
    import uuid

    from proton import symbol, timestamp, ulong

    value = {"b": b"\xff\x00", "t": b"text", "u": uuid.UUID(int=1), "s": symbol("sym"), "n": ulong(5),
             "ts": timestamp(1000), "l": (1, 2.5, None), "f": float("nan")}
    out = jsonable(value)
    assert out == {"b": {"base64": "/wA="}, "t": "text", "u": "00000000-0000-0000-0000-000000000001", "s": "sym",
                   "n": 5, "ts": 1000, "l": [1, 2.5, None], "f": "nan"}
    json.dumps(out)
    record = {"routing_key": "k.Tag.x", "type": "Tag", "id": "1", "created": None, "headers": {"type": "Tag", "a": 1},
              "body": {"x": [1]}}
    assert json.loads(render(record)) == record
    pretty = render(record, pretty=True)
    assert pretty.splitlines()[0] == "── Tag  k.Tag.x" and "a=1" in pretty and '"x": [' in pretty


def test_check_lists_every_config_problem_and_tries_nothing(tmp_path, capsys):
    path = write_config(tmp_path / "bad.conf", "x", broker={"port": "0", "auth": "NOPE", "bogus": "1"},
                        exchange={"type": "fanout"})
    assert cli.main(["--config", path, "check"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # errors go to stderr, as for every command
    lines = captured.err.splitlines()
    problems = [line for line in lines if line.startswith("error: ")]
    assert len(problems) == 4, lines
    assert any("[broker] port = '0' is invalid" in p for p in problems)
    assert any("[broker] auth = 'NOPE'" in p for p in problems)
    assert any("[broker] bogus: unknown key" in p for p in problems)
    assert any("[exchange] type = 'fanout'" in p for p in problems)
    assert lines[-1] == f"config {path}: 4 problem(s); nothing was tried"


def test_missing_config_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", str(tmp_path / "none.conf"))
    assert cli.main(["check"]) == 2
    assert "none.conf: file not found" in capsys.readouterr().err


def test_other_commands_print_config_problems_on_stderr(tmp_path, capsys):
    path = write_config(tmp_path / "bad.conf", "x", broker={"timeout": "-1"})
    assert cli.main(["--config", path, "listen", "--timeout", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: {path}: [broker] timeout = '-1' is invalid: must be a number of seconds > 0"


def test_unexpected_errors_are_one_line_unless_debug(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(install, "run", boom)
    assert cli.main(["install-plugin"]) == 1
    err = capsys.readouterr().err
    assert err == "error: RuntimeError: something broke (run with --debug for the traceback)\n"
    with pytest.raises(RuntimeError):
        cli.main(["install-plugin", "--debug"])


def test_main_leaves_logging_and_signals_as_it_found_them(tmp_path):
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    term = signal.getsignal(signal.SIGTERM)
    path = write_config(tmp_path / "bad.conf", "x", broker={"timeout": "-1"})
    cli.main(["--config", path, "listen"])
    assert root.handlers == handlers and root.level == level
    assert signal.getsignal(signal.SIGTERM) == term


def test_listen_without_a_config_uses_the_demo_config_but_check_does_not(capsys):
    args = cli.build_parser().parse_args(["listen"])
    with common.config_or_demo(args, "listen") as (config, demo):
        assert demo and config.exchange.name == common.DEMO_EXCHANGE
        assert os.stat(config.path).st_mode & 0o077 == 0
        path = config.path
    assert not os.path.exists(path)  # the temporary file is gone
    assert cli.main(["check"]) == 2  # check needs a real config


def test_demo_ignores_the_hubs_config_unless_given(tmp_path, monkeypatch):
    hub_conf = write_config(tmp_path / "hub.conf", "production.exchange")
    monkeypatch.setattr(common, "DEFAULT_PATH", hub_conf)
    args = cli.build_parser().parse_args(["demo"])
    with common.config_or_demo(args, "demo") as (config, demo):
        assert demo and config.exchange.name == common.DEMO_EXCHANGE
    with common.config_or_demo(args, "listen") as (config, demo):  # listen uses the hub's config if present...
        assert not demo and config.exchange.name == "production.exchange"
    args = cli.build_parser().parse_args(["demo", "--config", hub_conf])
    with common.config_or_demo(args, "demo") as (config, demo):  # ...and demo only when asked to
        assert not demo and config.exchange.name == "production.exchange"


# ---- install-plugin ------------------------------------------------------------------------------
def test_install_plugin_copies_the_shim_and_says_what_to_enable(tmp_path, capsys):
    from koji_messagebus import hub

    assert cli.main(["install-plugin", "--plugin-path", str(tmp_path)]) == 0
    installed = tmp_path / "messagebus.py"
    shim = os.path.join(os.path.dirname(hub.__file__), "messagebus.py")
    assert installed.read_text() == open(shim).read()
    assert oct(installed.stat().st_mode & 0o777) == "0o644"
    out = capsys.readouterr().out
    assert f"PluginPath = {tmp_path}" in out and "Plugins = messagebus" in out
    assert cli.main(["install-plugin", "--plugin-path", str(tmp_path)]) == 0
    assert "already installed and up to date" in capsys.readouterr().out


def test_install_plugin_loads_as_the_hub_loads_it(tmp_path):
    import koji.plugin

    assert cli.main(["install-plugin", "--plugin-path", str(tmp_path)]) == 0
    module = koji.plugin.PluginTracker(path=[str(tmp_path)], prefix="_kmb_test_install__").load("messagebus")
    callbacks = {cb for value in vars(module).values() for cb in getattr(value, "callbacks", ())}
    assert {"postTag", "preCommit", "postCommit"} <= callbacks


def test_install_plugin_keeps_a_foreign_file_unless_forced(tmp_path, capsys):
    (tmp_path / "messagebus.py").write_text("# Koji's legacy messagebus plugin\n")
    assert cli.main(["install-plugin", "--plugin-path", str(tmp_path)]) == 1
    assert "exists and is not this plugin's shim" in capsys.readouterr().err
    assert (tmp_path / "messagebus.py").read_text().startswith("# Koji's legacy")
    assert cli.main(["install-plugin", "--plugin-path", str(tmp_path), "--force"]) == 0
    assert "koji_messagebus.plugin" in (tmp_path / "messagebus.py").read_text()


def test_install_plugin_needs_the_directory(tmp_path, capsys):
    assert cli.main(["install-plugin", "--plugin-path", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


# ---- without pika (it is only a test dependency) ---------------------------------------------------
def test_without_pika_the_listener_falls_back_to_the_amqp10_source(tmp_path, monkeypatch):
    from koji_messagebus.listener import temporary_queue

    monkeypatch.setitem(sys.modules, "pika", None)  # import pika -> ImportError
    config = load_config(write_config(tmp_path / "m.conf", "ex"))
    got = temporary_queue(config.broker, config.exchange, config.endpoints[0], ["#"])
    assert got == (None, "pika is not installed")


def test_without_pika_or_rabbitmqadmin_the_demo_says_how_to_declare(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pika", None)
    monkeypatch.setattr(rabbitmq.shutil, "which", lambda name: None)
    config = load_config(write_config(tmp_path / "m.conf", "ex.demo"))
    assert rabbitmq.declare_exchange(config) == (
        "did not declare exchange 'ex.demo' (neither pika nor rabbitmqadmin here); if it is missing: "
        "rabbitmqctl eval 'rabbit_exchange:declare(rabbit_misc:r(<<\"/\">>, exchange, <<\"ex.demo\">>), topic, true, "
        "false, false, [], <<\"rabbitmqctl\">>).'")


def test_amqp091_needs_plain_or_external(tmp_path):
    from koji_messagebus.listener import amqp091_connect

    config = load_config(write_config(tmp_path / "m.conf", "ex", broker={"auth": "ANONYMOUS"}))
    got = amqp091_connect(config.broker, config.endpoints[0])
    assert got == (None, "auth = ANONYMOUS is not available over AMQP 0-9-1 here")


# ---- papercuts (issue 11) ------------------------------------------------------------------------
def _subparsers(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _subparsers(sub, (*prefix, name))


def test_every_command_has_a_description():
    commands = dict(_subparsers(cli.build_parser()))
    assert ("outbox", "status") in commands and ("outbox", "schema") in commands and ("sample-config",) in commands
    for name, parser in commands.items():
        assert parser.description and len(parser.description) > 40, " ".join(name)


def test_install_plugin_force_keeps_a_backup(tmp_path, capsys):
    legacy = "# Koji's legacy messagebus plugin\n"
    (tmp_path / "messagebus.py").write_text(legacy)
    assert cli.main(["install-plugin", "--plugin-path", str(tmp_path), "--force"]) == 0
    backups = sorted(tmp_path.glob("messagebus.py.bak-*"))
    assert len(backups) == 1 and backups[0].read_text() == legacy
    assert f"kept the previous {tmp_path / 'messagebus.py'} as {backups[0]}" in capsys.readouterr().out
    (tmp_path / "messagebus.py").write_text(legacy)  # a second --force keeps both old files
    assert cli.main(["install-plugin", "--plugin-path", str(tmp_path), "--force"]) == 0
    assert len(list(tmp_path.glob("messagebus.py.bak-*"))) == 2


def test_install_plugin_prints_an_absolute_plugin_path(tmp_path, monkeypatch, capsys):
    (tmp_path / "plugins").mkdir()
    monkeypatch.chdir(tmp_path)
    assert cli.main(["install-plugin", "--plugin-path", "plugins"]) == 0
    out = capsys.readouterr().out
    assert f"    PluginPath = {tmp_path / 'plugins'}\n" in out
    assert "sample-config" in out and "conf/" not in out


def test_install_plugin_suggests_the_flag_only_when_it_was_not_given(tmp_path, monkeypatch, capsys):
    assert cli.main(["install-plugin", "--plugin-path", str(tmp_path / "nope")]) == 1
    assert "pass --plugin-path" not in capsys.readouterr().err
    monkeypatch.setattr(install, "DEFAULT_PLUGIN_PATH", str(tmp_path / "absent"))
    assert cli.main(["install-plugin"]) == 1
    assert "pass --plugin-path DIR" in capsys.readouterr().err


def test_purge_everything_needs_yes(tmp_path, capsys):
    hub_conf = str(tmp_path / "no-hub.conf")  # never read: the refusal comes first
    assert cli.main(["outbox", "purge", "--older-than", "0", "--hub-config", hub_conf]) == 2
    assert "add --yes" in capsys.readouterr().err
    assert cli.main(["outbox", "purge", "--older-than", "0", "--yes", "--hub-config", hub_conf]) == 1
    assert "no-hub.conf" in capsys.readouterr().err  # it went on to the database


@pytest.mark.parametrize("argv, code", [(["outbox", "purge", "--older-than", "0"], 2),
                                        (["install-plugin", "--plugin-path", "/nonexistent/dir"], 1)])
def test_debug_keeps_the_exit_code_and_adds_the_traceback(argv, code, capsys):
    assert cli.main([*argv, "--debug"]) == code
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().splitlines()[-1].startswith("error: ")


def test_debug_keeps_the_exit_code_for_an_invalid_config(tmp_path, capsys):
    path = write_config(tmp_path / "bad.conf", "x", broker={"timeout": "-1"})
    assert cli.main(["--config", path, "--debug", "listen"]) == 2
    assert cli.main(["--config", path, "--debug", "check"]) == 2


# ---- --broker: the demo config against another broker --------------------------------------------
def test_broker_replaces_the_demo_brokers_address_and_account(tmp_path):
    path = tmp_path / "demo.conf"
    path.write_text(common.demo_config_text("amqps://alice:p%40ss@broker.example.com:5671"))
    config = load_config(str(path))
    assert [str(ep) for ep in config.endpoints] == ["amqps://broker.example.com:5671"]
    assert (config.broker.username, config.broker.password) == ("alice", "p@ss")
    assert config.exchange.name == common.DEMO_EXCHANGE
    path.write_text(common.demo_config_text("amqp://127.0.0.1:5673"))
    config = load_config(str(path))
    assert [str(ep) for ep in config.endpoints] == ["amqp://127.0.0.1:5673"]
    assert config.broker.username == "guest"
    assert common.demo_config_text(None) == common.DEMO_CONFIG


@pytest.mark.parametrize("url", ["http://h", "amqp://", "amqp://h:99999", "amqp://h/vhost", "h:5672"])
def test_broker_must_be_an_amqp_url(url, capsys):
    assert cli.main(["demo", "--broker", url]) == 2
    assert "--broker" in capsys.readouterr().err


def test_broker_and_config_do_not_mix(tmp_path, capsys):
    path = write_config(tmp_path / "m.conf", "ex")
    assert cli.main(["--config", path, "listen", "--broker", "amqp://h"]) == 2
    assert "set [broker] urls there instead" in capsys.readouterr().err


def test_listen_with_broker_uses_the_demo_config_even_beside_the_hubs(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "DEFAULT_PATH", write_config(tmp_path / "hub.conf", "production.exchange"))
    args = cli.build_parser().parse_args(["listen", "--broker", "amqp://127.0.0.1:5673"])
    with common.config_or_demo(args, "listen") as (config, demo):
        assert demo and config.exchange.name == common.DEMO_EXCHANGE
        assert [str(ep) for ep in config.endpoints] == ["amqp://127.0.0.1:5673"]


# ---- scripts/demo.sh sets up what the demo uses, and no more (issue 21) --------------------------
def test_the_demo_needs_postgresql_only_with_the_outbox(tmp_path, monkeypatch):
    from koji_messagebus.cli.demo import database_needed

    assert database_needed([]) is False  # the built-in config: no outbox
    assert database_needed(["--broker", "amqp://127.0.0.1:5672"]) is False
    plain = write_config(str(tmp_path / "plain.conf"))
    outbox = write_config(str(tmp_path / "outbox.conf"), outbox={"enabled": "true"})
    test_mode = write_config(str(tmp_path / "test-mode.conf"), outbox={"enabled": "true"},
                             broker={"test_mode": "true"})
    assert database_needed(["--config", plain]) is False
    assert database_needed(["--config", outbox]) is True
    assert database_needed(["--config", test_mode]) is False  # nothing is stored or sent
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", outbox)
    assert database_needed([]) is True
    assert database_needed(["--config", str(tmp_path / "missing.conf")]) is False  # the demo says why
    assert database_needed(["--no-such-option"]) is False


def test_demo_sh_starts_only_rabbitmq3_and_postgresql_when_needed():
    """`bash scripts/demo.sh` ran scripts/setup.sh: the whole test matrix (a Debian 13 tree for
    RabbitMQ 4, Artemis, Broker-J, TLS), 2m25s on a fresh machine, none of it used by the demo."""
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    script = open(os.path.join(root, "scripts", "demo.sh"), encoding="utf-8").read()
    code = "\n".join(line.split("#", 1)[0] for line in script.splitlines())  # without comments
    started = set(re.findall(r"scripts/(?:services/)?([\w.-]+\.sh)", code))
    assert started == {"lib.sh", "rabbitmq3.sh", "postgresql.sh"}, started
    for unused in ("setup.sh", "rabbitmq4", "artemis", "brokerj", "debootstrap", "rabbitmq-tls", "maven", "krb5"):
        assert unused not in code
    guard = code.index("database_needed")
    assert guard < code.index("postgresql.sh") < code.index("exec .venv/bin/koji-messagebus demo")
