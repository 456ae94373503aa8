"""The shipped JSON Schemas: every recorded hub call's message matches its type's schema (1.34 and
1.35 shapes), a schema rejects what it must, a schema never changes without a new version, and
the hub never imports the validator."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from devkit.recorded import entries
from koji_messagebus import schema
from koji_messagebus.format.messages import CALLBACK_TYPES, MESSAGE_TYPES, format_event
from koji_messagebus.format.wire import decode, encode
from tests.support import contract

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
VERSIONS = os.path.join(ROOT, "tests", "data", "schema-versions.json")
CHANGELOG = os.path.join(ROOT, "docs", "message-changelog.md")


def as_consumer_sees(cbtype: str, kwargs: dict, prefix: str = "koji.event") -> dict:
    """The message the plugin sends for these kwargs, encoded and decoded, as a JSON document."""
    event = format_event(CALLBACK_TYPES[cbtype], kwargs, prefix)
    got = decode(encode(event, msg_id="id", created=time.time()).payload)
    return contract.document(got["subject"], got["headers"], got["body"])


RECORDED = [(cb, i) for cb in CALLBACK_TYPES for i in range(len(entries(cb)))]


@pytest.mark.parametrize(("cbtype", "index"), RECORDED, ids=[f"{cb}-{i}" for cb, i in RECORDED])
def test_every_recorded_hub_call_matches_its_schema(cbtype, index):
    entry = entries(cbtype)[index]
    for kwargs in (entry["kwargs"], entry["converted"]):  # a plain and a @convert_datetime plugin
        assert schema.validate(as_consumer_sees(cbtype, kwargs)) == []


def _repo_init_134() -> dict:
    """A Koji 1.34 hub's RepoInit: with_src and with_debuginfo, no task_id/opts (the seed's table)."""
    kw = copy.deepcopy(entries("postRepoInit")[0]["converted"])
    del kw["task_id"], kw["opts"]
    return {**kw, "with_src": False, "with_debuginfo": True}


def _package_list_134() -> dict:
    kw = copy.deepcopy(entries("postPackageListChange")[0]["converted"])
    del kw["user"]
    return kw


def _import_134(kind: str) -> dict:
    for entry in entries("postImport"):
        kw = copy.deepcopy(entry["converted"])
        if kw["type"] == kind:
            kw.pop("fileinfo", None)
            kw.pop("fullpath", None)
            return kw
    raise LookupError(kind)


@pytest.mark.parametrize(("cbtype", "make"), [
    ("postRepoInit", _repo_init_134),
    ("postPackageListChange", _package_list_134),
    ("postImport", lambda: _import_134("rpm")),
    ("postImport", lambda: _import_134("archive")),
    ("postImport", lambda: _import_134("image")),
], ids=["RepoInit", "PackageListChange", "Import-rpm", "Import-archive", "Import-image"])
def test_the_older_hubs_shapes_match_too(cbtype, make):
    """The fixtures README: Koji 1.34 passes the table's keys, not user/task_id/opts/fileinfo/fullpath."""
    assert schema.validate(as_consumer_sees(cbtype, make())) == []


def _tag_doc() -> dict:
    return as_consumer_sees("postTag", entries("postTag")[0]["converted"])


@pytest.mark.parametrize(("change", "path", "reason"), [
    (lambda d: d["body"].pop("build"), "$.body", "'build' is a required property"),
    (lambda d: d["headers"].pop("user"), "$.headers", "'user' is a required property"),
    (lambda d: d.pop("routing_key"), "$", "'routing_key' is a required property"),
    (lambda d: d["body"].__setitem__("force", "yes"), "$.body.force", "'yes' is not of type 'boolean'"),
    (lambda d: d["body"]["build"].__setitem__("id", "7"), "$.body.build.id", "'7' is not of type 'integer'"),
    (lambda d: d["headers"].__setitem__("tag", 5), "$.headers.tag", "5 is not of type 'string'"),
    (lambda d: d["headers"].__setitem__("type", "Untag"), "$.headers.type", "'Tag' was expected"),
    (lambda d: d.__setitem__("routing_key", "koji.event.Tag.f44.hello"), "$.routing_key", "does not match"),
    (lambda d: d.__setitem__("routing_key", "koji.event.Untag.f44.hello.admin"), "$.routing_key", "does not match"),
    (lambda d: d.__setitem__("routing_key", "koji.event.Tag.f44.hello.admin.x"), "$.routing_key", "does not match"),
], ids=["missing-body-key", "missing-header", "no-routing-key", "wrong-type-body", "wrong-type-nested",
        "wrong-type-header", "wrong-type-const", "key-too-few-tokens", "key-other-type", "key-too-many-tokens"])
def test_a_schema_rejects_with_the_json_path_and_reason(change, path, reason):
    doc = _tag_doc()
    change(doc)
    found = schema.validate(doc, "Tag")
    assert found, "the schema accepted a broken message"
    assert any(p.path == path and reason in p.reason for p in found), found


def test_variant_rules_are_enforced():
    """Per-variant requirements: an Import of type build without its rpms, a state change whose
    state is not a name, a RepoInit of neither shape."""
    build_import = next(e["converted"] for e in entries("postImport") if e["converted"]["type"] == "build")
    doc = as_consumer_sees("postImport", build_import)
    del doc["body"]["rpms"]
    assert [p.reason for p in schema.validate(doc)] == ["'rpms' is a required property"]
    task = next(e["converted"] for e in entries("postTaskStateChange") if e["converted"]["attribute"] == "state")
    doc = as_consumer_sees("postTaskStateChange", task)
    doc["body"]["new"] = 3
    assert [p.path for p in schema.validate(doc)] == ["$.body.new"]
    doc = as_consumer_sees("postRepoInit", entries("postRepoInit")[0]["converted"])
    del doc["body"]["task_id"]
    assert schema.validate(doc) != []


def test_extra_keys_are_allowed_where_koji_may_add_them():
    doc = _tag_doc()
    doc["body"]["new_in_koji_2"] = [1]
    doc["body"]["build"]["new_column"] = None
    doc["headers"]["x-added-by-broker"] = "yes"
    assert schema.validate(doc) == []


def test_unknown_type_is_reported_not_raised():
    assert [str(p) for p in schema.validate({"headers": {"type": "Nope"}})] == [
        f"$.headers.type: 'Nope' is not a message type ({', '.join(MESSAGE_TYPES)})"]


def test_every_type_has_a_versioned_draft_2020_12_schema():
    from jsonschema import Draft202012Validator

    for msg_type, doc in schema.schemas().items():
        Draft202012Validator.check_schema(doc)
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert doc["$id"] == f"urn:koji-messagebus:message:{msg_type}:{schema.version(doc)}"
        assert doc["properties"]["headers"]["properties"]["type"] == {"const": msg_type}


def test_shared_definitions_are_the_same_in_every_schema():
    """Each schema is self-contained (a consumer can take one file); the maps they share (tag,
    build, user, ...) must not drift apart."""
    seen: dict[str, tuple[str, dict]] = {}
    for msg_type, doc in schema.schemas().items():
        for name, definition in doc.get("$defs", {}).items():
            first = seen.setdefault(name, (msg_type, definition))
            assert definition == first[1], f"$defs/{name} differs between {first[0]} and {msg_type}"


def _digest(doc: dict) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def test_a_schema_never_changes_without_a_new_version():
    """tests/data/schema-versions.json holds the hash of every released schema version.  A change
    to a schema needs a new version in its $id, a line for it in docs/message-changelog.md, and
    its hash added here (older versions stay listed)."""
    with open(VERSIONS, encoding="utf-8") as fh:
        recorded = json.load(fh)
    with open(CHANGELOG, encoding="utf-8") as fh:
        changelog = fh.read()
    for msg_type, doc in schema.schemas().items():
        ver = str(schema.version(doc))
        known = recorded.get(msg_type, {})
        assert ver in known, (f"{msg_type} schema version {ver} is not recorded: add "
                              f'"{ver}": "{_digest(doc)}" to {VERSIONS} and a changelog entry')
        assert known[ver] == _digest(doc), (f"the {msg_type} schema changed but its version ({ver}) did not: "
                                            f"bump the version in its $id and say what changed in {CHANGELOG}")
        assert f"{msg_type} {ver}" in changelog, f"{CHANGELOG} has no entry for {msg_type} {ver}"


def test_a_changed_schema_is_caught():
    """The guard above fails on a schema changed in place (shown on a copy)."""
    doc = schema.schema("Tag")
    doc["properties"]["body"]["required"].remove("force")
    with open(VERSIONS, encoding="utf-8") as fh:
        recorded = json.load(fh)
    assert recorded["Tag"][str(schema.version(doc))] != _digest(doc)


def test_the_hub_never_imports_the_validator():
    """Loading the plugin as the hub does and running a request cycle imports no jsonschema."""
    code = ("import sys, koji.plugin\n"
            "from koji_messagebus import plugin, runtime\n"
            "from koji_messagebus.format import messages, wire\n"
            "from koji_messagebus.transaction import outbox\n"
            "from koji_messagebus.delivery import handoff\n"
            "import koji_messagebus.hub.messagebus\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jsonschema', 'koji_messagebus.schema'))\n"
            "bad += [m for m in sys.modules if m == 'koji_messagebus.schema']\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_validating_without_jsonschema_says_how_to_get_it():
    code = ("import sys; sys.modules['jsonschema'] = None\n"
            "from koji_messagebus import schema\n"
            "try:\n    schema.validate({'headers': {'type': 'Tag'}})\n"
            "except schema.SchemaError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "pip install 'koji-messagebus[schema]'" in out.stdout, out.stdout + out.stderr


def test_the_shared_receivers_check_fails_on_a_mismatch():
    """tests/contract.check, which Consumer.collect and Receiver.collect call on what arrived."""
    from tests.support.pika_consumer import Received

    doc = _tag_doc()
    good = Received(doc["routing_key"], 2, "id", doc["headers"], doc["body"], doc["routing_key"])
    probe = Received("probe", 2, "id", {"kind": "probe"}, "not a plugin message", None)
    assert contract.check([good, probe]) == [good, probe]
    bad = Received(doc["routing_key"], 2, "id", {**doc["headers"], "tag": 44}, doc["body"], doc["routing_key"])
    with pytest.raises(AssertionError, match=r"\$\.headers\.tag: 44 is not of type 'string'"):
        contract.check([bad])
    unseen_key = Received("", 2, "id", doc["headers"], doc["body"], None)  # RabbitMQ 4.x headers exchange, pika
    assert contract.check([unseen_key]) == [unseen_key]
    wrong_key = Received("koji.event.Tag.x", 2, "id", doc["headers"], doc["body"], None)
    with pytest.raises(AssertionError, match=r"\$\.routing_key"):
        contract.check([wrong_key])
