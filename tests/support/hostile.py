"""The hostile-input corpus: values a hub could hand the plugin's callbacks, and worse.

Each case builds fresh kwargs (some are self-referencing or 20 MB), starting from a real
recorded hub call (tests/data/hub-callbacks) and replacing one part.  Used end to end through
the plugin loaded as the hub loads it (tests/integration/test_hostile_corpus.py) and reusable by
unit tests of the encoder and routing keys.
"""

from __future__ import annotations

import copy
import datetime
import decimal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from devkit.recorded import entries
from koji_messagebus.format.messages import CALLBACK_TYPES

UTC = datetime.timezone.utc


class ReprRaises:
    """An object whose __repr__ and __str__ raise."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    __str__ = __repr__


class EqRaises(ReprRaises):
    """Also refuses comparison and hashing (as some ORM rows do)."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")

    def __hash__(self) -> int:
        raise RuntimeError("no hash")


class ExitRepr:
    """An object whose __repr__ and __str__ raise SystemExit: data, not an interpreter exit."""

    def __repr__(self) -> str:
        raise SystemExit("no repr, and exit")

    __str__ = __repr__


class GetRaises(Mapping):
    """A Mapping whose every method raises."""

    def __getitem__(self, key: Any) -> Any:
        raise RuntimeError("no getitem")

    def __iter__(self) -> Any:
        raise RuntimeError("no iter")

    def __len__(self) -> int:
        return 1

    def get(self, key: Any, default: Any = None) -> Any:
        raise RuntimeError("no get")


class DictRaises(dict):
    """A dict subclass whose items, keys, __iter__ and get raise."""

    def items(self) -> Any:
        raise RuntimeError("no items")

    keys = items  # type: ignore[assignment]
    __iter__ = items  # type: ignore[assignment]

    def get(self, key: Any, default: Any = None) -> Any:
        raise RuntimeError("no get")


@dataclass(frozen=True)
class Case:
    name: str
    cbtype: str
    make: Callable[[], dict[str, Any]]


def base(cbtype: str) -> dict[str, Any]:
    return copy.deepcopy(entries(cbtype)[0]["kwargs"])


def _tag(**changes: Any) -> Callable[[], dict[str, Any]]:
    """A postTag whose tag/build/user names (or build['extra']) are replaced."""
    def make() -> dict[str, Any]:
        kw = base("postTag")
        for where, value in changes.items():
            if where == "extra":
                kw["build"]["extra"] = value() if callable(value) else value
            else:
                kw[where]["name"] = value() if callable(value) else value
        return kw
    return make


def _self_ref() -> dict[str, Any]:
    d: dict[str, Any] = {"a": 1}
    d["self"] = d
    lst: list[Any] = [1]
    lst.append(lst)
    d["list"] = lst
    return d


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def _deep_dict(depth: int) -> Any:
    value: Any = {"leaf": 1}
    for _ in range(depth):
        value = {"d": value}
    return value


def _replace(**parts: Callable[[], Any]) -> Callable[[], dict[str, Any]]:
    """A postTag whose tag/build/user maps themselves are replaced."""
    def make() -> dict[str, Any]:
        kw = base("postTag")
        kw.update({where: value() for where, value in parts.items()})
        return kw
    return make


def _all_none(cbtype: str) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        return {key: None for key in base(cbtype)}
    return make


def _nested_none(cbtype: str) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        kw = base(cbtype)
        return {k: ({kk: None for kk in v} if isinstance(v, dict) else None) for k, v in kw.items()}
    return make


def cases() -> list[Case]:
    out: list[Case] = []
    for cbtype in CALLBACK_TYPES:
        out.append(Case(f"none-top-{cbtype}", cbtype, _all_none(cbtype)))
        out.append(Case(f"none-nested-{cbtype}", cbtype, _nested_none(cbtype)))
    out.append(Case("kwargs-empty", "postTag", dict))
    out += [
        Case("body-1MB", "postTag", _tag(extra=lambda: {"blob": "x" * (1 << 20)})),
        Case("body-20MB", "postTag", _tag(extra=lambda: {"blob": "y" * (20 << 20)})),
        Case("map-50k-keys", "postTag", _tag(extra=lambda: {f"k{i}": i for i in range(50_000)})),
        Case("list-70k-values", "postTag", _tag(extra=lambda: list(range(70_000)))),
        Case("bytes", "postTag", _tag(extra={"raw": b"\x00\xff\xfe binary", "empty": b""})),
        Case("bytes-as-name", "postTag", _tag(tag=b"f44-bytes")),
        Case("nan-inf", "postTag", _tag(extra={"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")})),
        Case("huge-ints", "postTag", _tag(extra={"big": 2 ** 200, "neg": -(2 ** 70), "u64": 2 ** 64 - 1})),
        Case("decimal-set-complex", "postTag", _tag(extra={"dec": decimal.Decimal("1.5"), "set": {1, 2},
                                                        "frozen": frozenset({"a"}), "complex": 1 + 2j})),
        Case("star-in-name", "postTag", _tag(tag="*")),
        Case("hash-in-name", "postTag", _tag(tag="#", build="#.*")),
        Case("dots-in-name", "postTag", _tag(tag="f44.updates.", build=".")),
        Case("slash-in-name", "postTag", _tag(tag="f44/updates")),
        Case("long-name-300", "postTag", _tag(tag="t" * 300)),
        Case("long-multibyte-name", "postTag", _tag(tag="é" * 200, build="名" * 100)),
        Case("empty-name", "postTag", _tag(tag="")),
        Case("nul-in-name", "postTag", _tag(tag="f44\x00x", user="ad\x00min")),
        Case("nul-in-value", "postTag", _tag(extra={"v": "a\x00b"})),
        Case("lone-surrogate-name", "postTag", _tag(tag="f44\ud800x")),
        Case("lone-surrogate-value", "postTag", _tag(extra={"v": "\udfff", "\udc80key": 1})),
        Case("self-referencing", "postTag", _tag(extra=_self_ref)),
        Case("nested-5000-lists", "postTag", _tag(extra=lambda: _deep(5000))),
        Case("nested-5000-dicts", "postTag", _tag(extra=lambda: _deep_dict(5000))),
        Case("datetime-map-key", "postTag", _tag(extra={datetime.datetime(2024, 1, 1): "x", 1: "int-key",
                                                     (1, 2): "tuple-key", None: "none-key"})),
        Case("datetime-values", "postTag", _tag(extra={"naive": datetime.datetime(2024, 1, 1, 12),
                                                    "aware": datetime.datetime(2024, 1, 1, tzinfo=UTC),
                                                    "date": datetime.date(2024, 1, 1),
                                                    "time": datetime.time(1, 2)})),
        Case("repr-raises-value", "postTag", _tag(extra={"evil": ReprRaises()})),
        Case("repr-raises-name", "postTag", _tag(tag=ReprRaises)),
        Case("eq-hash-raises-value", "postTag", _tag(extra={"evil": EqRaises()})),
        Case("name-is-int", "postTag", _tag(tag=12345)),
        Case("name-is-dict", "postTag", _tag(tag=lambda: {"nested": "dict"})),
        # issue 21: the last edges
        Case("systemexit-repr-value", "postTag", _tag(extra=lambda: {"evil": ExitRepr(), "set": {ExitRepr()}})),
        Case("systemexit-repr-name", "postTag", _tag(user=ExitRepr)),
        Case("mapping-get-raises", "postTag", _replace(tag=GetRaises)),
        Case("dict-subclass-raises", "postTag", _replace(build=lambda: DictRaises(name="bash"))),
        Case("bytearray-as-name", "postTag", _tag(tag=lambda: bytearray(b"f44-ba"), user=lambda: memoryview(b"mv"))),
        Case("undecodable-bytes-name", "postTag", _tag(tag=b"f\xff44")),
        Case("tag-is-int", "postTag", _replace(tag=lambda: 44)),
        Case("user-is-str", "postTag", _replace(user=lambda: "kojiadmin")),
    ]
    return out


def off_contract(name: str) -> bool:
    """Cases whose input is not what any Koji hub passes (a missing or null map, a name that is not
    text, a build's `extra` that is a list, maps whose methods raise, a
    map of the wrong type, bytes that are not UTF-8): the plugin still sends the message, and its type's
    schema says where it differs.  Every other case's message matches its schema."""
    return name.startswith(("none-top-", "none-nested-")) or name in {
        "kwargs-empty", "list-70k-values", "nested-5000-lists", "name-is-int", "name-is-dict",
        "mapping-get-raises", "dict-subclass-raises", "tag-is-int", "user-is-str", "undecodable-bytes-name"}


def by_name() -> dict[str, Case]:
    return {c.name: c for c in cases()}
