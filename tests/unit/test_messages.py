"""The message table, event by event, with the kwargs a real hub passed and hostile values."""

from __future__ import annotations

import datetime
import decimal
import enum
import threading
from collections.abc import Mapping

import koji.plugin
import pytest
from proton import Message

from devkit.recorded import entries
from koji_messagebus.format.messages import (
    CALLBACK_TYPES,
    MAX_KEY_BYTES,
    MISSING_TOKEN,
    format_event,
    routing_key,
    unsigned,
)
from koji_messagebus.format.wire import decode, encode

P = "koji.event"


def event(cbtype: str, kwargs: dict, prefix: str = P):
    return format_event(CALLBACK_TYPES[cbtype], kwargs, prefix)


def all_recorded():
    return [pytest.param(cbtype, entry, id=f"{cbtype}-{i}")
            for cbtype in CALLBACK_TYPES for i, entry in enumerate(entries(cbtype))]


def as_lists(value):
    """What a consumer receives for a value made of dicts, lists and tuples."""
    if isinstance(value, dict):
        return {k: as_lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_lists(v) for v in value]
    return value


@pytest.mark.parametrize("cbtype,entry", all_recorded())
def test_every_recorded_event_encodes_and_round_trips(cbtype, entry):
    """Every kwargs a real hub passed makes a message whose body is those kwargs, natively typed."""
    ev = event(cbtype, entry["converted"])
    out = encode(ev)
    got = decode(out.payload)
    assert got["subject"] == ev.routing_key == out.routing_key
    assert got["headers"] == ev.headers
    assert got["headers"]["type"] == CALLBACK_TYPES[cbtype]
    assert set(got["body"]) == set(entry["kwargs_keys"])
    assert got["durable"] is True and got["id"] == out.msg_id and got["creation_time"] > 0
    assert not ev.conversions.lossy
    assert got["body"] == as_lists(entry["converted"])
    assert all(isinstance(v, (str, int, float, bool, type(None))) for v in got["headers"].values())
    # datetimes arrive as koji's convert_datetime strings
    for key in ("info", "build", "repo"):
        if isinstance(entry["kwargs"].get(key), dict):
            for k, v in entry["kwargs"][key].items():
                if isinstance(v, datetime.datetime):
                    assert got["body"][key][k] == str(v)


def test_plain_kwargs_with_datetimes_are_converted_too():
    """Without @convert_datetime the values still encode (datetimes become koji-style strings)."""
    entry = entries("postBuildStateChange")[0]
    got = decode(encode(event("postBuildStateChange", entry["kwargs"])).payload)
    created = entry["kwargs"]["info"]["creation_time"]
    assert got["body"]["info"]["creation_time"] == koji.plugin.encode_datetime_recurse(created)


def test_package_list_change():
    kw = entries("postPackageListChange")[0]["converted"]
    ev = event("postPackageListChange", kw)
    assert ev.routing_key == f"{P}.PackageListChange.{kw['tag']['name'].replace('.', '_')}.{kw['package']['name']}"
    assert ev.headers == {"type": "PackageListChange", "tag": kw["tag"]["name"], "package": kw["package"]["name"]}
    assert ev.body["action"] == kw["action"] and ev.body["owner"] == kw["owner"]


def test_task_state_change_types_are_kept():
    by_attr = {}
    for e in entries("postTaskStateChange"):
        by_attr.setdefault(e["converted"]["attribute"], e["converted"])
    state = by_attr["state"]
    ev = event("postTaskStateChange", state)
    assert ev.routing_key == f"{P}.TaskStateChange.{state['info']['method']}.state"
    assert ev.headers == {"type": "TaskStateChange", "method": state["info"]["method"], "attribute": "state",
                          "old": state["old"], "new": state["new"]}
    prio = event("postTaskStateChange", by_attr["priority"])
    assert type(prio.headers["new"]) is int and type(prio.body["new"]) is int
    weight = event("postTaskStateChange", by_attr["weight"])
    assert type(weight.headers["new"]) is float


def test_task_creation_has_none_old_and_string_request():
    created = next(e["converted"] for e in entries("postTaskStateChange") if e["converted"]["old"] is None)
    ev = event("postTaskStateChange", created)
    assert ev.headers["old"] is None and ev.body["old"] is None
    assert isinstance(ev.body["info"]["request"], str)


def test_task_request_tuple_becomes_list():
    kw = next(e["converted"] for e in entries("postTaskStateChange")
              if isinstance(e["converted"]["info"].get("request"), tuple))
    ev = event("postTaskStateChange", kw)
    assert isinstance(ev.body["info"]["request"], list)
    assert ev.body["info"]["request"] == as_lists(kw["info"]["request"])
    assert not ev.conversions.lossy and not ev.conversions.lossless  # a tuple -> list is not worth a log line


def test_build_state_change():
    kw = next(e["converted"] for e in entries("postBuildStateChange") if e["converted"]["attribute"] == "state")
    ev = event("postBuildStateChange", kw)
    info = kw["info"]
    assert ev.routing_key == f"{P}.BuildStateChange.state.{info['name']}"
    assert ev.headers == {"type": "BuildStateChange", "name": info["name"], "version": info["version"],
                          "release": info["release"], "attribute": "state", "old": kw["old"], "new": kw["new"]}
    assert type(ev.headers["new"]) is int


@pytest.mark.parametrize("import_type", ["build", "rpm", "archive", "image", "cg"])
def test_import_every_type(import_type):
    kw = next(e["converted"] for e in entries("postImport") if e["converted"]["type"] == import_type)
    ev = event("postImport", kw)
    assert ev.routing_key == f"{P}.Import.{import_type}"
    assert ev.headers == {"type": "Import", "importType": import_type}
    assert set(ev.body) == set(kw)


@pytest.mark.parametrize("cbtype", ["postTag", "postUntag"])
def test_tag_and_untag(cbtype):
    kw = entries(cbtype)[0]["converted"]
    ev = event(cbtype, kw)
    kind = CALLBACK_TYPES[cbtype]
    tag, build, user = kw["tag"]["name"], kw["build"], kw["user"]["name"]
    assert ev.routing_key == f"{P}.{kind}.{tag.replace('.', '_')}.{build['name']}.{user}"
    assert ev.headers == {"type": kind, "tag": tag, "name": build["name"], "version": build["version"],
                          "release": build["release"], "user": user}
    if kind == "Untag":
        assert "strict" in ev.body


def test_repo_init_regular_and_dist():
    for kw in (e["converted"] for e in entries("postRepoInit")):
        ev = event("postRepoInit", kw)
        assert ev.routing_key == f"{P}.RepoInit.{kw['tag']['name']}"
        assert ev.headers == {"type": "RepoInit", "tag": kw["tag"]["name"]}
        assert set(ev.body) == set(kw)


def test_repo_init_legacy_keys():
    """Koji 1.34 passes with_src/with_debuginfo; the body carries whatever the hub passed."""
    kw = {"tag": {"id": 1, "name": "f44-build"}, "with_src": False, "with_debuginfo": True, "event": 42, "repo_id": 7}
    ev = event("postRepoInit", kw)
    assert ev.body == kw and ev.routing_key == f"{P}.RepoInit.f44-build"


def test_repo_done():
    kw = entries("postRepoDone")[0]["converted"]
    ev = event("postRepoDone", kw)
    assert ev.routing_key == f"{P}.RepoDone.{kw['repo']['tag_name']}"
    assert ev.headers == {"type": "RepoDone", "tag": kw["repo"]["tag_name"]}
    assert ev.body["data"] == as_lists(kw["data"]) and ev.body["expire"] == kw["expire"]


def test_rpm_sign_and_build_promote():
    kw = entries("postRPMSign")[4]["converted"]  # a signed RPM (0-3: unsigned imports)
    assert kw["sigkey"]
    ev = event("postRPMSign", kw)
    assert ev.routing_key == f"{P}.RPMSign.{kw['sigkey']}.{kw['build']['name']}"
    assert ev.headers["type"] == "RPMSign" and ev.headers["sigkey"] == kw["sigkey"]
    assert ev.headers["arch"] == kw["rpm"]["arch"] and ev.headers["rpm"] == kw["rpm"]["name"]
    kw = entries("postBuildPromote")[0]["converted"]
    ev = event("postBuildPromote", kw)
    assert ev.routing_key == f"{P}.BuildPromote.{kw['build']['name']}.{kw['user']['name']}"
    assert ev.headers == {"type": "BuildPromote", "name": kw["build"]["name"], "version": kw["build"]["version"],
                          "release": kw["build"]["release"], "draft_release": kw["draft_release"],
                          "target_release": kw["target_release"], "user": kw["user"]["name"]}


# ---- hostile values -------------------------------------------------------------------------------
def tag_kwargs(tag="f44", pkg="bash", user="kojiadmin", **extra):
    return {"tag": {"name": tag}, "build": {"name": pkg, "version": "1.0", "release": "1.fc44"},
            "user": {"name": user}, "force": False, **extra}


def test_dots_in_tokens_keep_token_count():
    ev = event("postTag", tag_kwargs(tag="f44.updates.candidate", pkg="python3.12", user="a.b"))
    assert ev.routing_key == "koji.event.Tag.f44_updates_candidate.python3_12.a_b"
    assert ev.routing_key.count(".") == 5
    assert ev.headers["tag"] == "f44.updates.candidate"  # headers keep the real names


def test_prefix_with_dots_is_kept_and_empty_prefix_drops_it():
    assert event("postTag", tag_kwargs(), prefix="org.fedoraproject.koji").routing_key.startswith(
        "org.fedoraproject.koji.Tag.")
    assert event("postTag", tag_kwargs(), prefix="").routing_key == "Tag.f44.bash.kojiadmin"


def test_long_and_non_ascii_keys_are_cut_on_a_character_boundary():
    name = "ü" * 300
    ev = event("postTag", tag_kwargs(tag=name))
    raw = ev.routing_key.encode("utf-8")
    assert len(raw) <= MAX_KEY_BYTES and len(raw) >= MAX_KEY_BYTES - 1
    raw.decode("utf-8")  # no broken character
    assert ev.headers["tag"] == name and ev.body["tag"]["name"] == name
    decode(encode(ev).payload)


def test_routing_key_exact_limit():
    key = routing_key("p", "Tag", ["x" * (MAX_KEY_BYTES - len("p.Tag."))])
    assert len(key.encode()) == MAX_KEY_BYTES
    assert len(routing_key("p", "Tag", ["x" * 400]).encode()) == MAX_KEY_BYTES


def test_none_and_missing_values():
    ev = event("postTag", {"tag": None, "build": {}, "user": {"name": None}})
    assert ev.routing_key == "koji.event.Tag.~none~.~none~.~none~"  # never the literal None
    assert ev.headers == {"type": "Tag", "tag": None, "name": None, "version": None, "release": None, "user": None}
    decode(encode(ev).payload)


class Color(enum.Enum):
    RED = 1


class MyStr(str):
    pass


class MyInt(int):
    pass


class MyDict(dict):
    pass


def test_values_proton_cannot_take_are_converted_and_reported():
    weird = {
        "huge": 2**64 + 5, "neg_huge": -(2**70), "tuple": (1, (2, 3)), "set": {3, 1, 2},
        "frozen": frozenset({"b", "a"}),
        "decimal": decimal.Decimal("1.10"), "dt": datetime.datetime(2026, 1, 2, 3, 4, 5), "enum": Color.RED,
        "mystr": MyStr("s"), "myint": MyInt(4), "mydict": MyDict(a=1), "nested": {"a": [{"b": {1, 2}}]},
        "intkeys": {1: "one"}, "obj": object(), "bytes": b"\x00\x01", "bytearray": bytearray(b"ab"),
        "max": 2**63 - 1, "min": -(2**63),
    }
    ev = event("postTag", tag_kwargs(**weird))
    body = decode(encode(ev).payload)["body"]
    assert body["huge"] == str(2**64 + 5) and body["neg_huge"] == str(-(2**70))
    assert body["max"] == 2**63 - 1 and body["min"] == -(2**63)
    assert body["tuple"] == [1, [2, 3]] and body["set"] == [1, 2, 3] and body["frozen"] == ["a", "b"]
    assert body["decimal"] == "1.10" and body["dt"] == "2026-01-02 03:04:05"
    assert body["enum"] == 1 and body["mystr"] == "s" and body["myint"] == 4 and body["mydict"] == {"a": 1}
    assert body["nested"] == {"a": [{"b": [1, 2]}]} and body["intkeys"] == {"1": "one"}
    assert body["obj"].startswith("<object object") and body["bytes"] == b"\x00\x01" and body["bytearray"] == b"ab"
    assert any(c.startswith("obj:") for c in ev.conversions.lossy)
    reported = " ".join(ev.conversions.lossless)
    for what in ("huge", "set", "decimal", "enum", "intkeys"):
        assert what in reported


def test_headers_only_carry_simple_values():
    kw = {"attribute": "state", "old": (1, 2), "new": {"a": 1}, "info": {"method": "build"}}
    ev = event("postTaskStateChange", kw)
    assert ev.headers["old"] == "[1, 2]" and ev.headers["new"] == "{'a': 1}"
    msg = Message()
    msg.decode(encode(ev).payload)
    assert msg.properties["old"] == "[1, 2]"


def test_header_huge_int_becomes_string():
    ev = event("postTaskStateChange", {"attribute": "weight", "old": 2**80, "new": 1, "info": {"method": "x"}})
    assert ev.headers["old"] == str(2**80)
    decode(encode(ev).payload)


def test_every_callback_type_is_a_koji_callback():
    assert set(CALLBACK_TYPES) <= set(koji.plugin.callbacks)


# ---- routing keys: constant token count, never the literal None ---------------------------------
def test_a_long_name_is_shortened_and_no_token_is_dropped():
    """Cutting the whole key at 255 bytes turned Tag.<300 chars>.pkg.user into 4 tokens."""
    ev = event("postTag", tag_kwargs(tag="t" * 300, pkg="bash", user="kojiadmin"))
    tokens = ev.routing_key.split(".")
    assert len(tokens) == 6 and tokens[4:] == ["bash", "kojiadmin"]
    assert len(ev.routing_key.encode()) == MAX_KEY_BYTES
    assert tokens[3] == "t" * (MAX_KEY_BYTES - len("koji.event.Tag..bash.kojiadmin"))


def test_the_longest_tokens_are_shortened_first_and_evenly():
    key = routing_key("koji.event", "Tag", ["a" * 200, "b" * 150, "user"])
    a, b, user = key.split(".")[3:]
    assert len(key.encode()) == MAX_KEY_BYTES and user == "user"
    assert len(a) == len(b) == (MAX_KEY_BYTES - len("koji.event.Tag...user")) // 2
    key = routing_key("koji.event", "Tag", ["a" * 300, "b" * 20, "user"])
    assert key.split(".")[3:] == ["a" * (MAX_KEY_BYTES - len("koji.event.Tag...user") - 20), "b" * 20, "user"]


def test_shortening_keeps_utf8_characters_whole():
    key = routing_key("koji.event", "Tag", ["ü" * 200, "日" * 100, "x"])
    raw = key.encode("utf-8")
    assert MAX_KEY_BYTES - 3 <= len(raw) <= MAX_KEY_BYTES and raw.decode("utf-8").count(".") == 5


def test_tokens_are_valid_utf8_and_never_the_literal_none():
    key = routing_key("p", "Tag", [None, "a\udcff", 5])
    assert key == "p.Tag.~none~.a\\udcff.5"
    key.encode("utf-8")


# ---- the last edges: NUL, bytes names, wrong types, hostile maps, BaseException (issue 21) ------
def test_nul_in_names_is_escaped_in_key_and_headers_kept_in_body_and_noted():
    """Consumers that treat keys and headers as C strings would see 'f44' for 'f44\\0x'."""
    ev = event("postTag", tag_kwargs(tag="f44\x00x", user="ad\x00min"))
    assert ev.routing_key == "koji.event.Tag.f44\\x00x.bash.ad\\x00min"
    assert ev.headers["tag"] == "f44\\x00x" and ev.headers["user"] == "ad\\x00min"
    assert ev.body["tag"]["name"] == "f44\x00x"
    assert decode(encode(ev).payload)["body"]["tag"]["name"] == "f44\x00x"  # the body is exact
    assert ev.conversions.lossy == ["headers.tag: NUL -> \\x00 escape", "headers.user: NUL -> \\x00 escape"]


@pytest.mark.parametrize("name", [b"f44-bytes", bytearray(b"f44-bytes"), memoryview(b"f44-bytes")],
                         ids=["bytes", "bytearray", "memoryview"])
def test_a_name_given_as_bytes_is_decoded_not_its_repr(name):
    ev = event("postTag", tag_kwargs(tag=name))
    assert ev.routing_key == "koji.event.Tag.f44-bytes.bash.kojiadmin" and ev.headers["tag"] == "f44-bytes"
    assert ev.conversions.lossy == [f"headers.tag: {type(name).__name__} -> str (decoded as UTF-8)"]


def test_undecodable_bytes_in_a_name_are_escaped():
    ev = event("postTag", tag_kwargs(tag=b"f\xff.44"))
    assert ev.headers["tag"] == "f\\xff.44" and ev.routing_key.split(".")[3] == "f\\xff_44"


@pytest.mark.parametrize("where,value", [("tag", 5), ("user", "kojiadmin"), ("build", ["bash"])])
def test_a_map_of_the_wrong_type_is_noted_not_silently_none(where, value):
    kw = tag_kwargs()
    kw[where] = value
    ev = event("postTag", kw)
    assert "~none~" in ev.routing_key.split(".")
    noted = [c for c in ev.conversions.lossy if c.startswith(f"{where}:")]
    assert noted == [f"{where}: {type(value).__name__}, not a map -> its keys read as None"]  # once


class GetRaises(Mapping):
    """A Mapping whose every method raises."""

    def __getitem__(self, key):
        raise RuntimeError("no getitem")

    def __iter__(self):
        raise RuntimeError("no iter")

    def __len__(self):
        return 1

    def get(self, key, default=None):
        raise RuntimeError("no get")


class DictRaises(dict):
    """A dict subclass whose items, keys, __iter__ and get raise."""

    def items(self):
        raise RuntimeError("no items")

    keys = items
    __iter__ = items

    def get(self, key, default=None):
        raise RuntimeError("no get")


@pytest.mark.parametrize("make", [GetRaises, lambda: DictRaises(name="f44")], ids=["mapping-get", "dict-subclass"])
def test_a_map_whose_methods_raise_still_makes_the_message(make):
    """Such a message was lost with 'could not build the postTag message' and no key or reason."""
    kw = tag_kwargs()
    kw["tag"] = make()
    ev = event("postTag", kw)
    assert ev.routing_key == "koji.event.Tag.~none~.bash.kojiadmin" and ev.headers["tag"] is None
    name = type(kw["tag"]).__name__
    assert f"tag: {name}.get('name') raised RuntimeError -> its keys read as None" in ev.conversions.lossy
    body = decode(encode(format_event("Tag", kw, P, convert=False)).payload)["body"]
    assert f"{name} object" in body["tag"] and body["build"]["name"] == "bash"


class ExitInRepr:
    """A value whose __repr__ and __str__ raise SystemExit (or another BaseException)."""

    def __init__(self, exc=SystemExit):
        self.exc = exc

    def __repr__(self):
        raise self.exc(3)

    __str__ = __repr__


@pytest.mark.parametrize("exc", [SystemExit, GeneratorExit, KeyboardInterrupt])
def test_a_base_exception_from_a_value_is_contained(exc):
    """SystemExit from a value's __repr__ passed `except Exception` and rolled back the hub's request.
    In a thread other than the main one (as the hub's requests run), even KeyboardInterrupt is data."""
    results: list = []

    def build():
        try:
            kw = tag_kwargs(evil=ExitInRepr(exc), evil_set={ExitInRepr(exc)})
            kw["user"]["name"] = ExitInRepr(exc)
            ev = format_event("Tag", kw, P, convert=False)
            results.append((ev, decode(encode(ev).payload)["body"]))
        except BaseException as caught:  # noqa: BLE001 - the assertion reports it
            results.append(caught)

    worker = threading.Thread(target=build)
    worker.start()
    worker.join(30)
    assert len(results) == 1 and isinstance(results[0], tuple), results
    ev, body = results[0]
    assert ev.routing_key.startswith("koji.event.Tag.f44.bash.<ExitInRepr object: repr() raised")
    assert body["evil"] == f"<ExitInRepr object: repr() raised {exc.__name__}>"
    assert any(c.startswith("evil:") for c in ev.conversions.lossy)


def test_a_keyboard_interrupt_in_the_main_thread_still_stops_the_program():
    """A real Ctrl-C (only the main thread receives signals) is not data: `koji-messagebus preview`
    must stop on it."""
    with pytest.raises(KeyboardInterrupt):
        format_event("Tag", tag_kwargs(evil=ExitInRepr(KeyboardInterrupt)), P)


def test_a_build_that_cannot_be_read_is_noted_once_and_asked_once():
    calls: list[str] = []

    class Counting(GetRaises):
        def get(self, key, default=None):
            calls.append(key)
            raise RuntimeError("no get")

    kw = tag_kwargs()
    kw["build"] = Counting()
    ev = event("postTag", kw)
    assert calls == ["name"]  # version and release are not asked of it again
    assert [c for c in ev.conversions.lossy if "get(" in c] == [
        "build: Counting.get('name') raised RuntimeError -> its keys read as None"]
    assert ev.headers["name"] is None and ev.headers["version"] is None


@pytest.mark.parametrize("sigkey", ["", None, "missing"])
def test_an_unsigned_rpm_sign_gets_the_missing_token_never_an_empty_one(sigkey):
    """Sent only with [topic] unsigned_rpm_sign (runtime.collect); then `~none~`, not `RPMSign..name`."""
    kw = dict(entries("postRPMSign")[0]["converted"])
    if sigkey == "missing":
        del kw["sigkey"]
    else:
        kw["sigkey"] = sigkey
    ev = event("postRPMSign", kw)
    assert ev.routing_key == f"{P}.RPMSign.{MISSING_TOKEN}.{kw['build']['name']}"
    assert unsigned("RPMSign", kw) and not unsigned("RPMSign", {**kw, "sigkey": "f67cf1a3"})
    assert not unsigned("Tag", kw)
