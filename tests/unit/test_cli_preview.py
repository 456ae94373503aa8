"""`koji-messagebus preview`: the message the plugin would send, without a broker."""

from __future__ import annotations

import io
import json
from urllib.parse import quote

import pytest
from koji.util import encode_datetime_recurse

from devkit.config import write_config
from devkit.recorded import first
from koji_messagebus import cli
from koji_messagebus.cli import common, examples
from koji_messagebus.format.messages import MESSAGE_TYPES, format_event


@pytest.fixture(autouse=True)
def no_config(monkeypatch, tmp_path):
    monkeypatch.delenv("KOJI_MESSAGEBUS_CONFIG", raising=False)
    monkeypatch.setattr(common, "DEFAULT_PATH", str(tmp_path / "absent.conf"))


def preview_json(capsys, *args) -> dict:
    assert cli.main(["preview", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("msg_type", MESSAGE_TYPES)
def test_builtin_example_of_every_event(msg_type, capsys):
    got = preview_json(capsys, msg_type)
    expected = format_event(msg_type, encode_datetime_recurse(examples.example(msg_type)), "koji.event")
    assert got["routing_key"] == expected.routing_key
    assert got["headers"] == expected.headers
    assert got["body"] == json.loads(json.dumps(expected.body))  # as a consumer decodes it
    assert got["type"] == msg_type and got["address"] == "auto"
    key = got["routing_key"]
    assert got["addresses"] == {  # what `auto` picks on each broker, never None
        "RabbitMQ 3.x": "target /exchange/koji.events, subject = routing key",
        "RabbitMQ 4.x": f"to /exchanges/koji.events/{quote(key, safe='')} (anonymous relay)",
        "ActiveMQ Artemis": f"to {key} (anonymous relay)",
        "Qpid Broker-J": "target koji.events, subject = routing key"}


def test_readable_form(capsys):
    assert cli.main(["preview", "postRepoInit"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# RepoInit from the built-in example")
    assert "routing key / subject: koji.event.RepoInit.f44-build" in text
    assert '"type": "RepoInit"' in text and '"repo_id": 9021' in text


def test_kwargs_from_stdin_with_hostile_values(capsys, monkeypatch):
    kwargs = {"tag": {"name": "f.44 ünï"}, "repo_id": 2**70, "event": None}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(kwargs)))
    got = preview_json(capsys, "RepoInit", "-")
    assert got["routing_key"] == "koji.event.RepoInit.f_44 ünï"
    assert got["headers"] == {"type": "RepoInit", "tag": "f.44 ünï"}
    assert got["body"]["repo_id"] == str(2**70)
    assert any("repo_id" in note and "64 bits" in note for note in got["conversions"])


def test_kwargs_from_a_file_as_recorded_from_a_hub(tmp_path, capsys):
    recorded = encode_datetime_recurse(first("postTag"))
    path = tmp_path / "tag.json"
    path.write_text(json.dumps(recorded))
    got = preview_json(capsys, "Tag", str(path))
    assert got["routing_key"] == "koji.event.Tag.harness-f1-candidate.harness-hello.kojiadmin"
    assert got["body"]["build"]["nvr"] == "harness-hello-1.0-1"


def test_prefix_and_address_come_from_the_config(tmp_path, capsys):
    path = write_config(tmp_path / "m.conf", "org.koji", topic={"prefix": "org.example.koji"},
                        exchange={"address": "/exchanges/{name}/{routing_key}"})
    got = preview_json(capsys, "--config", path, "Tag")
    assert got["routing_key"] == "org.example.koji.Tag.f44-updates-candidate.hello.alice"
    assert got["address"] == f"/exchanges/org.koji/{got['routing_key']}"
    assert set(got["addresses"].values()) == {f"to {got['address']} (anonymous relay)"}
    got = preview_json(capsys, "--config", path, "Tag", "--prefix", "")
    assert got["routing_key"] == "Tag.f44-updates-candidate.hello.alice"


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "expected a JSON object of the callback's keyword arguments, got list"),
    ("{nope", "not JSON"),
])
def test_bad_kwargs(tmp_path, capsys, content, message):
    path = tmp_path / "k.json"
    path.write_text(content)
    assert cli.main(["preview", "Tag", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_unreadable_kwargs_and_unknown_event(tmp_path, capsys):
    assert cli.main(["preview", "Tag", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["preview", "Bogus"])
    assert exc.value.code == 2
    assert "unknown event 'Bogus'; one of: PackageListChange" in capsys.readouterr().err


def test_broken_config_is_reported_not_ignored(tmp_path, capsys):
    path = write_config(tmp_path / "m.conf", "x", topic={"prefix": "a.#"})
    assert cli.main(["--config", path, "preview", "Tag"]) == 2
    assert "[topic] prefix" in capsys.readouterr().err


# ---- preview --validate and schema -------------------------------------------------------------
@pytest.mark.parametrize("msg_type", MESSAGE_TYPES)
def test_preview_validate_every_builtin_example_matches(msg_type, capsys):
    assert cli.main(["preview", msg_type, "--validate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["schema_problems"] == []


def test_preview_validate_marks_a_mismatch_with_path_and_reason(tmp_path, capsys):
    kwargs = {**first("postTag"), "force": "yes"}
    kwargs["tag"] = {**kwargs["tag"], "name": 44}
    path = tmp_path / "kw.json"
    path.write_text(json.dumps(encode_datetime_recurse(kwargs)))
    assert cli.main(["preview", "Tag", str(path), "--validate", "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["schema_problems"]
    assert {"path": "$.body.force", "reason": "'yes' is not of type 'boolean', 'null'"} in problems
    assert {"path": "$.headers.tag", "reason": "44 is not of type 'string'"} in problems
    assert cli.main(["preview", "Tag", str(path), "--validate"]) == 1
    text = capsys.readouterr().out
    assert "schema: DOES NOT MATCH `koji-messagebus schema Tag`" in text
    assert "  $.body.tag.name: 44 is not of type 'string'" in text


def test_schema_command(capsys):
    from koji_messagebus import schema

    assert cli.main(["schema"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(MESSAGE_TYPES)
    assert lines[0].split()[-1] == "urn:koji-messagebus:message:PackageListChange:1"
    assert cli.main(["schema", "postTag"]) == 0
    assert json.loads(capsys.readouterr().out) == schema.schema("Tag")
    assert cli.main(["schema", "--all"]) == 0
    assert json.loads(capsys.readouterr().out) == schema.schemas()
    with pytest.raises(SystemExit) as exc:
        cli.main(["schema", "Nope"])
    assert exc.value.code == 2


def test_validate_without_jsonschema_is_a_usage_error(monkeypatch, capsys):
    import sys

    from koji_messagebus import schema

    schema._validator.cache_clear()
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import jsonschema -> ImportError
    try:
        assert cli.main(["preview", "Tag", "--validate"]) == 2
        assert cli.main(["listen", "--validate", "--count", "1"]) == 2  # before any connection
    finally:
        schema._validator.cache_clear()
    errors = capsys.readouterr().err.splitlines()
    assert errors == ["error: --validate: validating needs the jsonschema package (4.0 or later): "
                      "pip install 'koji-messagebus[schema]'"] * 2


def test_address_with_an_artemis_config_is_the_real_one(tmp_path, capsys):
    path = write_config(tmp_path / "a.conf", "koji.events", exchange={"address": "{routing_key}"})
    got = preview_json(capsys, "--config", path, "Tag")
    assert got["address"] == got["routing_key"]  # not None
    assert cli.main(["preview", "--config", path, "Tag"]) == 0
    text = capsys.readouterr().out
    assert f"address:               {got['routing_key']}; on each broker:" in text and "None" not in text


def test_address_auto_in_a_config_is_shown_per_broker(tmp_path, capsys):
    path = write_config(tmp_path / "auto.conf", "koji.events", exchange={"address": "auto"})
    got = preview_json(capsys, "--config", path, "Tag")
    assert got["address"] == "auto" and None not in got["addresses"].values()
    assert got["addresses"]["ActiveMQ Artemis"] == f"to {got['routing_key']} (anonymous relay)"
